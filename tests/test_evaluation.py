"""HD95 (ours; nnU-Net computes only Dice) against geometry and against a brute-force computation."""
import numpy as np
import pytest

from nnunetv2_oneshot.evaluation import _surface, hd95


def _ball(shape, center, radius):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return ((grid - np.asarray(center)) ** 2).sum(-1) <= radius ** 2


def _brute_force(pred, ref, spacing):
    a = np.argwhere(_surface(pred)) * spacing
    b = np.argwhere(_surface(ref)) * spacing
    d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_identical_masks_give_zero():
    m = _ball((20, 20, 20), (10, 10, 10), 6)
    assert hd95(m, m, (1, 1, 1)) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (3.0, 1.5, 0.8)])
def test_matches_brute_force_on_random_shapes(spacing):
    rng = np.random.default_rng(0)
    pred = _ball((24, 22, 20), (11, 10, 9), 6) | (rng.random((24, 22, 20)) > 0.97)
    ref = _ball((24, 22, 20), (13, 11, 9), 5)
    assert hd95(pred, ref, spacing) == pytest.approx(_brute_force(pred, ref, np.asarray(spacing)), rel=1e-6)


def test_concentric_balls_are_their_radius_difference_apart_and_scale_with_spacing():
    small, big = _ball((40, 40, 40), (20, 20, 20), 8), _ball((40, 40, 40), (20, 20, 20), 12)
    d = hd95(small, big, (1, 1, 1))
    assert 3.0 <= d <= 5.0  # 4 up to voxelisation
    assert hd95(small, big, (2, 2, 2)) == pytest.approx(2 * d)
    assert hd95(big, small, (1, 1, 1)) == pytest.approx(d)  # symmetric


def test_empty_masks():
    m = _ball((10, 12, 14), (5, 6, 7), 3)
    empty = np.zeros_like(m)
    assert np.isnan(hd95(empty, empty, (1, 1, 1)))
    diagonal = np.sqrt((10 * 2.0) ** 2 + 12 ** 2 + 14 ** 2)
    assert hd95(empty, m, (2.0, 1, 1)) == pytest.approx(diagonal)
    assert hd95(m, empty, (2.0, 1, 1)) == pytest.approx(diagonal)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        hd95(np.ones((4, 4, 4), bool), np.ones((4, 4, 5), bool), (1, 1, 1))
