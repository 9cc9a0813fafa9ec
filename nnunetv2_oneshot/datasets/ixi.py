"""Dataset992_OneShotIXI: a one-shot benchmark on REAL brain MRI, built from a folder the user has.

Source layout (``../shared/data/ixi`` beside the project, or ``--source DIR``; it is only ever read):

    t1/IXI<id>-<site>-<n>_T1.nii.gz                 T1 head MRI
    dlmuse_seg/IXI<id>-<site>-<n>_T1_DLMUSE.nii.gz  DLMUSE label map on the same grid (MUSE indices)
    muse_labels.csv                                 Index,Code,Name of the single MUSE regions

Preparation, like OASIS ``aligned_norm`` without the alignment: the label map's brain mask (every labelled
voxel, cortical CSF included, holes filled) skull-strips the image, standing in for a skull-stripping tool,
and each scan is cropped to its brain with a margin. Scans keep their own orientation and position: users'
scans are not aligned across subjects either.

Labels: ``seg35`` (default) merges MUSE regions into 35 structures in the style of OASIS seg35 / FreeSurfer
aseg (:data:`SEG35`, built from the names in ``muse_labels.csv``); ``muse`` keeps all single MUSE regions
(148 on IXI), a much harder set.

Split (deterministic from ``seed``, recorded in dataset.json's ``oneshot`` block): a seeded permutation of
the sorted subjects gives ``num_test`` test scans (imagesTs/labelsTs: reported figures only) and
``num_validation`` validation scans (imagesVal/labelsVal: every development decision). Among the rest the
atlas is the most central scan by :func:`nnunetv2_oneshot.registration.atlas_choice.rank_atlas_candidates`
(images only, no label read); the others form the unlabelled pool, their labels kept apart in
labelsUnlabelledOracle for the upper bound. ``pool`` keeps the first N of the pool in a seeded order, so
smaller pools are nested in larger ones.
"""
from __future__ import annotations

import csv
import os
import re
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunetv2_oneshot.constants import IXI_DATASET_ID, VALIDATION_IMAGES, VALIDATION_LABELS
from nnunetv2_oneshot.datasets.common import (FILE_ENDING, FOLDERS, Progress, case_rng, dataset_folder_name,
                                              dataset_writer, oneshot_block, write_dataset_json, write_marker)

NAME = "OneShotIXI"
#: where ``make-dataset ixi`` looks when no --source is given: the project's shared data folder, from the
#: directory the command runs in (the repository root in README's commands)
DEFAULT_SOURCE = os.path.join("..", "shared", "data", "ixi")
#: crop margin around the brain mask, in voxels (6 mm at 2 mm)
MARGIN_VOXELS = 3
NUM_TEST = 50
NUM_VALIDATION = 10

_SIDES = (("left", "_L"), ("right", "_R"))
#: structure -> how its MUSE regions are recognised by name. Per hemisphere (``{side}`` = _L/_R suffix):
#: a regex on the name without its side suffix. ``cortex`` takes every lateralised region that no other
#: structure claims and that is not white matter (the 118 cortical parcels on IXI).
_LATERAL = [
    ("cerebral_white_matter", r"(Frontal|Occipital|Parietal|Temporal)_WM|Fornix|(Anterior|Posterior)LimbInternalCapsule"),
    ("cerebral_cortex", None),
    ("lateral_ventricle", r"LateralVentricle"),
    ("inferior_lateral_ventricle", r"InfLatVentricle"),
    ("cerebellum_white_matter", r"Cerebellum_WM"),
    ("cerebellum_cortex", r"CerebellumExterior"),
    ("thalamus", r"ThalamusProper"),
    ("caudate", r"Caudate"),
    ("putamen", r"Putamen"),
    ("pallidum", r"Pallidum"),
    ("hippocampus", r"Hippocampus"),
    ("amygdala", r"Amygdala"),
    ("accumbens", r"AccumbensArea"),
    ("ventral_dc", r"VentralDC"),
    ("basal_forebrain", r"BasalForebrain"),
]
_MIDLINE = [
    ("third_ventricle", r"3rdVentricle"),
    ("fourth_ventricle", r"4thVentricle"),
    ("brainstem", r"BrainStem"),
    ("cerebellar_vermis", r"CerebellarVermalLobules_.*"),
    ("corpus_callosum", r"CorpusCallosum"),
]


