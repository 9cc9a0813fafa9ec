"""Shared machinery of the embedded dataset generators.

* writing a one-shot raw dataset safely (temporary folder, marker file, refusal to touch user data),
* NIfTI output with exact geometry (SimpleITK, LPS world coordinates),
* random smooth deformations, affine jitter and bias fields, deterministic from a ``numpy.random.Generator``.

Array convention in this module: volumes are numpy arrays indexed ``[i, j, k]`` along the image axes
(x fastest in the file), i.e. the transpose of ``SimpleITK.GetArrayFromImage``. ``Geometry`` holds the
ITK spacing / origin / direction of the same axes.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunetv2_oneshot.constants import (DATASET_JSON_KEY, GENERATED_MARKER, ORACLE_LABELS_FOLDER,
                                        UNLABELLED_FOLDER)

FILE_ENDING = ".nii.gz"
#: folder names of a one-shot raw dataset, by role
FOLDERS = {
    "images_train": "imagesTr",
    "labels_train": "labelsTr",
    "images_unlabelled": UNLABELLED_FOLDER,
    "labels_oracle": ORACLE_LABELS_FOLDER,
    "images_test": "imagesTs",
    "labels_test": "labelsTs",
}
# (image folder, label folder) of each role a generated case can have
ROLE_FOLDERS = {"atlas": ("images_train", "labels_train"), "unlabelled": ("images_unlabelled", "labels_oracle"),
                "test": ("images_test", "labels_test")}


# ----------------------------------------------------------------------------------------------------------------------
# randomness
# ----------------------------------------------------------------------------------------------------------------------
def case_rng(seed: int, *keys) -> np.random.Generator:
    """Independent generator for one case: depends only on ``seed`` and ``keys`` (ints or strings), not on the
    order in which cases are generated. Strings are hashed with crc32 (stable across runs and platforms)."""
    entropy = [int(seed)]
    for k in keys:
        entropy.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k))
    return np.random.default_rng(np.random.SeedSequence(entropy))


def smooth_random_field(shape: Sequence[int], rng: np.random.Generator, control_shape: Sequence[int],
                        num_components: int = 1) -> np.ndarray:
    """Smooth random field(s): i.i.d. N(0, 1) values on a coarse control grid, cubic-spline interpolated
    to ``shape`` (control grid corners on the volume corners). Returns ``(num_components, *shape)`` float32,
    NOT normalised."""
    control_shape = tuple(max(2, int(c)) for c in control_shape)
    # the 3D cubic-spline zoom is separable: one small interpolation matrix per axis (same result as ndi.zoom of
    # the control grid with order=3, mode="nearest", grid_mode=False, at a fraction of the cost)
    weights = [_zoom_matrix(c, s) for c, s in zip(control_shape, shape)]
    out = np.empty((num_components, *shape), np.float32)
    for c in range(num_components):
        f = rng.standard_normal(control_shape)
        for axis, w in enumerate(weights):
            f = np.moveaxis(np.tensordot(w, f, axes=([1], [axis])), 0, axis)
        out[c] = f
    return out


def _zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1D cubic-spline interpolation, corners aligned."""
    eye = np.eye(n_in)
    w = ndi.zoom(eye, (n_out / n_in, 1.0), order=3, mode="nearest", grid_mode=False)
    if w.shape[0] != n_out:  # float rounding in zoom's output size
        w = ndi.map_coordinates(eye, np.meshgrid(np.linspace(0, n_in - 1, n_out), np.arange(n_in), indexing="ij"),
                                order=3, mode="nearest")
    return w


def random_smooth_displacement(shape: Sequence[int], rng: np.random.Generator, max_displacement_mm: float,
                               control_spacing_mm: float | Sequence[float], spacing: Sequence[float] = (1., 1., 1.),
                               axis_scale: Sequence[float] = (1., 1., 1.)) -> np.ndarray:
    """Random smooth displacement field on a grid of ``shape`` with voxel size ``spacing`` (mm).

    A coarse control grid (one point every ``control_spacing_mm``, at least 2 per axis) gets N(0, 1) vectors,
    which are cubic-spline interpolated to the grid; the field is then rescaled so that its largest vector
    length is ``max_displacement_mm * U(0.5, 1)``. ``axis_scale`` damps components per axis (e.g. through-plane
    for thick-slice CT) before that rescaling.

    Returns ``(3, *shape)`` float32 displacement in mm (physical, along the image axes)."""
    spacing = np.asarray(spacing, float)
    cs = np.broadcast_to(np.asarray(control_spacing_mm, float), (3,))
    extent = np.asarray(shape) * spacing
    control_shape = [int(np.ceil(e / c)) + 1 for e, c in zip(extent, cs)]
    field = smooth_random_field(shape, rng, control_shape, 3)
    field *= np.asarray(axis_scale, np.float32)[:, None, None, None]
    norm = np.sqrt((field ** 2).sum(0)).max()
    amplitude = max_displacement_mm * rng.uniform(0.5, 1.0)
    if norm > 0:
        field *= np.float32(amplitude / norm)
    return field


