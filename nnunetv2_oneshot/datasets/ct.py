"""Dataset991_OneShotChestCT: the labelled chest CT shipped with ``slicerio`` (3D Slicer sample data) as the
atlas, plus pseudo-subjects made from it by random affine + smooth deformations and intensity changes.

ALL subjects derive from ONE real scan: this dataset checks that the pipeline runs end to end (CI-sized), it
does not measure generalisation to new anatomy. See docs/DATASETS.md.
"""
from __future__ import annotations

import importlib.util
import os
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunetv2_oneshot.constants import CT_DATASET_ID
from nnunetv2_oneshot.datasets.common import (FILE_ENDING, Geometry, Progress, case_rng, dataset_folder_name,
                                              dataset_writer, random_linear, random_smooth_displacement,
                                              oneshot_block, source_coordinates, warp, write_dataset_json,
                                              write_role_case, write_marker)

NAME = "OneShotChestCT"
#: in-plane size after downsampling (the FOV is kept: 128 -> 96 voxels, 3.05 -> 4.06 mm); slices unchanged
INPLANE_SIZE = 96
NUM_UNLABELLED = 8
NUM_TEST = 3
#: deformation of pseudo-subjects
WARP_MAX_DISPLACEMENT_MM = 10.0  # ~2.5 in-plane voxels; through-plane component damped (AXIS_SCALE)
WARP_CONTROL_SPACING_MM = (80.0, 80.0, 100.0)
WARP_AXIS_SCALE = (1.0, 1.0, 0.4)
WARP_MAX_ROTATION_DEG = (2.0, 2.0, 5.0)  # about the image x, y, z axes (z = cranio-caudal)
WARP_MAX_LOG_SCALE = 0.05
WARP_MAX_LOG_ANISO = 0.03
#: intensity changes of pseudo-subjects: HU' = a * HU + b + N(0, sd), optional in-plane blur
HU_SCALE_RANGE = (0.95, 1.05)
HU_OFFSET_RANGE = (-25.0, 25.0)
HU_NOISE_SD_RANGE = (5.0, 20.0)
BLUR_SIGMA_RANGE = (0.0, 0.6)  # output voxels, in-plane
AIR_HU = -1024.0


def slicerio_data_dir() -> str:
    spec = importlib.util.find_spec("slicerio")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the CT dataset needs the 'slicerio' package (pip install slicerio); it ships the scan")
    d = os.path.join(list(spec.submodule_search_locations)[0], "data")
    for f in ("CTChest4.nrrd", "Segmentation.seg.nrrd"):
        if not os.path.isfile(os.path.join(d, f)):
            raise FileNotFoundError(f"{os.path.join(d, f)} not found in the installed slicerio package")
    return d


def load_source() -> tuple[np.ndarray, np.ndarray, Geometry, dict]:
    """CT (float32 HU, outside-FOV padding set to air) and label map ``[i, j, k]``, geometry, labels dict."""
    d = slicerio_data_dir()
    ct = sitk.ReadImage(os.path.join(d, "CTChest4.nrrd"))
    seg = sitk.ReadImage(os.path.join(d, "Segmentation.seg.nrrd"))
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        if not np.allclose(getattr(ct, attr)(), getattr(seg, attr)(), atol=1e-4):
            raise ValueError(f"slicerio sample: CT and segmentation differ in {attr[3:].lower()}")
    image = np.transpose(sitk.GetArrayFromImage(ct), (2, 1, 0)).astype(np.float32)
    label = np.transpose(sitk.GetArrayFromImage(seg), (2, 1, 0)).astype(np.uint8)
    image[image < AIR_HU] = AIR_HU  # -3024 = outside the reconstruction circle
    # segment names and label values from the .seg.nrrd header (Segment<k>_Name / _LabelValue / _Layer)
    keys = set(seg.GetMetaDataKeys())
    segments = []
    k = 0
    while f"Segment{k}_Name" in keys:
        layer = int(seg.GetMetaData(f"Segment{k}_Layer")) if f"Segment{k}_Layer" in keys else 0
        if layer != 0:
            raise ValueError("slicerio sample: overlapping segments (several layers) are not supported")
        segments.append((int(seg.GetMetaData(f"Segment{k}_LabelValue")), seg.GetMetaData(f"Segment{k}_Name")))
        k += 1
    segments.sort()
    if [v for v, _ in segments] != list(range(1, len(segments) + 1)):
        raise ValueError(f"slicerio sample: unexpected label values {segments}")
    labels = {"background": 0}
    labels.update({n.strip().replace(" ", "_"): v for v, n in segments})
    geometry = Geometry(tuple(ct.GetSpacing()), tuple(ct.GetOrigin()), tuple(ct.GetDirection()))
    return image, label, geometry, labels


def _output_grid(shape, geometry: Geometry) -> tuple[tuple, tuple, Geometry]:
    """Downsampled grid covering the same field of view: shape, spacing, geometry."""
    out_shape = (INPLANE_SIZE, INPLANE_SIZE, shape[2])
    factor = np.asarray(shape, float) / np.asarray(out_shape, float)
    spacing = np.asarray(geometry.spacing) * factor
    shift = np.asarray(geometry.spacing) * (factor - 1) / 2  # voxel-centre shift of output voxel 0 (mm, image axes)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    origin = np.asarray(geometry.origin) + direction @ shift
    return out_shape, tuple(spacing), Geometry(tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                                               geometry.direction)


