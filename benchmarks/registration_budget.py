"""How good the registration net gets with its training budget (issue 4: "find out why"). Not a test.

Trains the stage-1 registration net of OneShotRegAugTrainer_cpu (the CPU budget's net, optimiser and loss)
on the dataset's atlas -> unlabelled pairs, and at each of ``--checkpoints`` iterations warps the atlas label
onto every POOL scan and scores it against the pool's true labels (labelsUnlabelledOracle, which our
generated datasets have). The test donors are never read: this is where the registration budget is chosen.
Scores are mean Dice over the labels present in either map (nnU-Net's convention), on the preprocessed
canvas, averaged over the pool.

    python benchmarks/registration_budget.py 990 --checkpoints 150 300 600 1200 \
        --json benchmarks/results/registration_budget_brain_cpu.json

Needs nnUNet_raw/nnUNet_preprocessed (planned with ``nnunetv2-oneshot plan ID --cpu``); writes its trainer
folder under a temporary nnUNet_results unless one is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from os.path import isdir, join

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("-p", "--plans", default="nnUNetOneShotCPUPlans")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[150, 300, 600, 1200])
    p.add_argument("--lr", type=float, default=None, help="registration_lr (default: the CPU budget's)")
    p.add_argument("--ncc-eps", type=float, default=None, help="registration_ncc_eps (default: the trainer's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    os.environ.setdefault("nnUNet_results", tempfile.mkdtemp(prefix="regbudget_"))

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_oneshot.augmentation.synthesis import pad_to_shape
    from nnunetv2_oneshot.constants import ORACLE_LABELS_FOLDER
    from nnunetv2_oneshot.evaluation import mean_dice
    from nnunetv2_oneshot.registration import folding_fraction
    from nnunetv2_oneshot.registration.transform import warp_labels
    from nnunetv2_oneshot.trainers.variants import OneShotRegAugTrainer_cpu
    from nnunetv2_oneshot.validation import validate_oneshot_dataset

    name = maybe_convert_to_dataset_name(int(a.dataset) if a.dataset.isdigit() else a.dataset)
    oracle = join(nnUNet_raw, name, ORACLE_LABELS_FOLDER)
    if not isdir(oracle):
        sys.exit(f"error: {oracle} does not exist: this study needs the pool's true labels")
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    plans = load_json(join(nnUNet_preprocessed, name, a.plans + ".json"))
    plans["continue_training"] = False  # nnUNetTrainer.__init__ pops it (set by nnU-Net's run_training)
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    t = OneShotRegAugTrainer_cpu(plans, "3d_fullres", "all", dataset_json, torch.device("cpu"))
    if a.lr is not None:
        t.registration_lr = a.lr
    if a.ncc_eps is not None:
        t.registration_ncc_eps = a.ncc_eps
    t.registration_log_every = 50
    t.initialize()
    t._load_oneshot_data()
    d = t.oneshot_data
    canvas = next(iter(d["subjects"].values())).shape[1:]

    # the pool's true labels, preprocessed exactly like its images and put on the same canvas
    pre = t.configuration_manager.preprocessor_class(verbose=False)
    pool = validate_oneshot_dataset(join(nnUNet_raw, name)).unlabelled  # case -> channel files
    truth = {}
    for s in d["subjects"]:
        _, seg, _ = pre.run_case(pool[s], join(oracle, s + dataset_json["file_ending"]), t.plans_manager,
                                 t.configuration_manager, dataset_json)
        truth[s] = pad_to_shape(np.maximum(seg, 0).astype(np.int16), canvas, 0)[0][0]
    num_classes = max(t.label_manager.all_labels) + 1
    atlas = sorted(d["atlases"])[0]
    atlas_img = torch.from_numpy(d["atlases"][atlas][0][None])
    atlas_lab = torch.from_numpy(d["atlases"][atlas][1][None].astype(np.int64))

    def pool_dice(flows) -> float:
        per_subject = []
        for s, flow in flows.items():
            w = atlas_lab[0, 0].numpy() if flow is None else warp_labels(atlas_lab, flow, num_classes)[0, 0].numpy()
            g = truth[s]
            per_subject.append(mean_dice(w, g, range(1, num_classes)))
        return float(np.mean(per_subject))

    res = {"dataset": name, "plans": a.plans, "pairs": len(d["subjects"]) * len(d["atlases"]),
           "registration_lr": t.registration_lr, "ncc_eps": t.registration_ncc_eps,
           "encoder_channels": list(t.registration_encoder_channels),
           "seed": a.seed, "identity_dice": pool_dice({s: None for s in d["subjects"]}), "checkpoints": []}
    print(f"{name}: {res['pairs']} pairs; atlas labels unwarped: pool Dice {res['identity_dice']:.3f}", flush=True)
    t0 = time.time()
    for n in sorted(a.checkpoints):
        t.registration_num_iterations = n
        t.train_registration()  # continues from where the previous checkpoint stopped
        net = t.registration_net.eval()
        with torch.no_grad():
            flows = {s: net(atlas_img, torch.from_numpy(img[None])) for s, img in d["subjects"].items()}
        net.train()
        row = {"iterations": n, "pool_dice": pool_dice(flows),
               "folding_fraction": float(np.mean([folding_fraction(f) for f in flows.values()])),
               "ncc_loss": t.registration_log[-1][1], "minutes": (time.time() - t0) / 60}
        res["checkpoints"].append(row)
        print(f"  {n:5d} iterations: pool Dice {row['pool_dice']:.3f}, folding {row['folding_fraction']:.3%}, "
              f"NCC loss {row['ncc_loss']:.3f}, {row['minutes']:.1f} min", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
