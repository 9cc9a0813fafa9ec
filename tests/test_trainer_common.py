"""The training-recipe pieces shared by our trainers and their nnUNetTrainer twins (trainers/common.py)."""
import numpy as np
import pytest

from nnunetv2_oneshot.trainers.common import AtomicCheckpoint, class_prior_bias


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
