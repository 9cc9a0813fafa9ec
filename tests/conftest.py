import os
import signal
import subprocess
import sys
import time

import pytest
import torch

# tests import helpers (toy_data) from this folder
sys.path.insert(0, os.path.dirname(__file__))

from toy_data import make_toy_dataset  # noqa: E402

BIN = os.path.dirname(sys.executable)

# CPU always; CUDA too where torch sees a GPU (CI has none: the CUDA cases run on a GPU machine,
# benchmarks/cuda_check.sh), so the nnU-Net-free modules are checked on the device users train on
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def run_cmd(cmd, env, cwd):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="session")
def toy_planned(tmp_path_factory):
    """A tiny one-shot dataset, planned and preprocessed with the STOCK nnU-Net command, and an environment
    with exactly the three nnU-Net folders exported (plus PATH/HOME so that a shell works at all), and the
    worker counts that README asks for on 2-core machines: unset, nnU-Net's final validation and fingerprinting
    spawn 8 workers that each import nnU-Net again (~70 s a validation of one toy case instead of ~15)."""
    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(str(root / "raw"), dataset_id=901)
    env = {"PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(root)),
           "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "res"), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1"}
    raw_before = snapshot(root / "raw")
    run_cmd([f"{BIN}/nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "3d_fullres", "-np", "1"], env, root)
    return root, env, raw_before


def snapshot(folder):
    """Every path under ``folder`` with its size and mtime: equal snapshots = nothing added, removed or changed."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def train_until_first_checkpoint_then_kill(cmd, env, cwd, model_folder, log_file, timeout_s=600, grace_s=3.0):
    """Starts ``cmd`` (nnUNetv2_train, or a command that runs it), waits for its first checkpoint_latest.pth,
    lets it run ``grace_s`` seconds into the next epoch, then SIGKILLs the whole process group (as a crash
    would). Returns the log."""
    with open(log_file, "w") as log:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while not (model_folder / "checkpoint_latest.pth").is_file():
            assert p.poll() is None, open(log_file).read()[-3000:]
            assert time.time() < deadline, f"no checkpoint_latest within {timeout_s} s"
            time.sleep(0.5)
        time.sleep(grace_s)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return open(log_file).read()
