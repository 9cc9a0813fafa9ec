"""Dice on held-out scans against training length, from one training's snapshots. Not a test.

The benchmark keeps a snapshot every other checkpoint (``checkpoint_epoch<N>.pth``, trainer attribute
``snapshot_every``). This script predicts the held-out images with each snapshot and the final checkpoint
(stock ``nnUNetv2_predict_from_modelfolder -chk``, so exactly what a user's prediction does), scores them
with nnU-Net's Dice, and writes the curve as JSON and PNG. A budget is "flat" for a model where the last
step of the curve moves the mean Dice by less than ``--tol``: this is how the IXI budget is judged on the
VALIDATION scans (never the test scans), for the upper bound first.

    python benchmarks/validation_curve.py \\
        --model $O/seed0/all_labels/nnUNet_results/Dataset992_OneShotIXI/nnUNetTrainer_oneshotBaseline__nnUNetOneShotCPUPlans__3d_fullres/fold_all \\
        --images $nnUNet_raw/Dataset992_OneShotIXI/imagesVal --labels $nnUNet_raw/Dataset992_OneShotIXI/labelsVal \\
        --json benchmarks/results/validation_curve_ixi_upper_seed0.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from os.path import basename, isfile, join


def checkpoints(model: str) -> list:
    """[(epochs done, file name)] of the model's snapshots and final checkpoint, in training order."""
    import torch
    found = []
    for f in os.listdir(model):
        m = re.fullmatch(r"checkpoint_epoch(\d+)\.pth", f)
        if m:
            found.append((int(m.group(1)), f))
    if isfile(join(model, "checkpoint_final.pth")):
        done = torch.load(join(model, "checkpoint_final.pth"), map_location="cpu", weights_only=False)["current_epoch"]
        found.append((int(done), "checkpoint_final.pth"))
    return sorted(set(found))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained model's fold folder (holds checkpoint_*.pth)")
    p.add_argument("--images", required=True, help="held-out images (CASE_0000.nii.gz)")
    p.add_argument("--labels", required=True, help="their labels (CASE.nii.gz)")
    p.add_argument("--tol", type=float, default=0.01, help="a last step below this is flat (mean Dice)")
    p.add_argument("--json", required=True, help="write the curve here (and a PNG beside it)")
    p.add_argument("-device", default="cpu")
    a = p.parse_args(argv)
    from nnunetv2_oneshot.evaluation import dice_per_label
    from nnunetv2_oneshot.process import bin_path, run_logged

    with open(join(a.model, "..", "dataset.json")) as f:
        dataset_json = json.load(f)
    chks = checkpoints(a.model)
    if not chks:
        sys.exit(f"error: no checkpoint_epoch*.pth or checkpoint_final.pth in {a.model}")
    points = []
    with tempfile.TemporaryDirectory(prefix="valcurve_") as tmp:
        for epochs, chk in chks:
            out = join(tmp, chk[:-4])
            cmd = [bin_path("nnUNetv2_predict_from_modelfolder"), "-i", a.images, "-o", out, "-m",
                   os.path.dirname(os.path.abspath(a.model)), "-f", "all", "-chk", chk, "-device", a.device,
                   "-npp", "1", "-nps", "1"]
            run_logged(cmd, dict(os.environ), join(tmp, "predict.log"), None, append=True)
            d = dice_per_label(out, a.labels, dataset_json)
            points.append({"epochs": epochs, "checkpoint": chk, "dice_mean": d["mean"], "per_case": d["per_case"]})
            print(f"{chk}: {epochs} epochs, mean Dice {d['mean']:.4f}", flush=True)
    last_step = points[-1]["dice_mean"] - points[-2]["dice_mean"] if len(points) > 1 else None
    res = {"model": os.path.abspath(a.model), "held_out": os.path.abspath(a.labels), "points": points,
           "last_step": last_step, "tol": a.tol, "flat": None if last_step is None else abs(last_step) < a.tol}
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([q["epochs"] for q in points], [q["dice_mean"] for q in points], "o-")
    ax.set_xlabel("epochs")
    ax.set_ylabel(f"mean Dice on {basename(os.path.normpath(a.images))}")
    ax.set_title(basename(os.path.normpath(join(a.model, ".."))).split("__")[0], fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.json[:-5] + ".png" if a.json.endswith(".json") else a.json + ".png", dpi=110)
    print(f"last step {last_step if last_step is None else format(last_step, '+.4f')}: "
          f"{'flat' if res['flat'] else 'not flat' if res['flat'] is False else 'one point only'}")


if __name__ == "__main__":
    main()