class IXISourceError(ValueError):
    """The source folder is missing or not in the expected layout: the message is one line."""


def read_muse_names(path: str) -> Dict[int, str]:
    """``muse_labels.csv`` -> {MUSE index: region name}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"Index", "Name"} <= set(rows[0]):
        raise IXISourceError(f"{path}: expected a CSV with columns Index,Name")
    return {int(r["Index"]): r["Name"].strip() for r in rows}


def seg35_table(muse_names: Dict[int, str]) -> Dict[str, List[int]]:
    """The 35-structure set: {structure name: MUSE indices}, in label order (label 1 first). Built from the
    region names, so a renumbered label file gives the same structures; every region is used once at most,
    and a structure that matches no region is an error (a different naming scheme must not pass silently)."""
    table: Dict[str, List[int]] = {}
    used = set()
    lateral = {i: n for i, n in muse_names.items() if n.endswith(("_L", "_R"))}
    for name, pattern in _MIDLINE:
        table[name] = sorted(i for i, n in muse_names.items() if re.fullmatch(pattern, n))
    for side, suffix in _SIDES:
        for name, pattern in _LATERAL:
            if pattern is None:
                continue
            table[f"{name}_{side}"] = sorted(i for i, n in lateral.items()
                                             if n.endswith(suffix) and re.fullmatch(pattern, n[:-2]))
    for ids in table.values():
        used.update(ids)
    for side, suffix in _SIDES:  # cortex: what is left of the hemisphere
        table[f"cerebral_cortex_{side}"] = sorted(i for i, n in lateral.items() if n.endswith(suffix) and i not in used)
    empty = [k for k, v in table.items() if not v]
    if empty:
        raise IXISourceError(f"muse_labels.csv names no region for {empty[0]}: not the MUSE naming this table reads")
    order = [n for n, _ in _MIDLINE] + [f"{n}_{side}" for side, _ in _SIDES for n, _ in _LATERAL]
    return {k: table[k] for k in sorted(table, key=order.index)}


def structures_markdown(table: Dict[str, List[int]], muse_names: Dict[int, str]) -> str:
    """The label table as docs/DATASETS.md prints it: label, structure, the MUSE regions it merges."""
    rows = ["| label | structure | MUSE regions (index) |", "|---|---|---|"]
    for label, (name, ids) in enumerate(table.items(), start=1):
        if name.startswith("cerebral_cortex_"):
            regions = (f"the {len(ids)} cortical parcels of that hemisphere (every lateralised region that no "
                       f"other structure takes)")
        else:
            regions = ", ".join(f"{muse_names[i]} ({i})" for i in ids)
        rows.append(f"| {label} | {name} | {regions} |")
    return "\n".join(rows)


def muse_table(muse_names: Dict[int, str]) -> Dict[str, List[int]]:
    """The full parcellation: one structure per MUSE region, in index order."""
    return {muse_names[i]: [i] for i in sorted(muse_names)}


LABEL_SETS = {"seg35": seg35_table, "muse": muse_table}


def label_lookup(table: Dict[str, List[int]]) -> np.ndarray:
    """MUSE index -> output label (0 for everything not in ``table``), as a lookup array."""
    lut = np.zeros(max(max(v) for v in table.values()) + 1, np.uint8 if len(table) < 256 else np.uint16)
    for label, ids in enumerate(table.values(), start=1):
        lut[ids] = label
    return lut


def find_subjects(source: str) -> Dict[str, tuple]:
    """{case id: (T1 path, label path)} of every subject that has both; case id = ``IXI<id>``."""
    if not os.path.isdir(source):
        raise IXISourceError(f"IXI source folder {source} not found: pass --source DIR (a folder with t1/, "
                             f"dlmuse_seg/ and muse_labels.csv)")
    for sub in ("t1", "dlmuse_seg", "muse_labels.csv"):
        if not os.path.exists(os.path.join(source, sub)):
            raise IXISourceError(f"{source} has no {sub}: expected t1/, dlmuse_seg/ and muse_labels.csv")
    out = {}
    for f in sorted(os.listdir(os.path.join(source, "t1"))):
        m = re.fullmatch(r"(IXI\d+)-.+_T1\.nii\.gz", f)
        if not m:
            continue
        seg = os.path.join(source, "dlmuse_seg", f.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz"))
        if not os.path.isfile(seg):
            continue
        if m.group(1) in out:
            raise IXISourceError(f"two T1 files for subject {m.group(1)} in {source}/t1")
        out[m.group(1)] = (os.path.join(source, "t1", f), seg)
    return out


def prepare_subject(t1_path: str, seg_path: str, lut: np.ndarray, margin: int = MARGIN_VOXELS):
    """(image, label) SimpleITK images of one subject: skull-stripped by the label map's brain mask (holes
    filled), cropped to it with ``margin`` voxels (within the scan), MUSE indices mapped through ``lut``.
    Geometry is the scan's own (the crop moves the origin, nothing else)."""
    image = sitk.ReadImage(t1_path, sitk.sitkFloat32)
    seg = sitk.ReadImage(seg_path)
    if image.GetSize() != seg.GetSize() or not np.allclose(image.GetSpacing(), seg.GetSpacing()) or \
            not np.allclose(image.GetOrigin(), seg.GetOrigin(), atol=1e-3) or \
            not np.allclose(image.GetDirection(), seg.GetDirection(), atol=1e-5):
        raise IXISourceError(f"{os.path.basename(seg_path)} does not share the grid of {os.path.basename(t1_path)}")
    muse = sitk.GetArrayFromImage(seg)  # (z, y, x)
    if muse.max() >= len(lut):
        lut = np.pad(lut, (0, int(muse.max()) + 1 - len(lut)))
    mask = ndi.binary_fill_holes(muse > 0)
    if not mask.any():
        raise IXISourceError(f"{os.path.basename(seg_path)} labels no voxel")
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    arr = sitk.GetArrayFromImage(image)
    arr = np.where(mask, arr, 0).astype(np.float32)[crop]
    lab = lut[muse][crop]
    start = [int(v) for v in lo[::-1]]  # (x, y, z) index of the crop's first voxel
    origin = image.TransformIndexToPhysicalPoint(start)
    out = []
    for a in (arr, lab):
        im = sitk.GetImageFromArray(np.ascontiguousarray(a))
        im.SetSpacing(image.GetSpacing())
        im.SetDirection(image.GetDirection())
        im.SetOrigin(origin)
        out.append(im)
    return out[0], out[1]


