"""Validation of a one-shot raw dataset, before any compute.

A one-shot dataset is a standard nnU-Net v2 raw dataset folder (``DatasetXXX_Name`` with ``dataset.json``,
``imagesTr/{case}_{channel:04d}{file_ending}`` and ``labelsTr/{case}{file_ending}``) that holds the 1..k
labelled cases (the first case in sorted order is the atlas), plus a folder of unlabelled images
(``imagesUnlabelled/`` by default, see :data:`nnunetv2_oneshot.constants.UNLABELLED_FOLDER`) named like
``imagesTr``. ``dataset.json`` may hold ``"oneshot": {"unlabelled_folder": "..."}`` to rename that folder.

:func:`validate_oneshot_dataset` checks everything that would otherwise make planning, preprocessing,
registration or training crash late (or, worse, silently train on garbage), and raises
:class:`OneShotDatasetError` with a one-line message that says what is wrong, names the file and says what
to do. It only reads: nothing is ever written into the dataset folder.

Order of the checks (cheap ones first, all of them before any compute):

1. dataset folder, ``dataset.json`` (exists, valid JSON, required keys, ``labels``, ``channel_names``,
   ``file_ending``, optional ``oneshot`` block);
2. folder structure and file names (``imagesTr``/``labelsTr``/unlabelled folder exist, file endings,
   ``{case}_{XXXX}`` naming, at least one labelled case, images <-> label pairing, at least one unlabelled
   image, channel files ``_0000.._{n-1}`` complete and nothing extra, no unlabelled case named like a
   labelled one, light naming check of ``imagesTs`` if present and ``check_held_out``);
3. headers of every file (SimpleITK ``ReadImageInformation``; truncated ``.nii(.gz)`` detection): readable,
   3D, channels of a case share shape and spacing, image/label shape and spacing agree;
4. voxels (only with ``check_voxels=True``; each file is fully read once, NIfTI with nibabel because
   SimpleITK silently turns NaN/inf of NIfTI files into 0): readable, no NaN/inf in images or labels, label
   values all declared in ``dataset.json``; with ``check_held_out=True``, which held-out scans (``imagesTs``,
   ``imagesVal``) have the same voxels as an unlabelled image (``OneShotDataset.held_out_in_pool``: a
   transductive set-up, reported, not an error). The ``imagesTs`` name check of step 2 also needs
   ``check_held_out``.

Spacings are compared with ``np.allclose`` defaults, like nnU-Net's ``verify_dataset_integrity``; origin or
direction differences between image and label only warn (as in nnU-Net). Folders ``imagesTs`` (file names
only, and their voxels for the transductive check), ``labelsTs``, ``labelsVal`` and
``labelsUnlabelledOracle`` are not read.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_oneshot.constants import DATASET_JSON_KEY, UNLABELLED_FOLDER, VALIDATION_IMAGES

__all__ = [
    "OneShotDatasetError",
    "OneShotDataset",
    "validate_oneshot_dataset",
    "get_unlabelled_folder_name",
    "SUPPORTED_FILE_ENDINGS",
]

#: 3D formats SimpleITK (nnU-Net's default reader for them) reads from a single file.
SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl")
#: endings nnU-Net reads with its 2D natural image reader
_2D_FILE_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: same tolerance as nnU-Net's verify_dataset_integrity (np.allclose defaults)
_SPACING_RTOL = 1e-5
_SPACING_ATOL = 1e-8
_MAX_LISTED = 10


class OneShotDatasetError(ValueError):
    """A one-shot dataset is not usable. The message is one line: what is wrong (naming the file), then what
    to do."""

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


@dataclass
class OneShotDataset:
    """A validated one-shot dataset. All paths are absolute; dicts are ordered by sorted case id."""

    folder: str
    dataset_json: dict
    #: case -> {"images": [one path per channel, in channel order], "label": path}
    labelled: Dict[str, Dict[str, object]]
    #: case -> [one path per channel, in channel order]
    unlabelled: Dict[str, List[str]]
    #: case id of the atlas (first labelled case in sorted order)
    atlas: str
    num_channels: int
    file_ending: str
    #: sorted label values declared in dataset.json (incl. 0 and the ignore label if any)
    label_values: List[int]
    #: name of the unlabelled folder inside ``folder`` (dataset.json "oneshot"/"unlabelled_folder")
    unlabelled_folder_name: str = UNLABELLED_FOLDER
    #: (held-out image file relative to ``folder``, unlabelled case) for every scan of imagesTs or imagesVal whose
    #: voxels equal an unlabelled image's: a transductive set-up, where the one-shot trainers see the held-out
    #: scans. None unless asked for (``check_held_out=True`` with ``check_voxels=True``).
    held_out_in_pool: Optional[List[Tuple[str, str]]] = None

    @property
    def unlabelled_folder(self) -> str:
        """Absolute path of the folder holding the unlabelled images."""
        return os.path.join(self.folder, self.unlabelled_folder_name)

    @property
    def labelled_cases(self) -> List[str]:
        return list(self.labelled.keys())

    @property
    def unlabelled_cases(self) -> List[str]:
        return list(self.unlabelled.keys())

    @property
    def num_labelled(self) -> int:
        return len(self.labelled)

    @property
    def num_unlabelled(self) -> int:
        return len(self.unlabelled)


def get_unlabelled_folder_name(dataset_json: dict) -> str:
    """Name of the unlabelled-images folder: ``dataset_json["oneshot"]["unlabelled_folder"]`` if given, else
    :data:`UNLABELLED_FOLDER`. Raises OneShotDatasetError on a malformed ``oneshot`` block."""
    block = dataset_json.get(DATASET_JSON_KEY)
    if block is None:
        return UNLABELLED_FOLDER
    if not isinstance(block, dict):
        raise OneShotDatasetError(
            f"dataset.json key '{DATASET_JSON_KEY}' must be a dict, got {type(block).__name__}; "
            f"use e.g. \"{DATASET_JSON_KEY}\": {{\"unlabelled_folder\": \"{UNLABELLED_FOLDER}\"}} or remove the key.")
    name = block.get("unlabelled_folder", UNLABELLED_FOLDER)
    if not isinstance(name, str) or not name.strip():
        raise OneShotDatasetError(
            f"dataset.json '{DATASET_JSON_KEY}'/'unlabelled_folder' must be a non-empty folder name, got {name!r}; "
            f"set it to the folder holding the unlabelled images (default '{UNLABELLED_FOLDER}').")
    return name


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------
def _fmt_list(values: Sequence, max_items: int = _MAX_LISTED) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:max_items])
    if len(values) > max_items:
        shown += f", ... ({len(values) - max_items} more)"
    return f"[{shown}]"


def _fmt_tuple(t: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in t) + ")"


def _fmt_value(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


class _Ctx:
    """Display paths relative to the dataset folder (shorter messages), absolute when outside of it."""

    def __init__(self, folder: str):
        self.folder = folder

    def rel(self, path: str) -> str:
        rel = os.path.relpath(path, self.folder)
        return path if rel.startswith("..") else rel


def _visible_files(directory: str) -> List[str]:
    """Sorted names of the regular, non-hidden files in directory (sub-folders and .DS_Store & co are ignored)."""
    return sorted(e.name for e in os.scandir(directory) if not e.name.startswith(".") and e.is_file())


def _resolve_folder(folder: str) -> str:
    """A path, or a dataset name/id under $nnUNet_raw (like nnU-Net's commands accept)."""
    folder = os.fspath(folder)
    if os.path.isdir(folder):
        return os.path.abspath(folder)
    raw = os.environ.get("nnUNet_raw")
    if raw and os.path.isdir(raw) and os.sep not in folder:
        if folder.startswith("Dataset") and os.path.isdir(os.path.join(raw, folder)):
            return os.path.abspath(os.path.join(raw, folder))
        if folder.isdigit():
            prefix = "Dataset%03d_" % int(folder)
            candidates = sorted(d for d in os.listdir(raw) if d.startswith(prefix)
                                and os.path.isdir(os.path.join(raw, d)))
            if len(candidates) == 1:
                return os.path.abspath(os.path.join(raw, candidates[0]))
            if len(candidates) > 1:
                raise OneShotDatasetError(
                    f"Dataset id {folder} is ambiguous in nnUNet_raw={raw}: {_fmt_list(candidates)}; "
                    f"pass the dataset folder path or full name instead.")
    raise OneShotDatasetError(
        f"Dataset folder not found: {folder}; pass the path of a raw dataset folder (DatasetXXX_Name), "
        f"or its name/id when it lies in $nnUNet_raw.")


# ----------------------------------------------------------------------------------------------------------------
# 1. dataset.json
# ----------------------------------------------------------------------------------------------------------------
def _load_dataset_json(folder: str) -> dict:
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        raise OneShotDatasetError(
            f"No dataset.json in {folder}; create one as for nnU-Net (channel_names, labels, numTraining, "
            f"file_ending).")
    try:
        with open(path, "r", encoding="utf-8") as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OneShotDatasetError(
            f"dataset.json is not valid JSON ({path}: {e}); fix its syntax (e.g. with a JSON linter).") from None
    if not isinstance(content, dict):
        raise OneShotDatasetError(
            f"dataset.json must hold a JSON object, got {type(content).__name__} ({path}); "
            f"write it as for nnU-Net (channel_names, labels, numTraining, file_ending).")
    missing = []
    if "channel_names" not in content and "modality" not in content:
        missing.append("channel_names")
    missing += [k for k in ("labels", "file_ending") if k not in content]
    if missing:
        raise OneShotDatasetError(
            f"dataset.json lacks required key(s) {', '.join(repr(k) for k in missing)} ({path}); add them as for nnU-Net, e.g. "
            f"\"channel_names\": {{\"0\": \"MRI\"}}, \"labels\": {{\"background\": 0, \"organ\": 1}}, "
            f"\"file_ending\": \".nii.gz\".")
    if "dataset" in content:
        raise OneShotDatasetError(
            f"dataset.json key 'dataset' (explicit file lists) is not supported for one-shot datasets ({path}); "
            f"put the files into imagesTr/labelsTr and remove the key.")
    return content


def _parse_labels(labels, path: str) -> List[int]:
    if not isinstance(labels, dict) or len(labels) == 0:
        raise OneShotDatasetError(
            f"dataset.json 'labels' must be a non-empty dict name -> value ({path}); "
            f"use e.g. {{\"background\": 0, \"organ\": 1}}.")
    values = {}
    for name, v in labels.items():
        if isinstance(v, (list, tuple)):
            if len(v) == 1:
                v = v[0]
            else:
                raise OneShotDatasetError(
                    f"dataset.json label '{name}' is region-based ({list(v)}), which is not supported yet by "
                    f"nnunetv2_oneshot ({path}); declare one integer value per label instead.")
        if isinstance(v, bool) or not isinstance(v, int):
            raise OneShotDatasetError(
                f"dataset.json label '{name}' has value {v!r}, which is not an integer ({path}); "
                f"use integer label values 0, 1, 2, ...")
        values[name] = int(v)
    if 0 not in values.values():
        raise OneShotDatasetError(
            f"dataset.json labels do not declare background 0 ({path}); add \"background\": 0.")
    if values.get("background") != 0:
        names0 = [n for n, v in values.items() if v == 0]
        raise OneShotDatasetError(
            f"dataset.json label 0 is named {names0[0]!r} but nnU-Net requires the name 'background' ({path}); "
            f"rename it to \"background\": 0.")
    dup = sorted({v for v in values.values() if list(values.values()).count(v) > 1})
    if dup:
        raise OneShotDatasetError(
            f"dataset.json declares label value(s) {_fmt_list(dup)} more than once ({path}); "
            f"give every label its own value.")
    sorted_values = sorted(values.values())
    if sorted_values != list(range(len(sorted_values))):
        raise OneShotDatasetError(
            f"dataset.json label values {_fmt_list(sorted_values)} are not consecutive 0..{len(sorted_values) - 1} "
            f"as nnU-Net requires ({path}); renumber the labels (and the label files) consecutively.")
    if "ignore" in values and values["ignore"] != sorted_values[-1]:
        raise OneShotDatasetError(
            f"dataset.json 'ignore' label has value {values['ignore']} but must be the highest label value "
            f"({path}); give it value {sorted_values[-1]}.")
    return sorted_values


def _parse_channels(dataset_json: dict, path: str) -> int:
    key = "channel_names" if "channel_names" in dataset_json else "modality"
    channels = dataset_json[key]
    if not isinstance(channels, dict) or len(channels) == 0:
        raise OneShotDatasetError(
            f"dataset.json '{key}' must be a non-empty dict channel index -> name ({path}); "
            f"use e.g. {{\"0\": \"T1\"}}.")
    try:
        idx = sorted(int(k) for k in channels.keys())
    except (TypeError, ValueError):
        idx = None
    if idx != list(range(len(channels))):
        raise OneShotDatasetError(
            f"dataset.json '{key}' keys {_fmt_list(list(channels.keys()))} are not the channel indices "
            f"0..{len(channels) - 1} ({path}); use keys \"0\", \"1\", ...")
    return len(channels)


def _parse_file_ending(dataset_json: dict, path: str) -> str:
    ending = dataset_json["file_ending"]
    if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2:
        raise OneShotDatasetError(
            f"dataset.json 'file_ending' must be a string like \".nii.gz\", got {ending!r} ({path}); fix it.")
    if ending.lower() in _2D_FILE_ENDINGS:
        raise OneShotDatasetError(
            f"dataset.json file_ending {ending!r} is a 2D image format but nnunetv2_oneshot is 3D only ({path}); "
            f"convert the volumes to .nii.gz.")
    if ending.lower() not in SUPPORTED_FILE_ENDINGS:
        raise OneShotDatasetError(
            f"dataset.json file_ending {ending!r} is not supported by nnunetv2_oneshot ({path}); "
            f"convert the images to one of {_fmt_list(SUPPORTED_FILE_ENDINGS)} (.nii.gz recommended).")
    return ending


# ----------------------------------------------------------------------------------------------------------------
# 2. structure and file names
# ----------------------------------------------------------------------------------------------------------------
def _check_endings(ctx: _Ctx, directory: str, names: List[str], ending: str) -> None:
    bad = [n for n in names if not n.endswith(ending)]
    if bad:
        raise OneShotDatasetError(
            f"File {ctx.rel(os.path.join(directory, bad[0]))} does not end with dataset.json's file_ending "
            f"{ending!r}" + (f" ({len(bad) - 1} more such files in {ctx.rel(directory)})" if len(bad) > 1 else "")
            + f"; convert it to {ending} or move it out of {ctx.rel(directory)}.")


def _group_channels(ctx: _Ctx, directory: str, names: List[str], ending: str) -> Dict[str, Dict[int, str]]:
    """case -> {channel index -> absolute path}; file names must be ``{case}_{XXXX}{ending}``."""
    cases: Dict[str, Dict[int, str]] = {}
    for n in names:
        m = _CHANNEL_RE.match(n[: -len(ending)])
        if m is None:
            raise OneShotDatasetError(
                f"Image file {ctx.rel(os.path.join(directory, n))} is not named {{case}}_{{channel:04d}}{ending}; "
                f"rename it, e.g. to {n[: -len(ending)]}_0000{ending}.")
        cases.setdefault(m.group("case"), {})[int(m.group("channel"))] = os.path.join(directory, n)
    return dict(sorted(cases.items()))


def _check_channels(ctx: _Ctx, directory: str, cases: Dict[str, Dict[int, str]], num_channels: int,
                    ending: str) -> Dict[str, List[str]]:
    out = {}
    for case, chans in cases.items():
        for c in range(num_channels):
            if c not in chans:
                raise OneShotDatasetError(
                    f"Case '{case}' lacks channel file {ctx.rel(os.path.join(directory, f'{case}_{c:04d}{ending}'))} "
                    f"(dataset.json declares {num_channels} channel(s), _0000.._{num_channels - 1:04d}); "
                    f"add the file or fix channel_names in dataset.json.")
        extra = sorted(c for c in chans if c >= num_channels)
        if extra:
            raise OneShotDatasetError(
                f"Case '{case}' has extra channel file {ctx.rel(chans[extra[0]])} but dataset.json declares "
                f"{num_channels} channel(s) (_0000.._{num_channels - 1:04d}); remove the file or add the channel "
                f"to channel_names in dataset.json.")
        out[case] = [chans[c] for c in range(num_channels)]
    return out


# ----------------------------------------------------------------------------------------------------------------
# 3. headers
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Header:
    path: str
    dimension: int
    size: Tuple[int, ...]  # SimpleITK order (x, y, z)
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    components: int


def _short_error(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(e).__name__
    msg = msg.replace("sitk::ERROR: ", "")
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _unreadable(ctx: _Ctx, path: str, reason: str) -> OneShotDatasetError:
    return OneShotDatasetError(
        f"Cannot read file {ctx.rel(path)} ({reason}); the file is corrupt, truncated or not a valid image: "
        f"re-export or re-copy it, or remove the case.")


def _nifti_expected_size(path: str) -> Optional[int]:
    """Bytes of the uncompressed NIfTI file as its header declares them (None if it cannot be determined)."""
    try:
        import nibabel as nib
        proxy = nib.load(path).dataobj  # header only; the proxy knows the real data offset (the header's
        # vox_offset field may read 0 after loading)
        return int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * int(np.dtype(proxy.dtype).itemsize)
    except Exception:
        return None


def _check_not_truncated(ctx: _Ctx, path: str) -> None:
    """ITK reads truncated .nii.gz files silently (zero-filled): catch them from the gzip trailer, so
    cheaply (the full stream is only decompressed when the trailer disagrees with the header)."""
    if not _is_nifti(path):
        return
    lower = path.lower()
    expected = _nifti_expected_size(path)
    if expected is None:
        return
    if lower.endswith(".nii"):
        actual = os.path.getsize(path)
        if actual < expected:
            raise _unreadable(ctx, path, f"truncated: {actual} bytes, header declares {expected}")
        return
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            raise _unreadable(ctx, path, "truncated gzip stream")
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize == expected % (1 << 32):
        return
    # trailer disagrees (truncated, corrupt, or a legal multi-member / padded gzip): decompress to be sure
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise _unreadable(ctx, path, f"gzip stream broken: {_short_error(e)}") from None
    if total < expected:
        raise _unreadable(ctx, path, f"truncated: {total} uncompressed bytes, header declares {expected}")


def _read_header(ctx: _Ctx, path: str) -> _Header:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _unreadable(ctx, path, f"SimpleITK: {_short_error(e)}") from None
    _check_not_truncated(ctx, path)
    return _Header(path=path, dimension=reader.GetDimension(), size=tuple(int(s) for s in reader.GetSize()),
                   spacing=tuple(reader.GetSpacing()), origin=tuple(reader.GetOrigin()),
                   direction=tuple(reader.GetDirection()), components=int(reader.GetNumberOfComponents()))


def _check_3d(ctx: _Ctx, h: _Header) -> None:
    if h.dimension == 2 or (h.dimension == 3 and min(h.size) == 1):
        raise OneShotDatasetError(
            f"File {ctx.rel(h.path)} is a 2D image (size {h.size}) but nnunetv2_oneshot is 3D only; "
            f"provide 3D volumes (or use plain nnU-Net for 2D data).")
    if h.dimension != 3:
        raise OneShotDatasetError(
            f"File {ctx.rel(h.path)} is {h.dimension}D (size {h.size}) but 3D volumes are required; "
            f"store each channel as its own 3D file {{case}}_{{XXXX}} (split 4D files).")
    if h.components != 1:
        raise OneShotDatasetError(
            f"File {ctx.rel(h.path)} has {h.components} components per voxel (vector/RGB image) but scalar "
            f"volumes are required; store each component as its own channel file {{case}}_{{XXXX}}.")


def _spacing_close(a: Sequence[float], b: Sequence[float]) -> bool:
    return bool(np.allclose(a, b, rtol=_SPACING_RTOL, atol=_SPACING_ATOL))


def _check_case_channels(ctx: _Ctx, case: str, headers: List[_Header]) -> None:
    ref = headers[0]
    for h in headers[1:]:
        if h.size != ref.size:
            raise OneShotDatasetError(
                f"Channel shape mismatch in case '{case}': {ctx.rel(h.path)} has size {h.size} but "
                f"{ctx.rel(ref.path)} has {ref.size}; resample all channels of a case onto one grid.")
        if not _spacing_close(h.spacing, ref.spacing):
            raise OneShotDatasetError(
                f"Channel spacing mismatch in case '{case}': {ctx.rel(h.path)} has spacing {_fmt_tuple(h.spacing)} "
                f"but {ctx.rel(ref.path)} has {_fmt_tuple(ref.spacing)}; resample all channels of a case onto "
                f"one grid.")


def _check_image_label(ctx: _Ctx, case: str, img: _Header, seg: _Header) -> None:
    if img.size != seg.size:
        raise OneShotDatasetError(
            f"Image/label shape mismatch in case '{case}': {ctx.rel(seg.path)} has size {seg.size} but "
            f"{ctx.rel(img.path)} has {img.size}; the label must lie on the image's voxel grid (resample it).")
    if not _spacing_close(img.spacing, seg.spacing):
        raise OneShotDatasetError(
            f"Image/label spacing mismatch in case '{case}': {ctx.rel(seg.path)} has spacing "
            f"{_fmt_tuple(seg.spacing)} but {ctx.rel(img.path)} has {_fmt_tuple(img.spacing)}; "
            f"fix the label's header (or resample it onto the image grid).")
    # nnU-Net only warns about these, and so do we (it works in voxel space)
    if not np.allclose(img.origin, seg.origin, atol=1e-3) or not np.allclose(img.direction, seg.direction,
                                                                             atol=1e-3):
        warnings.warn(f"Origin/direction of {ctx.rel(seg.path)} differ from {ctx.rel(img.path)}; nnU-Net works "
                      f"in voxel space so this is accepted, but check that label and image are aligned.",
                      stacklevel=3)


# ----------------------------------------------------------------------------------------------------------------
# 4. voxels
# ----------------------------------------------------------------------------------------------------------------
def _is_nifti(path: str) -> bool:
    lower = path.lower()
    return lower.endswith(".nii.gz") or lower.endswith(".nii")


def _read_array(ctx: _Ctx, path: str) -> np.ndarray:
    """All voxels of one file (its geometry was read from the header before).

    NIfTI files are read with nibabel: SimpleITK (ITK 5.4) silently turns NaN/inf voxels of NIfTI files into 0,
    which would hide exactly what we look for, and nibabel's gzip reader also fails on truncated streams.
    SimpleITK's readability was already checked from the header. Other formats are read with SimpleITK.
    """
    if _is_nifti(path):
        try:
            import nibabel as nib
            return np.asanyarray(nib.load(path).dataobj)
        except Exception as e:  # nibabel raises many types (EOFError, ImageFileError, zlib.error, ...)
            raise _unreadable(ctx, path, f"nibabel: {_short_error(e)}") from None
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise _unreadable(ctx, path, f"SimpleITK: {_short_error(e)}") from None
    # a copy: a view would not keep the SimpleITK image (its buffer) alive
    return sitk.GetArrayFromImage(img)


def _check_finite(ctx: _Ctx, path: str, arr: np.ndarray, what: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        return
    finite = np.isfinite(arr)
    if not finite.all():
        bad = arr[~finite]
        n_nan = int(np.isnan(bad).sum())
        n_inf = int(bad.size - n_nan)
        raise OneShotDatasetError(
            f"{what} {ctx.rel(path)} contains non-finite voxels ({n_nan} NaN, {n_inf} inf); replace them with "
            f"finite values that make sense for the image (e.g. the background intensity).")


def _unique(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a presence table for 8/16-bit integers (label maps), 2-3x faster than np.unique."""
    arr = np.ascontiguousarray(arr).ravel()
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        bits = 8 * arr.dtype.itemsize
        present = np.zeros(1 << bits, dtype=bool)
        present[arr.view(np.dtype(f"u{arr.dtype.itemsize}"))] = True
        values = np.flatnonzero(present)
        if arr.dtype.kind == "i":  # two's complement: indices >= 2**(bits-1) are negative values
            values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
        return np.sort(values)
    return np.unique(arr)


def _voxel_key(arr: np.ndarray) -> str:
    """Content key of an image's voxels (shape and values, whatever the file's dtype or compression)."""
    import hashlib
    a = np.ascontiguousarray(arr, dtype=np.float64)
    return hashlib.sha1(repr(a.shape).encode() + a.tobytes()).hexdigest()


def _check_label_values(ctx: _Ctx, path: str, arr: np.ndarray, declared: List[int]) -> None:
    found = _unique(arr)
    undeclared = [v for v in found.tolist() if not (float(v).is_integer() and int(v) in declared)]
    if undeclared:
        raise OneShotDatasetError(
            f"Label file {ctx.rel(path)} contains value(s) {_fmt_list([_fmt_value(v) for v in undeclared])} not "
            f"declared in dataset.json labels {_fmt_list(declared)}; declare them in dataset.json 'labels' or fix "
            f"the label file.")


# ----------------------------------------------------------------------------------------------------------------
# main entry point
# ----------------------------------------------------------------------------------------------------------------
def validate_oneshot_dataset(folder: str, check_voxels: bool = True, check_held_out: bool = False) -> OneShotDataset:
    """Validate a one-shot raw dataset and return its structure.

    :param folder: path of the raw dataset folder (``DatasetXXX_Name``); a dataset name or id is resolved
        under ``$nnUNet_raw`` when it is not an existing path.
    :param check_voxels: also read every file fully (NaN/inf, undeclared label values). Without it only the
        headers are read (geometry, dimensionality, truncation).
    :param check_held_out: also check the names of ``imagesTs`` and, with ``check_voxels``, read the held-out
        images (imagesTs, imagesVal) to list those that are in the pool too (``held_out_in_pool``). The
        ``validate``, ``plan`` and ``benchmark`` commands ask for it; a trainer does not: it neither lists nor
        reads a held-out folder.
    :raises OneShotDatasetError: with a one-line message naming the offending file and the fix.
    """
    folder = _resolve_folder(folder)
    ctx = _Ctx(folder)
    json_path = os.path.join(folder, "dataset.json")

    # ---- 1. dataset.json
    dataset_json = _load_dataset_json(folder)
    label_values = _parse_labels(dataset_json["labels"], json_path)
    num_channels = _parse_channels(dataset_json, json_path)
    ending = _parse_file_ending(dataset_json, json_path)
    unlabelled_name = get_unlabelled_folder_name(dataset_json)

    # ---- 2. structure
    images_tr = os.path.join(folder, "imagesTr")
    labels_tr = os.path.join(folder, "labelsTr")
    unl_dir = os.path.join(folder, unlabelled_name)
    for d in (images_tr, labels_tr):
        if not os.path.isdir(d):
            raise OneShotDatasetError(
                f"No labelled case: folder {ctx.rel(d)} is missing in {folder}; put the labelled case(s) into "
                f"imagesTr/{{case}}_0000{ending} and labelsTr/{{case}}{ending}.")
    if not os.path.isdir(unl_dir):
        raise OneShotDatasetError(
            f"Unlabelled folder {ctx.rel(unl_dir)} is missing in {folder}; put the unlabelled images there as "
            f"{{case}}_0000{ending} (or set \"{DATASET_JSON_KEY}\": {{\"unlabelled_folder\": ...}} in dataset.json).")

    image_names = _visible_files(images_tr)
    label_names = _visible_files(labels_tr)
    unl_names = _visible_files(unl_dir)
    _check_endings(ctx, images_tr, image_names, ending)
    _check_endings(ctx, labels_tr, label_names, ending)
    _check_endings(ctx, unl_dir, unl_names, ending)

    if not image_names and not label_names:
        raise OneShotDatasetError(
            f"No labelled case: imagesTr and labelsTr in {folder} hold no {ending} file; add at least one labelled "
            f"case (imagesTr/{{case}}_0000{ending} + labelsTr/{{case}}{ending}).")
    image_cases = _group_channels(ctx, images_tr, image_names, ending)
    label_cases = {n[: -len(ending)]: os.path.join(labels_tr, n) for n in label_names}

    no_images = sorted(set(label_cases) - set(image_cases))
    if no_images:
        c = no_images[0]
        more = f" ({len(no_images) - 1} more such label files)" if len(no_images) > 1 else ""
        raise OneShotDatasetError(
            f"Label file {ctx.rel(label_cases[c])} has no image in imagesTr (expected imagesTr/{c}_0000{ending})"
            f"{more}; add the image(s) or remove the label file (label files are named {{case}}{ending}, "
            f"without channel suffix).")
    no_label = sorted(set(image_cases) - set(label_cases))
    if no_label:
        c = no_label[0]
        more = f" ({len(no_label) - 1} more such cases)" if len(no_label) > 1 else ""
        raise OneShotDatasetError(
            f"Case '{c}' has images in imagesTr but no label file {ctx.rel(os.path.join(labels_tr, c + ending))}"
            f"{more}; add the label, or move the images to {ctx.rel(unl_dir)} if the case is unlabelled.")

    if not unl_names:
        raise OneShotDatasetError(
            f"Unlabelled folder {ctx.rel(unl_dir)} holds no image; put at least one unlabelled image there as "
            f"{{case}}_0000{ending}.")
    unl_cases = _group_channels(ctx, unl_dir, unl_names, ending)

    labelled_images = _check_channels(ctx, images_tr, image_cases, num_channels, ending)
    unlabelled = _check_channels(ctx, unl_dir, unl_cases, num_channels, ending)

    collide = sorted(set(unlabelled) & set(labelled_images))
    if collide:
        c = collide[0]
        raise OneShotDatasetError(
            f"Unlabelled case '{c}' ({ctx.rel(unlabelled[c][0])}) has the same name as a labelled case in imagesTr; "
            f"rename the unlabelled case (case names must be unique across imagesTr and {ctx.rel(unl_dir)}).")

    images_ts = os.path.join(folder, "imagesTs")
    if check_held_out and os.path.isdir(images_ts):  # light check: names and channels only
        ts_names = [n for n in _visible_files(images_ts) if n.endswith(ending)]
        _check_channels(ctx, images_ts, _group_channels(ctx, images_ts, ts_names, ending), num_channels, ending)

    labelled = {c: {"images": labelled_images[c], "label": label_cases[c]} for c in sorted(labelled_images)}

    # ---- 3. headers (geometry), all files, before any voxel is read
    headers: Dict[str, _Header] = {}
    all_files = [p for c in labelled.values() for p in (*c["images"], c["label"])] + \
                [p for paths in unlabelled.values() for p in paths]
    for p in all_files:
        headers[p] = _read_header(ctx, p)
    for p in all_files:
        _check_3d(ctx, headers[p])
    for case, c in labelled.items():
        _check_case_channels(ctx, case, [headers[p] for p in c["images"]])
        _check_image_label(ctx, case, headers[c["images"][0]], headers[c["label"]])
    for case, paths in unlabelled.items():
        _check_case_channels(ctx, case, [headers[p] for p in paths])

    # ---- 4. voxels: each file read once, nothing kept in memory
    if check_voxels:
        for case, c in labelled.items():
            for p in c["images"]:
                _check_finite(ctx, p, _read_array(ctx, p), "Image")
            seg = _read_array(ctx, c["label"])
            _check_finite(ctx, c["label"], seg, "Label file")
            _check_label_values(ctx, c["label"], seg, label_values)
            del seg
        pool_keys = {}
        for case, paths in unlabelled.items():
            for p in paths:
                arr = _read_array(ctx, p)
                _check_finite(ctx, p, arr, "Image")
                if check_held_out and p == paths[0]:
                    pool_keys.setdefault(_voxel_key(arr), case)
        # held-out scans (first channel) that are also in the pool, voxel for voxel
        held_out = []
        for sub in ("imagesTs", VALIDATION_IMAGES):
            d = os.path.join(folder, sub)
            if check_held_out and os.path.isdir(d):
                for n in sorted(n for n in _visible_files(d) if n.endswith("_0000" + ending)):
                    key = _voxel_key(_read_array(ctx, os.path.join(d, n)))
                    if key in pool_keys:
                        held_out.append((f"{sub}/{n}", pool_keys[key]))

    return OneShotDataset(folder=folder, dataset_json=dataset_json, labelled=labelled, unlabelled=unlabelled,
                          atlas=next(iter(labelled)), num_channels=num_channels, file_ending=ending,
                          label_values=label_values, unlabelled_folder_name=unlabelled_name,
                          held_out_in_pool=held_out if check_voxels and check_held_out else None)
