"""``make-dataset ixi`` (nnunetv2_oneshot.datasets.ixi) on a small fake IXI folder of the same layout, the atlas
ranking it uses (nnunetv2_oneshot.registration.atlas_choice), and, where the real folder is beside the project,
its label table. The fake subjects are blobs with MUSE indices; nothing here needs the real scans."""
import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN
from nnunetv2_oneshot.datasets import ixi
from nnunetv2_oneshot.registration.atlas_choice import rank_atlas_candidates

# one MUSE-style name per structure of the seg35 table, plus cortical parcels that fall to the cortex
REGIONS = {4: "3rdVentricle", 11: "4thVentricle", 35: "BrainStem", 71: "CerebellarVermalLobules_1to5",
           72: "CerebellarVermalLobules_6to7", 95: "CorpusCallosum"}
_LATERAL = ["Frontal_WM", "LateralVentricle", "InfLatVentricle", "Cerebellum_WM", "CerebellumExterior",
            "ThalamusProper", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "AccumbensArea",
            "VentralDC", "BasalForebrain", "PrecentralGyrus", "Cuneus"]
for _i, _n in enumerate(_LATERAL):
    REGIONS[100 + 2 * _i] = _n + "_R"
    REGIONS[101 + 2 * _i] = _n + "_L"
N_SUBJECTS = 9
SMALL = dict(num_test=3, num_validation=2)  # 9 subjects: 3 test, 2 validation, atlas + 3 unlabelled


