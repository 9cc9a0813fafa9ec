"""HD95 (ours; nnU-Net computes only Dice) against geometry and against a brute-force computation; the in-memory
Dice against nnU-Net's own evaluation."""
import numpy as np
import pytest

from nnunetv2_oneshot.evaluation import _surface, dice_per_label, hd95, label_dice, mean_dice, nan_mean


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


@pytest.mark.parametrize("shape", [(9, 8, 7), (30, 20)])
def test_label_dice_by_hand(shape):
    ref = np.zeros(shape, np.int16)
    ref[:4] = 1  # label 1: rows 0-3
    pred = np.zeros(shape, np.int16)
    pred[2:6] = 1  # overlap rows 2-3: Dice 2*2/(4+4) = 0.5
    pred[-1] = 2  # label 2 only in the prediction: 0
    d = label_dice(pred, ref, [1, 2, 3])  # label 3 in neither: NaN, skipped
    np.testing.assert_allclose(d[:2], [0.5, 0.0])
    assert np.isnan(d[2])
    assert mean_dice(pred, ref, [1, 2, 3]) == pytest.approx(0.25)
    assert mean_dice(ref, ref, [1]) == 1.0
    assert np.isnan(mean_dice(pred, ref, [3, 4]))


@pytest.mark.parametrize("values, expected", [([0.5, float("nan"), 1.0], 0.75), ([0.2], 0.2),
                                              ([float("nan")] * 2, None), ([], None)])
def test_nan_mean_skips_nan_and_is_nan_without_a_warning_when_nothing_is_left(values, expected):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would fail here
        m = nan_mean(values)
    assert np.isnan(m) if expected is None else m == pytest.approx(expected)


def test_label_dice_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        label_dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), [1])


def test_mean_dice_matches_nnunet_evaluation_of_one_case(tmp_path):
    """The in-memory Dice and the folder Dice (nnU-Net's evaluation) agree, a label absent from both included."""
    import SimpleITK as sitk
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 3, (12, 10, 8)).astype(np.uint8)  # labels 0-2; label 3 absent from both
    pred = np.where(rng.random(ref.shape) < 0.3, rng.integers(0, 3, ref.shape), ref).astype(np.uint8)
    for folder, arr in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / folder / "case.nii.gz"))
    dataset_json = {"labels": {"background": 0, "a": 1, "b": 2, "c": 3}, "file_ending": ".nii.gz"}
    res = dice_per_label(str(tmp_path / "pred"), str(tmp_path / "ref"), dataset_json)
    np.testing.assert_allclose(label_dice(pred, ref, [1, 2]), [res["per_label"]["a"], res["per_label"]["b"]])
    assert np.isnan(res["per_label"]["c"]) and np.isnan(label_dice(pred, ref, [3])[0])
    assert mean_dice(pred, ref, [1, 2, 3]) == pytest.approx(res["mean"])
