"""The plugin's own commands: doctor, discovery/uninstall facts, and one-line errors before compute."""
import json
import os
import subprocess
import sys

import pytest

from toy_data import make_toy_dataset

BIN = os.path.dirname(sys.executable)


def _env(tmp_path, **extra):
    env = {"PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(tmp_path)),
           "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res")}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _cli(args, env):
    return subprocess.run([f"{BIN}/nnunetv2-oneshot", *args], env=env, capture_output=True, text=True)


def test_doctor_ok_and_finds_everything_through_nnunet(tmp_path):
    r = _cli(["doctor"], _env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("OneShotRegAugTrainer", "OneShotRegAugTrainer_tiny", "OneShotCPUPlanner"):
        assert any(name in line and line.startswith("[ok") for line in r.stdout.splitlines()), r.stdout
    assert "nnunetv2: 2.8" in r.stdout and "torchvision" in r.stdout


def test_doctor_fails_with_fix_when_env_missing(tmp_path):
    r = _cli(["doctor"], _env(tmp_path, nnUNet_raw=None))
    assert r.returncode == 1
    assert "fix: export nnUNet_raw=" in r.stdout


def test_uninstall_would_remove_discovery_shims():
    # pip lists what it would remove and stops at the prompt when answered "n": nothing is uninstalled
    r = subprocess.run([sys.executable, "-m", "pip", "uninstall", "nnunetv2-oneshot"], input="n\n",
                       capture_output=True, text=True)
    out = r.stdout
    assert os.path.join("nnunetv2", "training", "nnUNetTrainer", "nnUNetTrainer_oneshot.py") in out
    assert os.path.join("nnunetv2", "experiment_planning", "oneshot_planners.py") in out
    # and nothing of nnU-Net's own (its package __init__ stays with nnunetv2)
    assert os.path.join("nnunetv2", "__init__.py") not in out


def test_validate_cli_one_line_error_and_ok(tmp_path):
    folder = make_toy_dataset(str(tmp_path / "raw"), dataset_id=902)
    env = _env(tmp_path)
    r = _cli(["validate", "902"], env)
    assert r.returncode == 0 and "1 labelled case(s)" in r.stdout and "4 unlabelled" in r.stdout
    os.remove(os.path.join(folder, "imagesUnlabelled", "toy_u00_0000.nii.gz"))
    for f in os.listdir(os.path.join(folder, "imagesUnlabelled")):
        os.remove(os.path.join(folder, "imagesUnlabelled", f))
    r = _cli(["validate", "902"], env)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "imagesUnlabelled" in err


def test_plan_refuses_bad_dataset_before_any_compute(tmp_path):
    folder = make_toy_dataset(str(tmp_path / "raw"), dataset_id=903)
    dj = json.load(open(os.path.join(folder, "dataset.json")))
    dj["labels"] = {"background": 0, "outer": 1}  # label 2 present in labelsTr but not declared
    json.dump(dj, open(os.path.join(folder, "dataset.json"), "w"))
    r = _cli(["plan", "903"], _env(tmp_path))
    assert r.returncode != 0
    assert "\n" not in r.stderr.strip() and "2" in r.stderr
    assert not (tmp_path / "pre").exists()  # nothing was computed or written


def test_make_dataset_refuses_foreign_folder(tmp_path):
    target = tmp_path / "raw" / "Dataset990_OneShotBrain"
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("user data")
    r = _cli(["make-dataset", "brain"], _env(tmp_path))
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and "\n" not in r.stderr.strip()
    assert (target / "mine.txt").read_text() == "user data"


def test_trainers_folder_loads_as_an_nnUNet_extTrainer_path():
    # exactly the call nnU-Net makes for each folder in nnUNet_extTrainer (modules imported by bare name)
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    import nnunetv2_oneshot.trainers as t
    folder = t.__path__[0]
    from nnunetv2_oneshot.benchmark.methods import METHODS
    every_benchmarked = {m.trainer for m in METHODS.values() if m.trainer}
    for name in sorted(every_benchmarked | {"OneShotRegAugTrainer_tiny", "OneShotDistillTrainer_noHint_cpu"}):
        cls = recursive_find_python_class(folder, name, None, base_folder=folder, verbose=False,
                                          cleanup_imports_from_base_folder=True)
        assert cls is not None and cls.__name__ == name


@pytest.mark.parametrize("raw", [None, ""])  # unset, or set but empty
def test_validate_without_nnUNet_raw_says_so_in_one_line(tmp_path, raw):
    r = _cli(["validate", "901"], _env(tmp_path, nnUNet_raw=raw))
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "nnUNet_raw is not set" in err


@pytest.mark.parametrize("beside, on_path, expected", [(True, True, "beside"), (False, True, "on_path"),
                                                        (False, False, "beside")])
def test_console_scripts_found_beside_the_interpreter_else_on_path(tmp_path, monkeypatch, beside, on_path, expected):
    """pip install --user puts the scripts in ~/.local/bin, not beside /usr/bin/python3: the demo and the
    benchmark must still find nnUNetv2_train there."""
    from nnunetv2_oneshot.process import bin_path
    folders = {"beside": tmp_path / "env" / "bin", "on_path": tmp_path / "user" / "bin"}
    for key, present in (("beside", beside), ("on_path", on_path)):
        folders[key].mkdir(parents=True)
        if present:
            script = folders[key] / "nnUNetv2_train"
            script.write_text("#!/bin/sh\n")
            script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(folders["beside"] / "python3"))
    monkeypatch.setenv("PATH", str(folders["on_path"]))
    assert bin_path("nnUNetv2_train") == str(folders[expected] / "nnUNetv2_train")


def test_every_flag_has_help():
    import argparse
    from nnunetv2_oneshot.cli.main import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in sub.choices.items() for a in sp._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []


def test_propagate_picks_the_device_a_user_expects(monkeypatch):
    import torch
    from nnunetv2_oneshot.propagate import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == "cpu" and pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="torch sees no CUDA device here: pass -device cpu"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(None) == "cuda"
