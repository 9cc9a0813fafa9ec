"""Tests of nnunetv2_oneshot.validation on tiny synthetic one-shot datasets."""
import json
import os
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_oneshot.constants import UNLABELLED_FOLDER
from nnunetv2_oneshot.validation import OneShotDataset, OneShotDatasetError, validate_oneshot_dataset

SHAPE = (10, 9, 8)  # numpy (z, y, x) -> SimpleITK size (8, 9, 10)
SPACING = (1.0, 1.5, 2.0)
ENDING = ".nii.gz"


def _write(path, arr, spacing=SPACING, origin=None):
    img = sitk.GetImageFromArray(arr, isVector=False)
    img.SetSpacing(spacing)
    img.SetOrigin(origin if origin is not None else (0.0,) * len(spacing))
    sitk.WriteImage(img, str(path), True)


def _image(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


def _label(shape=SHAPE):
    seg = np.zeros(shape, dtype=np.uint8)
    seg[2:6, 2:6, 2:5] = 1
    seg[6:9, 3:7, 4:7] = 2
    return seg


def make_dataset(root, labelled=("case_a",), unlabelled=("pool_000", "pool_001"), num_channels=1,
                 name="Dataset999_Test", extra_json=None, unlabelled_folder=UNLABELLED_FOLDER):
    folder = root / name
    for sub in ("imagesTr", "labelsTr", unlabelled_folder):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    dataset_json = {
        "channel_names": {str(c): f"ch{c}" for c in range(num_channels)},
        "labels": {"background": 0, "organ_a": 1, "organ_b": 2},
        "numTraining": len(labelled),
        "file_ending": ENDING,
    }
    dataset_json.update(extra_json or {})
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    seed = 0
    for case in labelled:
        for c in range(num_channels):
            _write(folder / "imagesTr" / f"{case}_{c:04d}{ENDING}", _image(seed))
            seed += 1
        _write(folder / "labelsTr" / f"{case}{ENDING}", _label())
    for case in unlabelled:
        for c in range(num_channels):
            _write(folder / unlabelled_folder / f"{case}_{c:04d}{ENDING}", _image(seed))
            seed += 1
    return folder


def _snapshot(folder):
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_mtime_ns, st.st_size)
    return out