def split_subjects(cases: Sequence[str], seed: int, num_test: int = NUM_TEST,
                   num_validation: int = NUM_VALIDATION) -> dict:
    """{"test", "validation", "candidates"}: a seeded permutation of the SORTED case ids (never a directory
    listing's order); test and validation sorted, candidates (atlas + pool) in the permutation's order."""
    cases = sorted(cases)
    if len(cases) < num_test + num_validation + 3:
        raise IXISourceError(f"{len(cases)} subjects: need at least {num_test + num_validation + 3} "
                             f"({num_test} test, {num_validation} validation, an atlas and 2 unlabelled)")
    perm = [cases[i] for i in case_rng(seed, "ixi-split").permutation(len(cases))]
    return {"test": sorted(perm[:num_test]), "validation": sorted(perm[num_test:num_test + num_validation]),
            "candidates": perm[num_test + num_validation:]}


def make_ixi_dataset(raw_root: str, dataset_id: int = IXI_DATASET_ID, seed: int = 0, overwrite: bool = False,
                     verbose: bool = True, source: Optional[str] = None, pool: Optional[int] = None,
                     labels: str = "seg35", num_test: int = NUM_TEST,
                     num_validation: int = NUM_VALIDATION) -> str:
    """Write Dataset{id}_OneShotIXI into ``raw_root`` from the IXI folder ``source`` and return its path."""
    from nnunetv2_oneshot.registration.atlas_choice import rank_atlas_candidates

    source = source or DEFAULT_SOURCE
    subjects = find_subjects(source)  # one-line errors before any compute
    if labels not in LABEL_SETS:
        raise IXISourceError(f"unknown label set {labels!r}: choose from {sorted(LABEL_SETS)}")
    table = LABEL_SETS[labels](read_muse_names(os.path.join(source, "muse_labels.csv")))
    split = split_subjects(subjects, seed, num_test, num_validation)
    if pool is not None and not 1 <= pool <= len(split["candidates"]) - 1:
        raise IXISourceError(f"--pool {pool}: the pool has 1 to {len(split['candidates']) - 1} scans here")
    name = dataset_folder_name(dataset_id, NAME)
    log = Progress(verbose, "ixi")
    lut = label_lookup(table)
    t0 = time.time()
    with dataset_writer(raw_root, name, overwrite) as tmp:
        prepared = {}
        for i, case in enumerate(sorted(subjects)):
            prepared[case] = prepare_subject(*subjects[case], lut)
            if (i + 1) % 20 == 0 or i + 1 == len(subjects):
                log(f"{i + 1}/{len(subjects)} scans skull-stripped and cropped ({time.time() - t0:.0f} s)")
        log(f"ranking {len(split['candidates'])} candidate atlases by centrality (images only)")
        ranking = rank_atlas_candidates({c: prepared[c][0] for c in split["candidates"]}, seed=seed,
                                        progress=log)
        atlas = ranking[0][0]
        unlabelled = [c for c in split["candidates"] if c != atlas][:pool]
        roles = {"atlas": ("imagesTr", "labelsTr"), "unlabelled": (FOLDERS["images_unlabelled"],
                                                                   FOLDERS["labels_oracle"]),
                 "test": ("imagesTs", "labelsTs"), "validation": (VALIDATION_IMAGES, VALIDATION_LABELS)}
        for sub in roles["validation"]:
            os.makedirs(os.path.join(tmp, sub))
        by_role = {"atlas": [atlas], "unlabelled": sorted(unlabelled), "test": split["test"],
                   "validation": split["validation"]}
        for role, cases in by_role.items():
            fi, fl = roles[role]
            for case in cases:
                image, label = prepared[case]
                sitk.WriteImage(image, os.path.join(tmp, fi, f"{case}_0000{FILE_ENDING}"), True)
                sitk.WriteImage(label, os.path.join(tmp, fl, f"{case}{FILE_ENDING}"), True)
        log(f"written: atlas {atlas}, {len(unlabelled)} unlabelled, {len(split['validation'])} validation, "
            f"{len(split['test'])} test ({time.time() - t0:.0f} s)")
        split_block = {k: by_role[k] for k in ("atlas", "unlabelled", "test")}
        oneshot = oneshot_block(
            split_block, seed,
            source=f"IXI T1 (brain-development.org, CC BY-SA 3.0) with DLMUSE labels (NiChart), read from "
                   f"{os.path.abspath(source)}",
            donors={}, case_donor={}, label_set=labels,
            validation={"images": VALIDATION_IMAGES, "labels": VALIDATION_LABELS, "cases": split["validation"]},
            atlas_choice={"method": "rank_atlas_candidates (NCC to the mean of the others after affine "
                                    "alignment; images only)",
                          "ranking": [[c, round(s, 4)] for c, s in ranking]},
            pool_order=[c for c in split["candidates"] if c != atlas],
            structures={k: v for k, v in table.items()})
        dj_labels = {"background": 0, **{k: i for i, k in enumerate(table, start=1)}}
        write_dataset_json(tmp, {"0": "T1"}, dj_labels, FILE_ENDING, oneshot, name=name,
                           description="One-shot brain MRI segmentation on real IXI T1 scans (2 mm, skull-stripped "
                                       "with the label mask, cropped, native orientation); 1 atlas, unlabelled "
                                       "pool, validation and test splits. See docs/DATASETS.md of "
                                       "nnunetv2_oneshot.",
                           reference="IXI dataset (brain-development.org); DLMUSE (Doshi et al. 2016, MUSE; "
                                     "NiChart)",
                           licence="IXI images: CC BY-SA 3.0; labels: DLMUSE output published with NiChart",
                           converted_by=f"nnunetv2_oneshot.datasets.make_ixi_dataset(seed={int(seed)}, "
                                        f"labels={labels!r}, pool={pool})")
        write_marker(tmp, "ixi", seed)
    path = os.path.join(raw_root, name)
    log(f"done: {path} ({time.time() - t0:.0f} s)")
    return path

