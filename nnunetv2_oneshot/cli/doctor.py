"""``nnunetv2-oneshot doctor``: is everything our commands need in place? Each problem comes with its fix."""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys


OK, WARN, FAIL = "ok  ", "warn", "FAIL"


def _line(status: str, what: str, detail: str = "", fix: str = ""):
    print(f"[{status}] {what}" + (f": {detail}" if detail else ""))
    if fix:
        print(f"       fix: {fix}")


def _torchvision_state() -> tuple:
    # in a subprocess: a broken torchvision can leave torch's operator registry half-initialised
    r = subprocess.run([sys.executable, "-c", "import torchvision; print(torchvision.__version__)"],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return "ok", r.stdout.strip()
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    return ("missing" if "No module named 'torchvision'" in last else "broken"), last


def run_doctor() -> int:
    problems = 0
    from packaging.version import Version

    try:
        import nnunetv2
        version = md.version("nnunetv2")
        good = Version("2.8.1") <= Version(version) < Version("2.9")
        _line(OK if good else FAIL, "nnunetv2", f"{version} at {os.path.dirname(nnunetv2.__file__)}",
              "" if good else "pip install 'nnunetv2>=2.8.1,<2.9' -c constraints.txt")
        problems += not good
    except ImportError as e:
        _line(FAIL, "nnunetv2", str(e), "pip install 'nnunetv2>=2.8.1,<2.9' -c constraints.txt")
        return 1
    import torch
    _line(OK, "torch", f"{torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    _line(OK, "nnunetv2-oneshot", f"{md.version('nnunetv2-oneshot')} at {os.path.dirname(os.path.dirname(__file__))}")

    tv, detail = _torchvision_state()
    if tv == "ok":
        _line(OK, "torchvision", detail)
    else:
        _line(WARN, f"torchvision {tv}", detail + " -> nnU-Net's primus/ trainers (and any trainer lookup that "
              "reaches them, e.g. nnUNetTrainer_5epochs or nnUNet_extTrainer) cannot load. Our trainers and "
              "nnUNetTrainer are found before primus/, so our commands are not affected.",
              "install the torchvision build that matches your torch (there is no CPU build on this registry)")

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        v = os.environ.get(var)
        if v:
            _line(OK, var, v + ("" if os.path.isdir(v) else " (does not exist yet; created on first use)"))
        else:
            problems += 1
            _line(FAIL, var, "not set", f"export {var}=/path/to/{var}")
    for var in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "nnUNet_extTrainer"):
        _line(OK, var, os.environ.get(var, "(not set)"))

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2_oneshot.trainers import __all__ as trainers
    for name in trainers:
        try:
            cls = recursive_find_trainer_class_by_name(name)
            _line(OK, f"trainer {name}", f"found by nnU-Net's lookup in {cls.__module__}")
        except Exception as e:  # noqa: BLE001 - report whatever the lookup raised
            problems += 1
            _line(FAIL, f"trainer {name}", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                  "reinstall without -e: pip install . -c constraints.txt (the discovery shim is a file of the "
                  "wheel), or export nnUNet_extTrainer=" + os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                                                      "trainers"))

    import nnunetv2 as _n
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2_oneshot.planners import __all__ as planners
    for name in planners:
        cls = recursive_find_python_class(os.path.join(_n.__path__[0], "experiment_planning"), name,
                                          current_module="nnunetv2.experiment_planning")
        if cls is None:
            problems += 1
            _line(FAIL, f"planner {name}", "not found by -pl", "reinstall without -e: pip install . -c constraints.txt")
        else:
            _line(OK, f"planner {name}", f"found by -pl in {cls.__module__}")

    # optional extra [sam]: a WARN, not a FAIL, when missing (nothing else in the plugin needs it)
    from nnunetv2_oneshot.sam.litemedsam import LiteMedSAMUnavailable, litemedsam_weights_path, \
        load_litemedsam_encoder
    try:
        encoder = load_litemedsam_encoder("cpu")
        _line(OK, "LiteMedSAM image encoder", f"loaded, {sum(p.numel() for p in encoder.parameters()):,} "
              f"parameters from {litemedsam_weights_path()}")
    except LiteMedSAMUnavailable as e:
        _line(WARN, "LiteMedSAM image encoder (optional)", e.problem, e.fix)

    print("\nAll good." if problems == 0 else f"\n{problems} problem(s): see the fixes above.")
    return 0 if problems == 0 else 1