def _update_json(folder, **changes):
    p = folder / "dataset.json"
    d = json.loads(p.read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    p.write_text(json.dumps(d))


def _rm(path):
    os.remove(path)


# ------------------------------------------------------------------------------------------------------------
# bad inputs: each builds a valid dataset, breaks one thing and names a fragment the message must contain
# ------------------------------------------------------------------------------------------------------------
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan_image(f):
    arr = _image(3)
    arr[1, 2, 3] = np.nan
    _write(f / "imagesTr" / f"case_a_0000{ENDING}", arr)


def _inf_unlabelled(f):
    arr = _image(4)
    arr[0, 0, 0] = np.inf
    _write(f / UNLABELLED_FOLDER / f"pool_001_0000{ENDING}", arr)


def _undeclared_label(f):
    seg = _label()
    seg[0, 0, 0] = 5
    seg[0, 0, 1] = 7
    _write(f / "labelsTr" / f"case_a{ENDING}", seg)


BAD_CASES = [
    # (id, kwargs for make_dataset, mutation, expected message fragment)
    ("no_dataset_json", {}, lambda f: _rm(f / "dataset.json"), "No dataset.json"),
    ("invalid_json", {}, lambda f: (f / "dataset.json").write_text("{\"labels\": {,,"), "not valid JSON"),
    ("missing_labels_key", {}, lambda f: _update_json(f, labels=None), "'labels'"),
    ("missing_channel_names", {}, lambda f: _update_json(f, channel_names=None), "'channel_names'"),
    ("missing_file_ending", {}, lambda f: _update_json(f, file_ending=None), "'file_ending'"),
    ("no_background", {}, lambda f: _update_json(f, labels={"organ_a": 1, "organ_b": 2}), "background 0"),
    ("region_labels", {}, lambda f: _update_json(f, labels={"background": 0, "a": 1, "ab": [1, 2]}),
     "not supported yet"),
    ("background_misnamed", {}, lambda f: _update_json(f, labels={"bg": 0, "organ_a": 1, "organ_b": 2}),
     "'background'"),
    ("non_consecutive_labels", {}, lambda f: _update_json(f, labels={"background": 0, "organ_a": 1, "organ_b": 3}),
     "consecutive"),
    ("2d_file_ending", {}, lambda f: _update_json(f, file_ending=".png"), "3D only"),
    ("bad_oneshot_block", {}, lambda f: _update_json(f, oneshot="imagesUnlabelled"), "'oneshot'"),
    ("missing_imagesTr", {}, lambda f: [_rm(p) for p in (f / "imagesTr").iterdir()] and None
     or os.rmdir(f / "imagesTr"), "No labelled case"),
    ("empty_imagesTr_labelsTr", {}, lambda f: [_rm(p) for p in [*(f / "imagesTr").iterdir(),
                                                                 *(f / "labelsTr").iterdir()]],
     "No labelled case"),
    ("label_without_images", {}, lambda f: _write(f / "labelsTr" / f"orphan{ENDING}", _label()),
     f"labelsTr/orphan{ENDING}"),
    ("images_without_label", {"labelled": ("case_a", "case_b")}, lambda f: _rm(f / "labelsTr" / f"case_b{ENDING}"),
     f"labelsTr/case_b{ENDING}"),
    ("unlabelled_missing", {}, lambda f: [_rm(p) for p in (f / UNLABELLED_FOLDER).iterdir()] and None
     or os.rmdir(f / UNLABELLED_FOLDER), UNLABELLED_FOLDER),
    ("unlabelled_empty", {}, lambda f: [_rm(p) for p in (f / UNLABELLED_FOLDER).iterdir()], "holds no image"),
    ("override_folder_missing", {}, lambda f: _update_json(f, oneshot={"unlabelled_folder": "myPool"}), "myPool"),
    ("missing_channel_labelled", {"num_channels": 2}, lambda f: _rm(f / "imagesTr" / f"case_a_0001{ENDING}"),
     f"case_a_0001{ENDING}"),
    ("missing_channel_unlabelled", {"num_channels": 2},
     lambda f: _rm(f / UNLABELLED_FOLDER / f"pool_001_0000{ENDING}"), f"pool_001_0000{ENDING}"),
    ("extra_channel", {}, lambda f: _write(f / UNLABELLED_FOLDER / f"pool_000_0001{ENDING}", _image()),
     f"pool_000_0001{ENDING}"),
    ("bad_image_name", {}, lambda f: _write(f / "imagesTr" / f"case_z{ENDING}", _image()), f"case_z{ENDING}"),
    ("wrong_ending_imagesTr", {}, lambda f: _write(f / "imagesTr" / "case_a_0000.nii", _image()), "case_a_0000.nii"),
    ("wrong_ending_labelsTr", {}, lambda f: (f / "labelsTr" / "notes.txt").write_text("hi"), "notes.txt"),
    ("wrong_ending_unlabelled", {}, lambda f: _write(f / UNLABELLED_FOLDER / "pool_009_0000.mha", _image()),
     "pool_009_0000.mha"),
    ("name_collision", {}, lambda f: _write(f / UNLABELLED_FOLDER / f"case_a_0000{ENDING}", _image()), "'case_a'"),
    ("garbage_file", {}, lambda f: (f / UNLABELLED_FOLDER / f"pool_000_0000{ENDING}").write_bytes(b"garbage" * 20),
     f"pool_000_0000{ENDING}"),
    ("truncated_nii_gz", {}, lambda f: _truncate(f / "imagesTr" / f"case_a_0000{ENDING}"),
     f"case_a_0000{ENDING}"),
    ("truncated_gzip_trailer", {}, lambda f: (f / "imagesTr" / f"case_a_0000{ENDING}").write_bytes(
        (f / "imagesTr" / f"case_a_0000{ENDING}").read_bytes()[:-3]), "gzip stream broken"),
    ("truncated_label", {}, lambda f: _truncate(f / "labelsTr" / f"case_a{ENDING}"), "Cannot read"),
    ("label_shape_mismatch", {}, lambda f: _write(f / "labelsTr" / f"case_a{ENDING}", _label((10, 9, 7))),
     "shape mismatch"),
    ("label_spacing_mismatch", {}, lambda f: _write(f / "labelsTr" / f"case_a{ENDING}", _label(),
                                                    spacing=(1.0, 1.5, 2.5)), "spacing mismatch"),
    ("channel_shape_mismatch", {"num_channels": 2},
     lambda f: _write(f / UNLABELLED_FOLDER / f"pool_000_0001{ENDING}", _image(shape=(11, 9, 8))),
     f"pool_000_0001{ENDING}"),
    ("nan_labelled_image", {}, _nan_image, "NaN"),
    ("inf_unlabelled_image", {}, _inf_unlabelled, f"pool_001_0000{ENDING}"),
    ("undeclared_label_values", {}, _undeclared_label, "[5, 7]"),
    ("negative_label_value", {}, lambda f: _write(f / "labelsTr" / f"case_a{ENDING}",
                                                  np.where(_label() == 2, -1, _label().astype(np.int16))), "[-1]"),
    ("2d_image", {}, lambda f: _write(f / UNLABELLED_FOLDER / f"pool_000_0000{ENDING}",
                                      _image(shape=(9, 8)), spacing=(1.0, 1.0)), "2D"),
    ("single_slice", {}, lambda f: _write(f / UNLABELLED_FOLDER / f"pool_000_0000{ENDING}",
                                          _image(shape=(1, 9, 8))), "2D"),
    ("4d_image", {}, lambda f: _write(f / UNLABELLED_FOLDER / f"pool_000_0000{ENDING}",
                                      _image(shape=(2, 10, 9, 8)), spacing=(1.0,) * 4), "4D"),
]


@pytest.mark.parametrize("kwargs,mutate,fragment", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_dataset_raises_one_line_error(tmp_path, kwargs, mutate, fragment):
    folder = make_dataset(tmp_path, **kwargs)
    mutate(folder)
    before = _snapshot(folder)
    with pytest.raises(OneShotDatasetError) as exc_info:
        validate_oneshot_dataset(str(folder))
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, ValueError)
    assert "\n" not in msg and "\r" not in msg
    assert fragment in msg, msg
    assert ";" in msg  # "<what is wrong ...>; <what to do>"
    assert _snapshot(folder) == before  # nothing written, even on failure


def test_valid_gzip_files_are_not_decompressed_twice(tmp_path, monkeypatch):
    """The truncation check of valid .nii.gz files only reads the gzip trailer, never the whole stream."""
    import gzip

    from nnunetv2_oneshot import validation

    folder = make_dataset(tmp_path)
    image = folder / "imagesTr" / f"case_a_0000{ENDING}"
    # the header-declared size is right, so the trailer check can decide alone
    assert validation._nifti_expected_size(str(image)) == len(gzip.decompress(image.read_bytes()))

    def no_gzip(*args, **kwargs):
        raise AssertionError("full gzip decompression in the truncation check")

    monkeypatch.setattr(gzip, "open", no_gzip)
    assert validate_oneshot_dataset(str(folder), check_voxels=False).atlas == "case_a"


def test_missing_folder(tmp_path):
    with pytest.raises(OneShotDatasetError, match="not found") as exc_info:
        validate_oneshot_dataset(str(tmp_path / "Dataset123_Nope"))
    assert "Dataset123_Nope" in str(exc_info.value) and "\n" not in str(exc_info.value)


# ------------------------------------------------------------------------------------------------------------
# valid datasets
# ------------------------------------------------------------------------------------------------------------
def test_valid_one_labelled_case(tmp_path):
    folder = make_dataset(tmp_path)
    (folder / "imagesTr" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files are ignored
    (folder / UNLABELLED_FOLDER / "._pool_000_0000.nii.gz").write_bytes(b"junk")
    ds = validate_oneshot_dataset(str(folder))
    assert isinstance(ds, OneShotDataset)
    assert ds.folder == os.path.abspath(folder)
    assert ds.atlas == "case_a"
    assert list(ds.labelled) == ["case_a"]
    assert ds.labelled["case_a"]["images"] == [str(folder / "imagesTr" / f"case_a_0000{ENDING}")]
    assert ds.labelled["case_a"]["label"] == str(folder / "labelsTr" / f"case_a{ENDING}")
    assert list(ds.unlabelled) == ["pool_000", "pool_001"]
    assert ds.unlabelled["pool_001"] == [str(folder / UNLABELLED_FOLDER / f"pool_001_0000{ENDING}")]
    assert ds.num_channels == 1 and ds.file_ending == ENDING
    assert ds.label_values == [0, 1, 2]
    assert ds.unlabelled_folder == str(folder / UNLABELLED_FOLDER)
    assert ds.dataset_json["labels"]["organ_b"] == 2


def test_valid_k_labelled_cases_two_channels(tmp_path):
    # created in non-sorted order: the atlas is the first case in sorted order
    folder = make_dataset(tmp_path, labelled=("case_c", "case_b", "case_d"), unlabelled=("u1", "u0", "u2"),
                          num_channels=2)
    ds = validate_oneshot_dataset(str(folder))
    assert ds.atlas == "case_b"
    assert list(ds.labelled) == ["case_b", "case_c", "case_d"]
    assert list(ds.unlabelled) == ["u0", "u1", "u2"]
    assert ds.num_channels == 2
    assert ds.labelled["case_c"]["images"] == [str(folder / "imagesTr" / f"case_c_{c:04d}{ENDING}") for c in (0, 1)]
    assert ds.unlabelled["u2"] == [str(folder / UNLABELLED_FOLDER / f"u2_{c:04d}{ENDING}") for c in (0, 1)]
    assert ds.num_labelled == 3 and ds.num_unlabelled == 3


def test_valid_with_unlabelled_folder_override_and_ignored_folders(tmp_path):
    folder = make_dataset(tmp_path, labelled=("a", "b"), unlabelled_folder="pool",
                          extra_json={"oneshot": {"unlabelled_folder": "pool"}})
    # test/oracle folders are not validated (oracle labels are only read by the upper-bound baseline)
    for sub in ("imagesTs", "labelsTs", "labelsUnlabelledOracle"):
        (folder / sub).mkdir()
    _write(folder / "imagesTs" / f"t0_0000{ENDING}", _image())
    (folder / "labelsUnlabelledOracle" / "whatever.txt").write_text("x")
    ds = validate_oneshot_dataset(str(folder))
    assert ds.unlabelled_folder == str(folder / "pool")
    assert ds.unlabelled_folder_name == "pool"
    assert ds.atlas == "a" and len(ds.labelled) == 2 and len(ds.unlabelled) == 2


def test_imagesTs_channel_naming_is_checked_lightly(tmp_path):
    folder = make_dataset(tmp_path, num_channels=2)
    (folder / "imagesTs").mkdir()
    _write(folder / "imagesTs" / f"t0_0000{ENDING}", _image())
    with pytest.raises(OneShotDatasetError, match=f"t0_0001{ENDING}"):
        validate_oneshot_dataset(str(folder), check_held_out=True)
    # a trainer's validation does not look at held-out folders at all
    assert validate_oneshot_dataset(str(folder)).held_out_in_pool is None


def test_held_out_scans_in_the_pool_are_listed(tmp_path):
    import shutil
    folder = make_dataset(tmp_path)
    for sub in ("imagesTs", "imagesVal"):
        (folder / sub).mkdir()
    pool = sorted((folder / UNLABELLED_FOLDER).iterdir())
    shutil.copy(pool[0], folder / "imagesVal" / f"v0_0000{ENDING}")  # the same voxels under another name
    _write(folder / "imagesTs" / f"t0_0000{ENDING}", _image() + 1.0)  # a scan of its own
    ds = validate_oneshot_dataset(str(folder), check_held_out=True)
    assert ds.held_out_in_pool == [(f"imagesVal/v0_0000{ENDING}", pool[0].name[:-len("_0000" + ENDING)])]
    assert validate_oneshot_dataset(str(folder), check_voxels=False, check_held_out=True).held_out_in_pool is None


def test_check_voxels_false_skips_voxel_checks(tmp_path):
    folder = make_dataset(tmp_path)
    _nan_image(folder)
    _undeclared_label(folder)
    ds = validate_oneshot_dataset(str(folder), check_voxels=False)
    assert ds.atlas == "case_a"
    # geometry / truncation are still checked from the headers
    _truncate(folder / UNLABELLED_FOLDER / f"pool_000_0000{ENDING}")
    with pytest.raises(OneShotDatasetError, match="pool_000_0000"):
        validate_oneshot_dataset(str(folder), check_voxels=False)


def test_ignore_label_and_small_spacing_differences(tmp_path):
    folder = make_dataset(tmp_path, extra_json={"labels": {"background": 0, "organ_a": 1, "organ_b": 2,
                                                           "ignore": 3}})
    seg = _label()
    seg[0] = 3
    # spacing differing by far less than nnU-Net's tolerance is accepted
    _write(folder / "labelsTr" / f"case_a{ENDING}", seg, spacing=(1.0, 1.5, 2.0 + 1e-7))
    ds = validate_oneshot_dataset(str(folder))
    assert ds.label_values == [0, 1, 2, 3]


def test_origin_mismatch_only_warns(tmp_path):
    folder = make_dataset(tmp_path)
    _write(folder / "labelsTr" / f"case_a{ENDING}", _label(), origin=(5.0, 0.0, 0.0))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        validate_oneshot_dataset(str(folder))
    assert any("Origin/direction" in str(x.message) for x in w)


def test_dataset_id_resolved_under_nnunet_raw(tmp_path, monkeypatch):
    make_dataset(tmp_path, name="Dataset042_Foo")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert validate_oneshot_dataset("42").folder == str(tmp_path / "Dataset042_Foo")
    assert validate_oneshot_dataset("Dataset042_Foo").atlas == "case_a"


def test_validation_is_read_only(tmp_path):
    folder = make_dataset(tmp_path, labelled=("a", "b"), num_channels=2)
    before = _snapshot(folder)
    validate_oneshot_dataset(str(folder))
    validate_oneshot_dataset(str(folder), check_voxels=False)
    assert _snapshot(folder) == before
    seg = _label()
    seg[0, 0, 0] = 9
    _write(folder / "labelsTr" / f"b{ENDING}", seg)
    before = _snapshot(folder)
    with pytest.raises(OneShotDatasetError, match="9"):
        validate_oneshot_dataset(str(folder))
    assert _snapshot(folder) == before
