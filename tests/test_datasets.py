"""Embedded one-shot datasets (nnunetv2_oneshot.datasets): format, geometry, determinism, split, safety.

Each dataset is built once per module (fixtures); the determinism tests build extra copies.
"""
import json
import os

import numpy as np
import pytest

from nnunetv2_oneshot.constants import (DATASET_JSON_KEY, GENERATED_MARKER, ORACLE_LABELS_FOLDER,
                                        UNLABELLED_FOLDER)
from nnunetv2_oneshot.datasets import DATASET_MAKERS, make_brain_dataset, make_ct_dataset
from nnunetv2_oneshot.datasets import brain as brain_module
from nnunetv2_oneshot.datasets import ct as ct_module
from nnunetv2_oneshot.datasets.common import random_smooth_displacement, read_array

PAIRS = (("imagesTr", "labelsTr"), (UNLABELLED_FOLDER, ORACLE_LABELS_FOLDER), ("imagesTs", "labelsTs"))


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def brain(raw_root):
    return make_brain_dataset(raw_root, seed=0, verbose=False)


@pytest.fixture(scope="module")
def ct(raw_root):
    return make_ct_dataset(raw_root, seed=0, verbose=False)


@pytest.fixture(params=["brain", "ct"])
def dataset(request):
    return request.getfixturevalue(request.param)


def _json(folder):
    with open(os.path.join(folder, "dataset.json")) as f:
        return json.load(f)


def _cases(folder, sub):
    return sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(os.path.join(folder, sub)) if f.endswith("_0000.nii.gz"))


def _load_all(folder):
    """{(folder, case): (image, label, image geometry)}"""
    out = {}
    for fi, fl in PAIRS:
        for c in _cases(folder, fi):
            img, g = read_array(os.path.join(folder, fi, f"{c}_0000.nii.gz"))
            lab, _ = read_array(os.path.join(folder, fl, f"{c}.nii.gz"))
            out[(fi, c)] = (img, lab, g)
    return out


def test_makers_registry():
    from nnunetv2_oneshot.datasets import make_ixi_dataset
    assert DATASET_MAKERS == {"brain": make_brain_dataset, "ct": make_ct_dataset, "ixi": make_ixi_dataset}


def test_names(brain, ct):
    assert os.path.basename(brain) == "Dataset990_OneShotBrain"
    assert os.path.basename(ct) == "Dataset991_OneShotChestCT"


def test_dataset_json(dataset):
    ds = _json(dataset)
    for k in ("channel_names", "labels", "numTraining", "file_ending"):
        assert k in ds
    assert ds["numTraining"] == 1 and ds["file_ending"] == ".nii.gz"
    assert ds["labels"]["background"] == 0
    assert sorted(ds["labels"].values()) == list(range(len(ds["labels"])))
    one = ds[DATASET_JSON_KEY]
    for k in ("unlabelled_folder", "num_unlabelled", "atlas", "source", "seed", "split"):
        assert k in one
    assert one["unlabelled_folder"] == UNLABELLED_FOLDER
    assert os.path.isfile(os.path.join(dataset, GENERATED_MARKER))
    split = one["split"]
    assert _cases(dataset, "imagesTr") == split["atlas"] == [one["atlas"]]
    assert _cases(dataset, UNLABELLED_FOLDER) == sorted(split["unlabelled"])
    assert len(split["unlabelled"]) == one["num_unlabelled"] > 0
    assert _cases(dataset, "imagesTs") == sorted(split["test"]) and len(split["test"]) > 0
    assert len(set(split["atlas"]) | set(split["unlabelled"]) | set(split["test"])) == \
        len(split["atlas"]) + len(split["unlabelled"]) + len(split["test"])


def test_labels_and_geometry(dataset):
    ds = _json(dataset)
    declared = set(ds["labels"].values())
    data = _load_all(dataset)
    assert len(data) == 1 + ds[DATASET_JSON_KEY]["num_unlabelled"] + len(ds[DATASET_JSON_KEY]["split"]["test"])
    for (fi, case), (img, lab, g) in data.items():
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        assert np.all(np.isfinite(img)) and img.std() > 0
        assert img.shape == lab.shape
        assert set(np.unique(lab).tolist()) <= declared, (fi, case)
        _, g_lab = read_array(os.path.join(dataset, dict(PAIRS)[fi], f"{case}.nii.gz"))
        assert g == g_lab, case  # spacing, origin, direction identical
    atlas = ds[DATASET_JSON_KEY]["atlas"]
    assert set(np.unique(data[("imagesTr", atlas)][1]).tolist()) == declared  # every label present in the atlas


def test_brain_shape_spacing(brain):
    for (fi, case), (img, lab, g) in _load_all(brain).items():
        assert max(img.shape) <= 64
        assert np.allclose(g.spacing, brain_module.SUBSAMPLE)
        # every structure keeps a learnable size (>= 30 voxels) in every case
        counts = np.bincount(lab.ravel(), minlength=len(brain_module.LABELS))
        assert counts.min() >= 30, (case, counts)


