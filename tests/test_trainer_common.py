"""The training-recipe pieces shared by our trainers and their nnUNetTrainer twins (trainers/common.py)."""
import numpy as np
import pytest

from nnunetv2_oneshot.trainers.common import class_prior_bias


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