def random_linear(rng: np.random.Generator, max_rotation_deg: Sequence[float] | float, max_log_scale: float,
                  max_log_aniso: float = 0.0) -> np.ndarray:
    """Random 3x3 linear map (mm -> mm): rotations about the three axes, uniform in ±max_rotation_deg, times a
    global scale exp(U(±max_log_scale)) and per-axis scales exp(U(±max_log_aniso))."""
    rot = np.broadcast_to(np.asarray(max_rotation_deg, float), (3,))
    angles = np.deg2rad(rng.uniform(-rot, rot))
    mats = []
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i] = c; m[j, j] = c; m[i, j] = -s; m[j, i] = s
        mats.append(m)
    scale = np.exp(rng.uniform(-max_log_scale, max_log_scale)) * np.exp(rng.uniform(-max_log_aniso, max_log_aniso, 3))
    return mats[0] @ mats[1] @ mats[2] @ np.diag(scale)


def source_coordinates(shape: Sequence[int], spacing: Sequence[float], origin_mm: Sequence[float],
                       src_spacing: Sequence[float], src_origin_mm: Sequence[float],
                       linear: Optional[np.ndarray] = None, center_mm: Optional[Sequence[float]] = None,
                       displacement_mm: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxel coordinates in a source grid of the points of a target grid moved by a transform.

    Both grids are axis-aligned in one common mm frame (the image axes): target voxel ``i`` sits at
    ``origin_mm + i * spacing``, source voxel ``j`` at ``src_origin_mm + j * src_spacing``. The target point ``p``
    is mapped to ``center + linear @ (p - center) + displacement(p)`` (a pull-back transform), then to source
    voxel coordinates. Returns ``(3, *shape)`` float64 for ``scipy.ndimage.map_coordinates``."""
    axes = [o + np.arange(n) * s for n, s, o in zip(shape, spacing, origin_mm)]
    p = np.stack(np.meshgrid(*axes, indexing="ij"), 0)
    if linear is not None:
        c = np.asarray(center_mm, float).reshape(3, 1, 1, 1)
        p = c + np.einsum("ij,j...->i...", np.asarray(linear, float), p - c)
    if displacement_mm is not None:
        p = p + displacement_mm
    src_o = np.asarray(src_origin_mm, float).reshape(3, 1, 1, 1)
    src_s = np.asarray(src_spacing, float).reshape(3, 1, 1, 1)
    return (p - src_o) / src_s


def warp(volume: np.ndarray, coordinates: np.ndarray, order: int, mode: str = "nearest", cval: float = 0.0
         ) -> np.ndarray:
    """Sample ``volume`` at ``coordinates`` (3, ...); ``order=0`` for labels (dtype kept), 1 for images."""
    if order == 0:
        out = ndi.map_coordinates(volume, coordinates, order=0, mode=mode, cval=cval, prefilter=False)
        return out.astype(volume.dtype, copy=False)
    return ndi.map_coordinates(volume.astype(np.float32, copy=False), coordinates, order=order, mode=mode,
                               cval=cval, prefilter=order > 1).astype(np.float32)


def random_bias_field(shape: Sequence[int], rng: np.random.Generator, max_log_amplitude: float,
                      control_shape: Sequence[int] = (4, 4, 4)) -> np.ndarray:
    """Smooth multiplicative bias field exp(b) with max |b| = max_log_amplitude * U(0.5, 1), float32."""
    b = smooth_random_field(shape, rng, control_shape, 1)[0]
    b *= np.float32(max_log_amplitude * rng.uniform(0.5, 1.0) / max(np.abs(b).max(), 1e-8))
    return np.exp(b).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# geometry and NIfTI output
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """ITK geometry (LPS world) of an array indexed ``[i, j, k]``."""
    spacing: tuple
    origin: tuple
    direction: tuple  # 9 numbers, row-major, columns = world direction of each array axis

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}


def array_to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetSpacing([float(s) for s in geometry.spacing])
    img.SetOrigin([float(o) for o in geometry.origin])
    img.SetDirection([float(d) for d in geometry.direction])
    return img


def write_case(folder_image: str, folder_label: Optional[str], case: str, image: np.ndarray,
               label: Optional[np.ndarray], geometry: Geometry) -> None:
    """Write ``{case}_0000.nii.gz`` (float32) and, if given, ``{case}.nii.gz`` (uint8) with identical geometry."""
    if not np.all(np.isfinite(image)):
        raise ValueError(f"non-finite values in image of {case}")
    sitk.WriteImage(array_to_sitk(image.astype(np.float32, copy=False), geometry),
                    os.path.join(folder_image, f"{case}_0000{FILE_ENDING}"), True)
    if label is not None:
        if label.shape != image.shape:
            raise ValueError(f"{case}: image shape {image.shape} != label shape {label.shape}")
        sitk.WriteImage(array_to_sitk(label.astype(np.uint8, copy=False), geometry),
                        os.path.join(folder_label, f"{case}{FILE_ENDING}"), True)


def read_array(path: str) -> tuple[np.ndarray, Geometry]:
    """Inverse of :func:`write_case` for one file: array ``[i, j, k]`` and its geometry."""
    img = sitk.ReadImage(path)
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    return arr, Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))


# ----------------------------------------------------------------------------------------------------------------------
# safe dataset folder handling
# ----------------------------------------------------------------------------------------------------------------------
def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 0 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 0..999, got {dataset_id}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _check_target(raw_root: str, folder_name: str, overwrite: bool) -> str:
    target = os.path.join(raw_root, folder_name)
    prefix = folder_name.split("_")[0] + "_"
    if os.path.isdir(raw_root):
        clash = sorted(d for d in os.listdir(raw_root)
                       if d.startswith(prefix) and d != folder_name and os.path.isdir(os.path.join(raw_root, d)))
        if clash:
            raise FileExistsError(f"{os.path.join(raw_root, clash[0])} already uses the id of {folder_name}; "
                                  f"nnU-Net would find two datasets with this id: choose another dataset id")
    if os.path.lexists(target):
        if not os.path.isfile(os.path.join(target, GENERATED_MARKER)):
            raise FileExistsError(f"{target} exists and was not generated by nnunetv2_oneshot: refusing to touch it")
        if not overwrite:
            raise FileExistsError(f"{target} already exists (generated earlier): pass --overwrite to rebuild it")
    return target


@contextmanager
def dataset_writer(raw_root: str, folder_name: str, overwrite: bool) -> Iterator[str]:
    """Yield a temporary folder (sibling of the target, hidden name) with the standard sub-folders; on success
    it replaces the target atomically-ish (old generated copy moved aside, new renamed in, old deleted); on any
    exception the temporary folder is removed and the target is left as it was."""
    target = _check_target(raw_root, folder_name, overwrite)
    os.makedirs(raw_root, exist_ok=True)
    tmp = os.path.join(raw_root, f".tmp_{folder_name}_{os.getpid()}")
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        for f in FOLDERS.values():
            os.makedirs(os.path.join(tmp, f))
        yield tmp
        _check_target(raw_root, folder_name, overwrite)  # state may have changed while we worked
        if os.path.lexists(target):
            old = os.path.join(raw_root, f".old_{folder_name}_{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def write_dataset_json(folder: str, channel_names: dict, labels: dict, file_ending: str, oneshot: dict,
                       **extra) -> dict:
    """Standard nnU-Net dataset.json (numTraining = labelled cases in imagesTr) plus our ``oneshot`` block."""
    num_training = len([f for f in os.listdir(os.path.join(folder, FOLDERS["labels_train"]))
                        if f.endswith(file_ending)])
    ds = {"channel_names": channel_names, "labels": labels, "numTraining": num_training,
          "file_ending": file_ending, **extra, DATASET_JSON_KEY: oneshot}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(ds, f, indent=4)
    return ds


def write_marker(folder: str, generator: str, seed: int) -> None:
    from nnunetv2_oneshot import __version__
    with open(os.path.join(folder, GENERATED_MARKER), "w") as f:
        json.dump({"generator": generator, "seed": int(seed), "version": __version__}, f)
        f.write("\n")


class Progress:
    """Concise progress printing, silent unless verbose."""

    def __init__(self, verbose: bool, prefix: str):
        self.verbose, self.prefix = verbose, prefix

    def __call__(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.prefix}] {msg}", flush=True)


def write_role_case(dataset_folder: str, role: str, case: str, image, label, geometry) -> None:
    """Writes a case into the image/label folders of its role (atlas, unlabelled or test)."""
    fi, fl = ROLE_FOLDERS[role]
    write_case(os.path.join(dataset_folder, FOLDERS[fi]), os.path.join(dataset_folder, FOLDERS[fl]), case, image,
               label, geometry)


def oneshot_block(split: dict, seed: int, source: str, donors: dict, case_donor: dict, **extra) -> dict:
    """The ``"oneshot"`` entry of a generated dataset.json: folders, atlas, split by role and donor, provenance."""
    return {"unlabelled_folder": FOLDERS["images_unlabelled"], "oracle_labels_folder": FOLDERS["labels_oracle"],
            "num_unlabelled": len(split["unlabelled"]), "atlas": split["atlas"][0], "source": source,
            "seed": int(seed),
            "split": {"atlas": split["atlas"], "unlabelled": split["unlabelled"], "test": split["test"],
                      "donors": donors, "case_donor": case_donor},
            **extra}