def test_ct_shape_spacing(ct):
    data = _load_all(ct)
    for (fi, case), (img, lab, g) in data.items():
        assert img.shape == (ct_module.INPLANE_SIZE, ct_module.INPLANE_SIZE, 34)
        assert np.allclose(g.spacing, (128 / 96 * 3.04687595, 128 / 96 * 3.04687595, 10.0), atol=1e-4)
    atlas = _json(ct)[DATASET_JSON_KEY]["atlas"]
    # pseudo-subjects differ from the atlas in anatomy and intensity
    a_img, a_lab, _ = data[("imagesTr", atlas)]
    for (fi, case), (img, lab, g) in data.items():
        if case != atlas:
            assert (lab != a_lab).mean() > 0.01 and not np.allclose(img, a_img)


def test_brain_split_by_donor(brain):
    split = _json(brain)[DATASET_JSON_KEY]["split"]
    donor = split["case_donor"]
    atlas_d = {donor[c] for c in split["atlas"]}
    pool_d = {donor[c] for c in split["unlabelled"]}
    test_d = {donor[c] for c in split["test"]}
    assert atlas_d == set(split["donors"]["atlas"]) and pool_d == set(split["donors"]["unlabelled"])
    assert test_d == set(split["donors"]["test"])
    assert len(atlas_d) == 1 and len(test_d) == 2 and len(pool_d) == 3
    assert not (test_d & (atlas_d | pool_d)) and not (atlas_d & pool_d)
    # deformed copies only of pool donors; test and atlas cases are the real donors (one case each)
    assert all("warp" not in c for c in split["atlas"] + split["test"])


def test_smooth_displacement():
    rng = np.random.default_rng(3)
    d = random_smooth_displacement((20, 24, 16), rng, 4.0, 10.0, spacing=(2, 2, 3))
    assert d.shape == (3, 20, 24, 16) and d.dtype == np.float32
    assert 2.0 - 1e-4 <= np.sqrt((d ** 2).sum(0)).max() <= 4.0 + 1e-4
    d2 = random_smooth_displacement((20, 24, 16), np.random.default_rng(3), 4.0, 10.0, spacing=(2, 2, 3))
    assert np.array_equal(d, d2)


def _assert_same(a, b):
    da, db = _load_all(a), _load_all(b)
    assert da.keys() == db.keys()
    for k in da:
        assert np.array_equal(da[k][0], db[k][0]) and np.array_equal(da[k][1], db[k][1]) and da[k][2] == db[k][2], k


def _images_differ(a, b, folder):
    da, db = _load_all(a), _load_all(b)
    return all(not np.array_equal(da[k][0], db[k][0]) for k in da if k[0] == folder)


@pytest.mark.parametrize("kind", ["brain", "ct"])
def test_determinism(kind, request, tmp_path):
    first = request.getfixturevalue(kind)
    if kind == "brain":
        brain_module.donor_tissue.cache_clear()  # rebuild the per-donor preprocessing too
    again = DATASET_MAKERS[kind](str(tmp_path / "same"), seed=0, verbose=False)
    _assert_same(first, again)
    other = DATASET_MAKERS[kind](str(tmp_path / "other"), seed=1, verbose=False)
    assert _json(other)[DATASET_JSON_KEY]["seed"] == 1
    assert _images_differ(first, other, UNLABELLED_FOLDER) and _images_differ(first, other, "imagesTs")


# ----------------------------------------------------------------------------------------------------------------------
# safety (on the cheap CT dataset)
# ----------------------------------------------------------------------------------------------------------------------
def test_refuses_foreign_folder(tmp_path):
    target = tmp_path / "Dataset991_OneShotChestCT"
    target.mkdir()
    (target / "precious.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        make_ct_dataset(str(tmp_path), verbose=False)
    assert sorted(os.listdir(target)) == ["precious.txt"] and (target / "precious.txt").read_text() == "user data"
    assert sorted(os.listdir(tmp_path)) == ["Dataset991_OneShotChestCT"]


def test_refuses_same_id_other_name(tmp_path):
    (tmp_path / "Dataset991_Something").mkdir()
    with pytest.raises(FileExistsError):
        make_ct_dataset(str(tmp_path), verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["Dataset991_Something"]


def test_overwrite(tmp_path):
    path = make_ct_dataset(str(tmp_path), verbose=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_ct_dataset(str(tmp_path), verbose=False)
    with open(os.path.join(path, "stale.txt"), "w") as f:
        f.write("x")
    assert make_ct_dataset(str(tmp_path), seed=2, overwrite=True, verbose=False) == path
    assert not os.path.exists(os.path.join(path, "stale.txt"))
    assert _json(path)[DATASET_JSON_KEY]["seed"] == 2 and os.path.isfile(os.path.join(path, GENERATED_MARKER))
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temporary folders left


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    original = ct_module.make_case
    monkeypatch.setattr(ct_module, "make_case", broken)
    with pytest.raises(RuntimeError):
        make_ct_dataset(str(tmp_path), verbose=False)
    assert os.listdir(tmp_path) == []
