import os

import numpy as np
import pytest

from nnunetv2_oneshot.augmentation.synthesis import PairSynthesizer, SynthesisConfig, canvas_shape, pad_to_shape

S = (12, 14, 10)


def _atlas():
    lab = np.zeros((1, *S), np.int16)
    lab[0, 3:9, 4:10, 2:8] = 1
    lab[0, 5:7, 6:8, 4:6] = 2
    img = np.choose(lab, [0.0, 1.0, 2.0]).astype(np.float32)
    return img, lab


def _synth(flows, subjects, cfg):
    return PairSynthesizer({"a": _atlas()}, subjects, flows, num_classes=3, config=cfg)


def test_zero_flow_without_appearance_reproduces_atlas():
    img, lab = _atlas()
    subj = {"s": img * 3 + 1}
    syn = _synth({("a", "s"): np.zeros((3, *S), np.float32)}, subj, SynthesisConfig(0.0, 2.0, (1.0, 1.0), 0.0))
    out_img, out_lab, real, exact = syn.sample("s", np.random.default_rng(0))
    assert exact
    np.testing.assert_allclose(out_img, img, atol=1e-5)
    np.testing.assert_array_equal(out_lab, lab)
    np.testing.assert_array_equal(real, subj["s"])


def test_translation_moves_label():
    img, lab = _atlas()
    flow = np.zeros((3, *S), np.float32)
    flow[0] = 1.0  # pull-back: out(x) = atlas(x + 1) -> structures move one voxel toward 0 along D
    syn = _synth({("a", "s"): flow}, {"s": img}, SynthesisConfig(0.0, 2.0, (1.0, 1.0), 0.0))
    _, out_lab, _, _ = syn.sample("s", np.random.default_rng(0))
    np.testing.assert_array_equal(out_lab[0, 2:8], lab[0, 3:9])


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_appearance_moves_structure_means_toward_subject(beta):
    img, lab = _atlas()
    subj = img * 2 + 0.5  # per-structure means 0.5, 2.5, 4.5; stds 0
    syn = _synth({("a", "s"): np.zeros((3, *S), np.float32)}, {"s": subj}, SynthesisConfig(0.0, 2.0, (1, 1), 1.0))
    out = syn.adapt_appearance(img, lab, "a", "s", beta)
    for k in range(3):
        m = lab[0] == k
        expected = (1 - beta) * img[0][m].mean() + beta * subj[0][m].mean()
        assert out[0][m].mean() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("match_spread", [True, False])
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_appearance_spread_follows_the_subject_only_when_asked(beta, match_spread):
    img, lab = _atlas()
    img = img + np.random.default_rng(0).normal(0, 0.1, img.shape).astype(np.float32)  # atlas sd ~0.1
    subj = img * 3 + 0.5  # subject sd ~0.3 in every structure
    syn = PairSynthesizer({"a": (img, lab)}, {"s": subj}, {("a", "s"): np.zeros((3, *S), np.float32)}, num_classes=3,
                          config=SynthesisConfig(0.0, 2.0, (1, 1), 1.0, appearance_match_spread=match_spread))
    out = syn.adapt_appearance(img, lab, "a", "s", beta)
    for k in range(3):
        m = lab[0] == k
        sd_a, sd_s = img[0][m].std(), subj[0][m].std()
        expected_sd = sd_a * (1 + beta * (sd_s / sd_a - 1)) if match_spread else sd_a
        assert out[0][m].std() == pytest.approx(expected_sd, rel=1e-3)
        assert out[0][m].mean() == pytest.approx((1 - beta) * img[0][m].mean() + beta * subj[0][m].mean(), abs=1e-4)


