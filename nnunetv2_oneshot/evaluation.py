"""Scores a folder of segmentations against references with nnU-Net's own evaluation."""
from __future__ import annotations

import os
from typing import Dict


def dice_per_label(pred_folder: str, ref_folder: str, dataset_json: dict, num_processes: int = 1) -> Dict:
    """Returns {"per_label": {name: dice}, "mean": float} over the dataset's foreground labels.

    nnU-Net's evaluation gives NaN Dice where a label is absent from both prediction and reference; those
    are skipped in the mean (never counted as zeros or ones).
    """
    import numpy as np
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    names = {int(v): k for k, v in dataset_json["labels"].items() if k != "ignore"}
    labels = sorted(v for v in names if v != 0)
    rw = determine_reader_writer_from_dataset_json(dataset_json, allow_nonmatching_filename=True, verbose=False)()
    res = compute_metrics_on_folder(ref_folder, pred_folder, os.path.join(pred_folder, "summary.json"), rw,
                                    dataset_json["file_ending"], labels, num_processes=num_processes)
    per_label = {names[l]: float(res["mean"][l]["Dice"]) for l in labels}
    return {"per_label": per_label, "mean": float(np.nanmean(list(per_label.values())))}


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