def make_case(image: np.ndarray, label: np.ndarray, geometry: Geometry, rng: np.random.Generator | None
              ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Atlas (``rng=None``: plain downsampling) or a pseudo-subject (random transform + intensity change)."""
    out_shape, out_spacing, out_geometry = _output_grid(image.shape, geometry)
    src_spacing = np.asarray(geometry.spacing)
    # the two grids in one mm frame along the image axes: the source voxel 0 at 0, the output shifted by half voxels
    out_origin = src_spacing * (np.asarray(image.shape) / np.asarray(out_shape) - 1) / 2
    centre = (np.asarray(image.shape) - 1) / 2 * src_spacing
    linear = disp = None
    if rng is not None:
        linear = random_linear(rng, WARP_MAX_ROTATION_DEG, WARP_MAX_LOG_SCALE, WARP_MAX_LOG_ANISO)
        disp = random_smooth_displacement(out_shape, rng, WARP_MAX_DISPLACEMENT_MM, WARP_CONTROL_SPACING_MM,
                                          spacing=out_spacing, axis_scale=WARP_AXIS_SCALE)
    coords = source_coordinates(out_shape, out_spacing, out_origin, src_spacing, (0, 0, 0), linear=linear,
                                center_mm=centre, displacement_mm=disp)
    factor = np.asarray(out_spacing) / src_spacing
    antialias = ndi.gaussian_filter(image, sigma=np.maximum(factor - 1, 0) / 2)  # as skimage.transform.resize
    out_image = warp(antialias, coords, order=1, mode="nearest")
    out_label = warp(label, coords, order=0, mode="nearest")
    if rng is not None:
        sigma = rng.uniform(*BLUR_SIGMA_RANGE)
        out_image = ndi.gaussian_filter(out_image, (sigma, sigma, 0.0))
        out_image = out_image * rng.uniform(*HU_SCALE_RANGE) + rng.uniform(*HU_OFFSET_RANGE)
        out_image = out_image + rng.normal(0.0, rng.uniform(*HU_NOISE_SD_RANGE), out_shape)
    return out_image.astype(np.float32), out_label, out_geometry


def ct_cases() -> list[tuple[str, str]]:
    """(case id, role) in writing order."""
    return ([("ct_atlas", "atlas")] + [(f"ct_pool{i:02d}", "unlabelled") for i in range(1, NUM_UNLABELLED + 1)]
            + [(f"ct_test{i:02d}", "test") for i in range(1, NUM_TEST + 1)])


def make_ct_dataset(raw_root: str, dataset_id: int = CT_DATASET_ID, seed: int = 0, overwrite: bool = False,
                    verbose: bool = True) -> str:
    """Write Dataset{id}_OneShotChestCT into ``raw_root`` and return its path. See docs/DATASETS.md."""
    name = dataset_folder_name(dataset_id, NAME)
    log = Progress(verbose, "ct")
    with dataset_writer(raw_root, name, overwrite) as tmp:
        t0 = time.time()
        image, label, geometry, labels = load_source()
        split = {"atlas": [], "unlabelled": [], "test": []}
        out_shape = None
        for case, role in ct_cases():
            # every pseudo-subject has its own random stream keyed by its case id (pool and test are disjoint)
            rng = None if role == "atlas" else case_rng(seed, "ct", case)
            img, lab, geo = make_case(image, label, geometry, rng)
            out_shape = img.shape
            write_role_case(tmp, role, case, img, lab, geo)
            split[role].append(case)
        log(f"1 atlas + {NUM_UNLABELLED} unlabelled + {NUM_TEST} test pseudo-subjects of one scan, {out_shape} "
            f"({time.time() - t0:.1f} s)")
        oneshot = oneshot_block(
            split, seed,
            source="slicerio: 3D Slicer sample chest CT (CTChest4.nrrd) + Segmentation.seg.nrrd. ALL cases derive "
                   "from this ONE real scan (pseudo-subjects = random deformations + intensity changes)",
            donors={"atlas": ["CTChest4"], "unlabelled": ["CTChest4"], "test": ["CTChest4"]},
            case_donor={c: "CTChest4" for r in split.values() for c in r}, shape=list(out_shape))
        write_dataset_json(tmp, {"0": "CT"}, labels, FILE_ENDING, oneshot, name=name,
                           description="One-shot chest CT segmentation, CI-sized. All cases derive from ONE real "
                                       "scan. See docs/DATASETS.md of nnunetv2_oneshot.",
                           reference="3D Slicer sample data (CTChest), distributed with slicerio",
                           licence="slicerio (MIT); 3D Slicer sample data",
                           converted_by=f"nnunetv2_oneshot.datasets.make_ct_dataset(seed={int(seed)})")
        write_marker(tmp, "ct", seed)
    path = os.path.join(raw_root, name)
    log(f"done: {path} ({time.time() - t0:.1f} s)")
    return path