def test_flow_interpolation_between_subjects():
    img, _ = _atlas()
    f1 = np.full((3, *S), 1.0, np.float32)
    f2 = np.full((3, *S), -1.0, np.float32)
    syn = _synth({("a", "s1"): f1, ("a", "s2"): f2}, {"s1": img, "s2": img}, SynthesisConfig(1.0, 2.0, (1, 1), 0.0))
    rng = np.random.default_rng(1)
    seen_mixed = False
    for _ in range(20):
        flow, exact = syn.sample_flow("a", "s1", rng)
        assert np.all(flow <= 1.0 + 1e-6) and np.all(flow >= -1.0 - 1e-6)
        if not exact:
            seen_mixed = True
            assert np.ptp(flow) < 1e-6 and abs(flow.flat[0]) < 1.0  # a convex mix of +1 and -1
    assert seen_mixed


def test_missing_flow_raises():
    img, _ = _atlas()
    with pytest.raises(ValueError, match="flows missing"):
        _synth({}, {"s": img}, SynthesisConfig())


def test_pad_roundtrip_and_canvas():
    x = np.random.rand(2, 5, 6, 7).astype(np.float32)
    shape = canvas_shape([(5, 6, 7), (9, 3, 4)], 4)
    assert shape == (12, 8, 8)
    padded, crop = pad_to_shape(x, shape, -1.0)
    assert padded.shape == (2, *shape)
    np.testing.assert_array_equal(padded[crop], x)
    with pytest.raises(ValueError):
        pad_to_shape(x, (4, 6, 7), 0)


@pytest.mark.parametrize("atlas_prob", [0.0, 0.3, 1.0])
def test_atlas_prob_is_the_share_of_unwarped_atlas_samples(atlas_prob):
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, lab = _atlas()
    flow = np.zeros((3, *S), np.float32)
    flow[0] = 1.0  # every synthetic sample differs from the atlas
    subj = np.roll(img, -1, axis=1)
    syn = _synth({("a", "s"): flow}, {"s": subj}, SynthesisConfig(0.0, 2.0, (1, 1), 0.0, atlas_prob=atlas_prob))
    ds = SyntheticPairDataset(syn, {"s": "subject locations"}, with_real_image=True,
                              atlas_locations={"a": "atlas locations"})
    np.random.seed(0)
    n, atlas_samples = 200, 0
    for _ in range(n):
        data, seg, _, props = ds.load_case("s")
        is_atlas = np.array_equal(seg, lab)
        atlas_samples += is_atlas
        # an atlas sample comes with the atlas as its real partner and the atlas' foreground locations
        np.testing.assert_allclose(data[1:], img if is_atlas else subj, atol=1e-5)
        assert props["class_locations"] == ("atlas locations" if is_atlas else "subject locations")
    assert abs(atlas_samples / n - atlas_prob) < 0.08


def test_atlas_prob_needs_atlas_locations():
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, _ = _atlas()
    syn = _synth({("a", "s"): np.zeros((3, *S), np.float32)}, {"s": img}, SynthesisConfig(atlas_prob=0.5))
    with pytest.raises(ValueError, match="atlas_locations"):
        SyntheticPairDataset(syn, {"s": {}})


@pytest.mark.parametrize("atlas_prob,pseudo_label_prob", [(0.0, 0.5), (0.0, 1.0), (0.25, 0.5)])
def test_pseudo_label_prob_is_the_share_of_real_scans_with_their_warped_label(atlas_prob, pseudo_label_prob):
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, lab = _atlas()
    flow = np.zeros((3, *S), np.float32)
    flow[0] = 1.0
    subj = np.roll(img, -1, axis=1) * 3 + 5  # real scan: other intensities than any warped atlas sample
    subj_before = subj.copy()
    syn = _synth({("a", "s"): flow}, {"s": subj},
                 SynthesisConfig(0.0, 2.0, (1, 1), 0.0, atlas_prob=atlas_prob, pseudo_label_prob=pseudo_label_prob))
    label_before = syn.exact_labels[("a", "s")].copy()
    ds = SyntheticPairDataset(syn, {"s": "subject locations"}, with_real_image=True,
                              atlas_locations={"a": "atlas locations"})
    np.random.seed(0)
    n, kinds = 300, {"pseudo": 0, "atlas": 0, "synthetic": 0}
    for _ in range(n):
        data, seg, _, props = ds.load_case("s")
        if np.array_equal(data[:1], subj):
            kinds["pseudo"] += 1
            # the real scan, its own real partner, labelled with the atlas label warped by the exact flow
            np.testing.assert_array_equal(data[1:], subj)
            np.testing.assert_array_equal(seg, syn.exact_labels[("a", "s")])
            assert props["class_locations"] == "subject locations"
            data[:] = 0  # a loader that augments in place must not reach the synthesizer's scan or label
            seg[:] = 0
        elif np.array_equal(seg, lab):
            kinds["atlas"] += 1
        else:
            kinds["synthetic"] += 1
    assert abs(kinds["pseudo"] / n - pseudo_label_prob) < 0.08
    assert abs(kinds["atlas"] / n - atlas_prob) < 0.08
    np.testing.assert_array_equal(syn.subjects["s"], subj_before)
    np.testing.assert_array_equal(syn.exact_labels[("a", "s")], label_before)


