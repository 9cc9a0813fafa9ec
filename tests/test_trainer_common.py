"""The training-recipe pieces shared by our trainers and their nnUNetTrainer twins (trainers/common.py)."""
import numpy as np
import pytest

from nnunetv2_oneshot.trainers.common import AtomicCheckpoint, class_prior_bias
from conftest import BIN


@pytest.mark.parametrize("counts", [[900, 80, 20], [5, 5, 5, 5], [1000, 0, 3]])
def test_softmax_of_the_bias_is_the_label_frequency(counts):
    b = class_prior_bias(counts)
    p = np.exp(b) / np.exp(b).sum()
    smoothed = (np.asarray(counts) + 1) / (np.sum(counts) + len(counts))
    np.testing.assert_allclose(p, smoothed, rtol=1e-9)
    assert np.all(np.isfinite(b))  # an absent label gets a finite (very negative) bias


def test_region_heads_get_the_logit_of_the_region_frequency():
    counts = [700, 200, 100]  # regions: (1, 2) = whole, (2,) = core
    b = class_prior_bias(counts, regions=[(1, 2), (2,)])
    sig = 1 / (1 + np.exp(-b))
    np.testing.assert_allclose(sig, [302 / 1003, 101 / 1003], rtol=1e-9)


class _WritesInPlace:
    """nnU-Net's save_checkpoint: writes the file in place; ``crash_after`` bytes makes it die half-way."""
    crash_after = None

    def save_checkpoint(self, filename):
        payload = b"new checkpoint " * 100
        with open(filename, "wb") as f:
            f.write(payload[:self.crash_after])
        if self.crash_after is not None:
            raise KeyboardInterrupt  # SIGINT, OOM kill, power cut...


class _Atomic(AtomicCheckpoint, _WritesInPlace):
    def _complete_checkpoint(self, path):
        with open(path, "ab") as f:
            f.write(b"+extra keys")


@pytest.mark.parametrize("crash_after", [None, 0, 700])
def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, crash_after):
    ckpt = tmp_path / "checkpoint_latest.pth"
    ckpt.write_bytes(b"previous checkpoint")
    t = _Atomic()
    t.crash_after = crash_after
    if crash_after is None:
        t.save_checkpoint(str(ckpt))
        assert ckpt.read_bytes() == b"new checkpoint " * 100 + b"+extra keys"
        assert not (tmp_path / "checkpoint_latest.pth.part").exists()
    else:
        with pytest.raises(KeyboardInterrupt):
            t.save_checkpoint(str(ckpt))
        assert ckpt.read_bytes() == b"previous checkpoint"


@pytest.mark.parametrize("epochs_done, kept", [(19, False), (20, True), (40, True)])
def test_snapshots_keep_the_latest_checkpoint_of_every_nth_epoch(tmp_path, epochs_done, kept):
    t = _Atomic()
    t.crash_after, t.snapshot_every, t.current_epoch = None, 20, epochs_done - 1  # saved before it is counted
    t.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    snap = tmp_path / f"checkpoint_epoch{epochs_done}.pth"
    assert snap.is_file() == kept
    if kept:
        assert snap.read_bytes() == (tmp_path / "checkpoint_latest.pth").read_bytes()
    t.current_epoch = 39  # a best or final checkpoint is never a snapshot
    t.save_checkpoint(str(tmp_path / "checkpoint_best.pth"))
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch*")) == ([snap.name] if kept else [])


def test_one_shot_trainers_stop_in_one_line_under_ddp(toy_planned):
    """``nnUNetv2_train -num_gpus N`` builds each rank's trainer inside a process group: ours stop there, before
    any compute, instead of training one registration net and teacher per rank (gloo, one CPU rank)."""
    import subprocess
    root, env, _ = toy_planned
    code = """
import os, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29533')
dist.init_process_group('gloo', rank=0, world_size=1)
from nnunetv2.run.run_training import get_trainer_from_args
for tr in ('nnUNetTrainer_oneshotTiny', 'OneShotDistillTrainer_tiny', 'RRLMedSAMTrainer_tiny'):
    try:
        get_trainer_from_args('901', '3d_fullres', 'all', tr, device=torch.device('cpu'))
        print('BUILT', tr)
    except SystemExit as e:
        print('STOPPED', tr, e)
"""
    r = subprocess.run([f"{BIN}/python", "-c", code], env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BUILT nnUNetTrainer_oneshotTiny" in r.stdout  # the plain twin is nnU-Net's own DDP path
    for tr in ("OneShotDistillTrainer_tiny", "RRLMedSAMTrainer_tiny"):
        assert f"STOPPED {tr} error: {tr} does not run under several GPUs (nnUNetv2_train -num_gpus N) yet: " \
               f"train with -num_gpus 1" in r.stdout