def _subject(rng, shape=(30, 34, 34)):
    """Whole-'head' image (skull shell + brain) and a MUSE label map of the brain, (z, y, x)."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    c = np.array(shape) / 2 + rng.uniform(-1.5, 1.5, 3)
    r = np.array(shape) * rng.uniform(0.30, 0.36, 3)
    d = np.sqrt(sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)))
    label = np.zeros(shape, np.uint8)
    brain = d <= 1
    ids = np.array(sorted(REGIONS), np.uint8)
    # brain voxels get region ids by angular sector and depth: every region present, in a subject-specific layout
    sector = ((np.arctan2(g[1] - c[1], g[2] - c[2]) + np.pi) / (2 * np.pi) * len(ids) + 3 * d).astype(int) % len(ids)
    label[brain] = ids[sector[brain]]
    image = np.where(brain, 80 + 0.5 * label, 0).astype(np.float32)
    image[(d > 1.15) & (d <= 1.4)] = 400.0  # the skull, which preparation must remove
    image += rng.normal(0, 2, shape).astype(np.float32)
    return image, label


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("ixi_source")
    (root / "t1").mkdir()
    (root / "dlmuse_seg").mkdir()
    with open(root / "muse_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Code", "Name"])
        for i, n in sorted(REGIONS.items()):
            w.writerow([i, f"MUSE_{i}", n])
    rng = np.random.default_rng(0)
    direction = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # the scans' native PSR orientation
    for k in range(N_SUBJECTS):
        image, label = _subject(rng)
        for arr, path in ((image, root / "t1" / f"IXI{100 + k:03d}-HH-{k}_T1.nii.gz"),
                          (label, root / "dlmuse_seg" / f"IXI{100 + k:03d}-HH-{k}_T1_DLMUSE.nii.gz")):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing((2.0, 2.0, 2.0))
            im.SetOrigin((88.0 + k, -118.0, -135.0))
            im.SetDirection(direction)
            sitk.WriteImage(im, str(path), True)
    (root / "t1" / "README.txt").write_text("not a scan: ignored")
    return root


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    before = _digest(source)
    raw = tmp_path_factory.mktemp("raw")
    folder = ixi.make_ixi_dataset(str(raw), source=str(source), verbose=False, **SMALL)
    assert _digest(source) == before  # the source is only read
    return Path(folder)


def _cases(folder: Path, sub: str, suffix: str) -> list:
    return sorted(p.name[:-len(suffix)] for p in (folder / sub).glob("*" + suffix))


def test_seg35_table_from_names():
    table = ixi.seg35_table(REGIONS)
    assert len(table) == 35
    ids = [i for v in table.values() for i in v]
    assert len(ids) == len(set(ids))  # every region in one structure at most
    inv = {n: k for k, n in REGIONS.items()}
    assert table["cerebral_cortex_left"] == sorted([inv["PrecentralGyrus_L"], inv["Cuneus_L"]])
    assert table["cerebellar_vermis"] == [71, 72]
    assert table["hippocampus_right"] == [inv["Hippocampus_R"]]
    assert list(table)[:2] == ["third_ventricle", "fourth_ventricle"]


def test_seg35_table_refuses_other_naming():
    names = {k: v for k, v in REGIONS.items() if "Amygdala" not in v}
    with pytest.raises(ixi.IXISourceError, match="amygdala"):
        ixi.seg35_table(names)


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(__file__), "..", ixi.DEFAULT_SOURCE)),
                    reason="the real IXI folder is not beside this checkout")
def test_seg35_table_of_the_real_labels_uses_every_region():
    names = ixi.read_muse_names(os.path.join(os.path.dirname(__file__), "..", ixi.DEFAULT_SOURCE, "muse_labels.csv"))
    table = ixi.seg35_table(names)
    assert len(table) == 35 and sorted(i for v in table.values() for i in v) == sorted(names)
    assert len(table["cerebral_cortex_left"]) == len(table["cerebral_cortex_right"]) > 40


def test_split_roles_are_disjoint_and_recorded(built):
    dj = json.loads((built / "dataset.json").read_text())
    o = dj["oneshot"]
    atlas = _cases(built, "imagesTr", "_0000.nii.gz")
    pool = _cases(built, "imagesUnlabelled", "_0000.nii.gz")
    test = _cases(built, "imagesTs", "_0000.nii.gz")
    val = _cases(built, "imagesVal", "_0000.nii.gz")
    assert len(atlas) == 1 and len(test) == 3 and len(val) == 2 and len(pool) == N_SUBJECTS - 6
    assert len(set(atlas + pool + test + val)) == N_SUBJECTS
    assert o["atlas"] == atlas[0] and o["split"]["unlabelled"] == pool and o["split"]["test"] == test
    assert o["validation"]["cases"] == val
    # the atlas is the top of the image-only ranking of the non-held-out scans
    ranking = [c for c, _ in o["atlas_choice"]["ranking"]]
    assert ranking[0] == atlas[0] and sorted(ranking) == sorted(atlas + pool)
    # every image has its label, the pool's kept apart
    assert _cases(built, "labelsUnlabelledOracle", ".nii.gz") == pool
    assert _cases(built, "labelsVal", ".nii.gz") == val and _cases(built, "labelsTs", ".nii.gz") == test
    assert len(dj["labels"]) == 36 and dj["numTraining"] == 1


def test_scans_are_skull_stripped_cropped_and_keep_their_geometry(built, source):
    dj = json.loads((built / "dataset.json").read_text())
    lut = ixi.label_lookup(ixi.seg35_table(REGIONS))
    case = dj["oneshot"]["split"]["test"][0]
    src = next((source / "t1").glob(case + "-*"))
    orig = sitk.ReadImage(str(src))
    orig_lab = sitk.ReadImage(str(src).replace("/t1/", "/dlmuse_seg/").replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz"))
    img = sitk.ReadImage(str(built / "imagesTs" / f"{case}_0000.nii.gz"))
    lab = sitk.ReadImage(str(built / "labelsTs" / f"{case}.nii.gz"))
    assert img.GetSize() == lab.GetSize() and all(a < b for a, b in zip(img.GetSize(), orig.GetSize()))
    assert img.GetDirection() == pytest.approx(orig.GetDirection()) and img.GetSpacing() == orig.GetSpacing()
    a, la = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    assert a.max() < 300  # the skull (400) is gone
    # the same physical point has the same voxel before and after (native position kept, only cropped)
    for idx in [(0, 0, 0), tuple(s // 2 for s in img.GetSize()), tuple(s - 1 for s in img.GetSize())]:
        p = img.TransformIndexToPhysicalPoint(idx)
        o = orig.TransformPhysicalPointToIndex(p)
        assert lab[idx] == lut[orig_lab[o]]
        if orig_lab[o] > 0:
            assert img[idx] == pytest.approx(orig[o])
        else:
            assert img[idx] == 0.0


def test_same_seed_same_split_and_pool_subsets_are_nested(source, tmp_path):
    a = Path(ixi.make_ixi_dataset(str(tmp_path / "a"), source=str(source), verbose=False, **SMALL))
    b = Path(ixi.make_ixi_dataset(str(tmp_path / "b"), source=str(source), verbose=False, pool=2, **SMALL))
    oa, ob = (json.loads((f / "dataset.json").read_text())["oneshot"] for f in (a, b))
    assert oa["split"]["test"] == ob["split"]["test"] and oa["atlas"] == ob["atlas"]
    assert len(ob["split"]["unlabelled"]) == 2 and set(ob["split"]["unlabelled"]) < set(oa["split"]["unlabelled"])
    assert ob["split"]["unlabelled"] == sorted(oa["pool_order"][:2])
    case = oa["split"]["test"][0]
    for sub, name in (("imagesTs", f"{case}_0000.nii.gz"), ("labelsTs", f"{case}.nii.gz")):
        assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--source", "/nonexistent/ixi"], "IXI source folder /nonexistent/ixi not found: pass --source DIR"),
    (["--source", "SRC"], f"{N_SUBJECTS} subjects: need at least 63 (50 test, 10 validation"),
])
def test_bad_source_fails_in_one_line(source, tmp_path, args, message):
    args = [a if a != "SRC" else str(source) for a in args]
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "make-dataset", "ixi", "--raw", str(tmp_path / "raw"), *args],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "raw").exists()


def test_bad_pool_fails_before_any_compute(source, tmp_path):
    with pytest.raises(ixi.IXISourceError, match="--pool 4: the pool has 1 to 3 scans here"):
        ixi.make_ixi_dataset(str(tmp_path / "raw"), source=str(source), pool=4, verbose=False, **SMALL)
    assert not (tmp_path / "raw").exists()


def test_default_source_is_named_when_missing(tmp_path):
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "make-dataset", "ixi", "--raw", str(tmp_path / "raw")],
                       capture_output=True, text=True, cwd=tmp_path)  # no ../shared/data/ixi from here
    assert r.returncode != 0 and "pass --source DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_validate_accepts_it_and_sees_no_held_out_scan_in_the_pool(built):
    from nnunetv2_oneshot.validation import validate_oneshot_dataset
    ds = validate_oneshot_dataset(str(built), check_held_out=True)
    assert ds.held_out_in_pool == [] and ds.atlas == json.loads((built / "dataset.json").read_text())["oneshot"]["atlas"]


# ------------------------------------------------------------------------------------------------ atlas ranking
def _blob(shape, centre, radii, cavity=False, scale=1.0):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    d = np.sqrt(sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)))
    img = np.where(d <= 1, 100.0 - 40 * d, 0.0)
    if cavity:  # an inner structure no affine map can make out of the others'
        img[(d < 0.45)] = 10.0
    im = sitk.GetImageFromArray((img * scale).astype(np.float32))
    im.SetSpacing((2.0, 2.0, 2.0))
    return im


def test_atlas_ranking_puts_the_odd_scan_last_and_is_deterministic():
    shape = (40, 44, 36)
    rng = np.random.default_rng(1)
    images = {f"s{k}": _blob(shape, np.array(shape) / 2 + rng.uniform(-3, 3, 3),
                             np.array(shape) * rng.uniform(0.28, 0.34, 3), scale=rng.uniform(0.5, 2))
              for k in range(5)}
    images["odd"] = _blob(shape, np.array(shape) / 2, np.array(shape) * 0.3, cavity=True)
    ranking = rank_atlas_candidates(images, shrink=2)
    assert [c for c, _ in ranking][-1] == "odd"
    assert sorted(c for c, _ in ranking) == sorted(images)
    assert all(-1 <= s <= 1 for _, s in ranking) and [s for _, s in ranking] == sorted((s for _, s in ranking),
                                                                                        reverse=True)
    assert rank_atlas_candidates(images, shrink=2) == ranking


def test_atlas_ranking_needs_three_images():
    with pytest.raises(ValueError, match="at least 3"):
        rank_atlas_candidates({"a": _blob((20, 20, 20), (10, 10, 10), (6, 6, 6)),
                               "b": _blob((20, 20, 20), (10, 10, 10), (6, 6, 6))})


def test_suggest_atlas_ranks_a_folder_and_a_dataset(built, tmp_path):
    pool = built / "imagesUnlabelled"
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "suggest-atlas", str(pool), "--shrink", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(row[1] for row in rows) == _cases(built, "imagesUnlabelled", "_0000.nii.gz")
    assert f"label {rows[0][1]} first" in r.stdout
    env = dict(os.environ, nnUNet_raw=str(built.parent))
    by_id = subprocess.run([f"{BIN}/nnunetv2-oneshot", "suggest-atlas", "992", "--shrink", "1"], env=env,
                           capture_output=True, text=True)
    assert by_id.returncode == 0 and [line.split() for line in by_id.stdout.splitlines()
                                      if line.strip()[:1].isdigit()] == rows
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "suggest-atlas", str(empty)], capture_output=True, text=True)
    assert r.returncode != 0 and "no images ending in .nii.gz" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_docs_print_the_label_table():
    docs = (Path(__file__).parents[1] / "docs" / "DATASETS.md").read_text()
    for name in ixi.seg35_table(REGIONS):  # every structure, whatever the source's numbering
        assert f"| {name} |" in docs
    real = Path(__file__).parents[1] / ixi.DEFAULT_SOURCE / "muse_labels.csv"
    if real.is_file():  # beside the project: the table exactly as the command prints it
        names = ixi.read_muse_names(str(real))
        assert ixi.structures_markdown(ixi.seg35_table(names), names) in docs
