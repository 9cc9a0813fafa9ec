"""Scores a folder of segmentations against references: Dice with nnU-Net's own evaluation, HD95 (which
nnU-Net does not compute) with a distance transform; and Dice of two label maps in memory, by the same
convention, for the scripts and logs that have arrays rather than files."""
from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np


def dice_per_label(pred_folder: str, ref_folder: str, dataset_json: dict, num_processes: int = 1) -> Dict:
    """Returns {"per_label": {name: dice}, "mean": float, "per_case": {case: mean dice over its labels}} over
    the dataset's foreground labels; ``per_case`` serves comparisons paired by subject.

    nnU-Net's evaluation gives NaN Dice where a label is absent from both prediction and reference; those
    are skipped in the means (never counted as zeros or ones).
    """
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    names = {int(v): k for k, v in dataset_json["labels"].items() if k != "ignore"}
    labels = sorted(v for v in names if v != 0)
    rw = determine_reader_writer_from_dataset_json(dataset_json, allow_nonmatching_filename=True, verbose=False)()
    res = compute_metrics_on_folder(ref_folder, pred_folder, os.path.join(pred_folder, "summary.json"), rw,
                                    dataset_json["file_ending"], labels, num_processes=num_processes)
    per_label = {names[l]: float(res["mean"][l]["Dice"]) for l in labels}
    ending = dataset_json["file_ending"]
    per_case = {os.path.basename(c["reference_file"])[:-len(ending)]: nan_mean([c["metrics"][l]["Dice"] for l in labels])
                for c in res["metric_per_case"]}
    return {"per_label": per_label, "mean": nan_mean(list(per_label.values())), "per_case": per_case}


def nan_mean(values) -> float:
    """Mean of ``values`` skipping NaN (nnU-Net's convention for a label absent from both maps); NaN when all
    are NaN or there are none, without numpy's empty-slice warning."""
    v = np.asarray(values, dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def label_dice(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Dice of each of ``labels`` between two label maps of one shape (any), shape (len(labels),): the in-memory
    twin of :func:`dice_per_label` for one case, with nnU-Net's convention that a label absent from both maps
    is NaN (skipped in means, never a zero or a one)."""
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    d = np.full(len(labels), np.nan)
    for i, k in enumerate(labels):
        p, r = pred == k, ref == k
        s = int(p.sum()) + int(r.sum())
        if s:
            d[i] = 2.0 * int(np.logical_and(p, r).sum()) / s
    return d


def mean_dice(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> float:
    """:func:`label_dice` averaged over the labels present in either map; NaN when none is."""
    return nan_mean(label_dice(pred, ref, labels))


def format_table(columns: Dict[str, Dict]) -> str:
    """A per-structure Dice table with one column per method (``columns``: method -> dice_per_label result)."""
    methods = list(columns)
    names = list(next(iter(columns.values()))["per_label"])
    w = max(len(n) for n in names + ["structure", "mean"]) + 2
    lines = ["structure".ljust(w) + "".join(m.rjust(max(12, len(m) + 2)) for m in methods)]
    for n in names + ["mean"]:
        vals = [columns[m]["mean"] if n == "mean" else columns[m]["per_label"][n] for m in methods]
        lines.append(n.ljust(w) + "".join(f"{v:.3f}".rjust(max(12, len(m) + 2)) for v, m in zip(vals, methods)))
    return "\n".join(lines)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion, generate_binary_structure
    return mask & ~binary_erosion(mask, generate_binary_structure(mask.ndim, 1), border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance (in the units of ``spacing``) between two binary masks of shape
    (X, Y, Z): the larger of the two directed 95th percentiles of surface-to-surface distances (the MONAI
    and DeepMind surface-distance convention). Both empty: NaN (skipped in means). One empty: the diagonal
    of the image, the worst distance there is, so that a missed structure is not rewarded by being skipped."""
    from scipy.ndimage import distance_transform_edt
    pred, ref = pred.astype(bool), ref.astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    sp, sr = _surface(pred), _surface(ref)
    d_to_ref = distance_transform_edt(~sr, sampling=spacing)[sp]
    d_to_pred = distance_transform_edt(~sp, sampling=spacing)[sr]
    return float(max(np.percentile(d_to_ref, 95), np.percentile(d_to_pred, 95)))


def hd95_per_label(pred_folder: str, ref_folder: str, dataset_json: dict) -> Dict:
    """Returns {"per_label": {name: HD95 in mm averaged over cases}, "mean": float}; reference files define
    the cases (each must have a prediction of the same name)."""
    import SimpleITK as sitk
    ending = dataset_json["file_ending"]
    names = {int(v): k for k, v in dataset_json["labels"].items() if k != "ignore" and int(v) != 0}
    per_case = {n: [] for n in names.values()}
    for f in sorted(x for x in os.listdir(ref_folder) if x.endswith(ending)):
        if not os.path.isfile(os.path.join(pred_folder, f)):
            raise FileNotFoundError(f"no prediction {f} in {pred_folder}")
        ref_img = sitk.ReadImage(os.path.join(ref_folder, f))
        ref = sitk.GetArrayFromImage(ref_img)
        pred = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred_folder, f)))
        spacing = ref_img.GetSpacing()[::-1]  # array order
        for v, n in names.items():
            per_case[n].append(hd95(pred == v, ref == v, spacing))
    per_label = {n: nan_mean(d) for n, d in per_case.items()}
    return {"per_label": per_label, "mean": nan_mean(list(per_label.values()))}
