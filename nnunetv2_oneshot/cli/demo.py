"""The main job: embedded brain dataset -> plan -> train (one-shot vs plain nnU-Net, same budget) -> stock
predict on held-out donors -> per-structure Dice table + overlay PNG. Runs the stock commands in subprocesses,
exactly as a user would type them, and streams their output so progress is visible."""
from __future__ import annotations

import json
import os
import sys
import time
from os.path import isfile, join

from nnunetv2_oneshot.constants import BRAIN_DATASET_ID
from nnunetv2_oneshot.process import CommandFailed, bin_path as _bin, run_logged

PLANS = "nnUNetOneShotCPUPlans"
# (label in the table, trainer) per budget; the first is the baseline a user has today
METHODS = {
    "full": [("nnUNetTrainer (1 label)", "nnUNetTrainer_oneshotCPU"),
             ("OneShotDistillTrainer", "OneShotDistillTrainer_cpu")],
    "quick": [("nnUNetTrainer (1 label)", "nnUNetTrainer_oneshotTiny"),
              ("OneShotDistillTrainer", "OneShotDistillTrainer_tiny")],
}
PROPAGATION = "atlas propagation"


def _show(line: str):
    if line.strip() and not line.startswith(("These are the", " {", "This is the configuration")):
        print("    " + line.rstrip()[:160], flush=True)


def _run(cmd, env, log_file: str, show: bool = True):
    """Runs a command, streaming its output (indented) and keeping a log. Exits on failure."""
    print("  $ " + " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    try:
        run_logged(cmd, env, log_file, _show if show else None)
    except CommandFailed as e:
        sys.exit(f"error: {e}")


def overlay_png(image_file: str, label_file: str, predictions: dict, out_file: str):
    """One axial slice through the labelled structures: image, ground truth and each method's prediction."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk
    img = sitk.GetArrayFromImage(sitk.ReadImage(image_file))
    gt = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
    # slice with most distinct structures
    z = int(np.argmax([len(np.unique(gt[i])) + (gt[i] > 0).mean() for i in range(gt.shape[0])]))
    panels = [("image", None), ("ground truth", gt)] + [(k, sitk.GetArrayFromImage(sitk.ReadImage(v)))
                                                         for k, v in predictions.items()]
    n = int(gt.max()) + 1
    cmap = plt.get_cmap("tab20", max(n, 2))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, seg) in zip(axes, panels):
        ax.imshow(img[z], cmap="gray", origin="lower")
        if seg is not None:
            ax.imshow(np.ma.masked_equal(seg[z], 0), cmap=cmap, vmin=0, vmax=max(n - 1, 1), alpha=0.55,
                      interpolation="nearest", origin="lower")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{os.path.basename(label_file)}, slice {z}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)


def run_demo(workdir: str = "demo_output", quick: bool = False) -> int:
    from nnunetv2_oneshot.evaluation import dice_per_label, format_table
    t_start = time.time()
    root = os.path.abspath(workdir)
    os.makedirs(join(root, "logs"), exist_ok=True)
    env = dict(os.environ, nnUNet_raw=join(root, "nnUNet_raw"), nnUNet_preprocessed=join(root, "nnUNet_preprocessed"),
               nnUNet_results=join(root, "nnUNet_results"))
    env.setdefault("nnUNet_def_n_proc", "1")
    env.setdefault("nnUNet_n_proc_DA", "1")
    did = str(BRAIN_DATASET_ID)
    name = f"Dataset{BRAIN_DATASET_ID}_OneShotBrain"
    raw = join(root, "nnUNet_raw", name)
    methods = METHODS["quick" if quick else "full"]
    n_steps = 4 + len(methods)
    step = iter(range(1, n_steps + 1))
    print(f"nnunetv2-oneshot demo ({'quick' if quick else 'full'} budget); everything goes to {root}\n", flush=True)

    print(f"[{next(step)}/{n_steps}] embedded brain dataset", flush=True)
    if isfile(join(raw, "dataset.json")):
        print(f"  reusing {raw}")
    else:
        _run([_bin("nnunetv2-oneshot"), "make-dataset", "brain"], env, join(root, "logs", "make_dataset.log"))

    print(f"[{next(step)}/{n_steps}] plan and preprocess (OneShotCPUPlanner)", flush=True)
    if isfile(join(root, "nnUNet_preprocessed", name, PLANS + ".json")):
        print("  reusing existing plans")
    else:
        _run([_bin("nnunetv2-oneshot"), "plan", did, "--cpu"], env, join(root, "logs", "plan.log"))

    for label, trainer in methods:
        print(f"[{next(step)}/{n_steps}] train {label}: nnUNetv2_train -tr {trainer}", flush=True)
        model = join(root, "nnUNet_results", name, f"{trainer}__{PLANS}__3d_fullres", "fold_all")
        if isfile(join(model, "checkpoint_final.pth")):
            print(f"  reusing trained model in {model} (delete it to retrain)")
            continue
        t = time.time()
        _run([_bin("nnUNetv2_train"), did, "3d_fullres", "all", "-tr", trainer, "-p", PLANS, "-device", "cpu"],
             env, join(root, "logs", f"train_{trainer}.log"))
        print(f"  trained in {(time.time() - t) / 60:.1f} min", flush=True)

    print(f"[{next(step)}/{n_steps}] predict the held-out test donors (stock nnUNetv2_predict) and propagate "
          f"the atlas labels", flush=True)
    preds = {}
    for label, trainer in methods:
        out = join(root, "predictions", trainer)
        _run([_bin("nnUNetv2_predict"), "-i", join(raw, "imagesTs"), "-o", out, "-d", did, "-c", "3d_fullres",
              "-f", "all", "-tr", trainer, "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1"],
             env, join(root, "logs", f"predict_{trainer}.log"), show=False)
        preds[label] = out
    oneshot_trainer = methods[-1][1]
    out = join(root, "predictions", "atlas_propagation")
    _run([_bin("nnunetv2-oneshot"), "propagate", "-i", join(raw, "imagesTs"), "-o", out, "-d", did,
          "-tr", oneshot_trainer, "-p", PLANS, "-device", "cpu"], env, join(root, "logs", "propagate.log"),
         show=False)
    preds[PROPAGATION] = out

    print(f"[{next(step)}/{n_steps}] Dice on the held-out donors (nnU-Net's evaluation)", flush=True)
    with open(join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    scores = {label: dice_per_label(folder, join(raw, "labelsTs"), dataset_json) for label, folder in preds.items()}
    table = format_table(scores)
    print(table)
    with open(join(root, "dice.json"), "w") as f:
        json.dump(scores, f, indent=1)
    with open(join(root, "dice_table.txt"), "w") as f:
        f.write(table + "\n")
    case = sorted(os.listdir(join(raw, "labelsTs")))[0]
    overlay_png(join(raw, "imagesTs", case.replace(".nii.gz", "_0000.nii.gz")), join(raw, "labelsTs", case),
                {k: join(v, case) for k, v in preds.items()}, join(root, "overlay.png"))
    print(f"\nDice table: {join(root, 'dice_table.txt')}; overlay: {join(root, 'overlay.png')}; "
          f"logs: {join(root, 'logs')}")
    print(f"demo finished in {(time.time() - t_start) / 60:.1f} min")
    return 0