@pytest.mark.parametrize("atlas_prob,pseudo_label_prob", [(0.6, 0.6), (0.0, -0.1)])
def test_sample_shares_must_be_probabilities(atlas_prob, pseudo_label_prob):
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, _ = _atlas()
    syn = _synth({("a", "s"): np.zeros((3, *S), np.float32)}, {"s": img},
                 SynthesisConfig(atlas_prob=atlas_prob, pseudo_label_prob=pseudo_label_prob))
    with pytest.raises(ValueError, match="pseudo_label_prob"):
        SyntheticPairDataset(syn, {"s": {}}, atlas_locations={"a": {}})


def _write_labels(path, labels):
    tmp = str(path) + "_tmp.npz"
    np.savez(tmp, **labels)
    os.replace(tmp, path)  # as the trainer does: a new file, never one rewritten in place


@pytest.mark.parametrize("student_label_prob", [0.3, 1.0])
def test_student_labels_are_used_once_written_and_reread_when_replaced(tmp_path, student_label_prob):
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, lab = _atlas()
    flow = np.zeros((3, *S), np.float32)
    flow[0] = 1.0
    subj = np.roll(img, -1, axis=1) * 3 + 5
    syn = _synth({("a", "s"): flow}, {"s": subj}, SynthesisConfig(0.0, 2.0, (1, 1), 0.8))
    path = tmp_path / "self_training_labels.npz"
    ds = SyntheticPairDataset(syn, {"s": "subject locations"}, with_real_image=True, student_labels_path=str(path),
                              student_label_prob=student_label_prob)
    plain = SyntheticPairDataset(syn, {"s": "subject locations"}, with_real_image=True)
    # before the trainer has written any: the very samples of a data set without self-training
    for seed in range(5):
        np.random.seed(seed)
        a = ds.load_case("s")
        np.random.seed(seed)
        b = plain.load_case("s")
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for round_no, value in enumerate((1, 2)):
        student = np.zeros_like(lab)
        student[0, 2:6, 2:6, 2:6] = value  # unlike any warped atlas label
        _write_labels(path, {"s": student})
        np.random.seed(10 + round_no)
        n, hits = 300, 0
        for _ in range(n):
            data, seg, _, props = ds.load_case("s")
            if np.array_equal(seg, student):
                hits += 1
                np.testing.assert_array_equal(data, np.concatenate([subj, subj]))
                assert props["class_locations"] == "subject locations"
                data[:] = 0  # in-place augmentation must not reach the scan or the cached labels
                seg[:] = 0
        assert abs(hits / n - student_label_prob) < 0.08, (round_no, hits)
    np.testing.assert_array_equal(syn.subjects["s"], np.roll(img, -1, axis=1) * 3 + 5)
    os.remove(path)
    assert ds.student_labels() is None


def test_student_label_prob_must_be_a_probability():
    from nnunetv2_oneshot.trainers.regaug import SyntheticPairDataset
    img, _ = _atlas()
    syn = _synth({("a", "s"): np.zeros((3, *S), np.float32)}, {"s": img}, SynthesisConfig())
    with pytest.raises(ValueError, match="student_label_prob"):
        SyntheticPairDataset(syn, {"s": {}}, student_labels_path="x.npz", student_label_prob=1.5)
