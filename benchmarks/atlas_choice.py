"""How much the choice of the one labelled scan matters: the suggested (most central) atlas against random ones
and the least central one, each propagated by classical registration onto the VALIDATION scans. Not a test.

The IXI split chose its atlas by ``suggest-atlas``'s ranking, which reads images only. To see whether that is
worth anything, the same classical registration (SimpleITK affine + demons, the ``atlas_registration``
baseline) propagates other candidate atlases: ``--random K`` pool scans drawn with ``--seed`` and the last of
the ranking. Their labels come from labelsUnlabelledOracle: here they serve this report only, after the choice
was made, and choose nothing.

    python benchmarks/atlas_choice.py 992 --random 4 --json benchmarks/results/atlas_choice_ixi.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from os.path import join

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset id or name (a dataset made by make-dataset ixi)")
    p.add_argument("--random", type=int, default=4, help="random pool scans to compare (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    a = p.parse_args(argv)
    import SimpleITK as sitk
    from nnunetv2_oneshot.constants import ORACLE_LABELS_FOLDER, UNLABELLED_FOLDER, VALIDATION_IMAGES, \
        VALIDATION_LABELS
    from nnunetv2_oneshot.evaluation import label_dice, nan_mean
    from nnunetv2_oneshot.nnunet_io import raw_dataset_folder
    from nnunetv2_oneshot.registration.classical import propagate_labels

    raw = raw_dataset_folder(a.dataset)
    with open(join(raw, "dataset.json")) as f:
        dj = json.load(f)
    o = dj["oneshot"]
    ranking = [c for c, _ in o["atlas_choice"]["ranking"]]
    pool = [c for c in ranking if c != o["atlas"]]
    rng = np.random.default_rng(a.seed)
    drawn = [str(c) for c in rng.choice(sorted(pool[:-1]), a.random, replace=False)]
    candidates = {o["atlas"]: "suggested (most central)", ranking[-1]: "least central",
                  **{c: "random" for c in drawn}}
    labels = sorted(v for k, v in dj["labels"].items() if v != 0)
    num_classes = max(labels) + 1
    validation = o["validation"]["cases"]
    targets = {c: (sitk.ReadImage(join(raw, VALIDATION_IMAGES, f"{c}_0000.nii.gz"), sitk.sitkFloat32),
                   sitk.GetArrayFromImage(sitk.ReadImage(join(raw, VALIDATION_LABELS, f"{c}.nii.gz"))))
               for c in validation}
    res = {"dataset": os.path.basename(raw), "validation": validation, "atlases": {}}
    for atlas, role in candidates.items():
        img_dir, lab_dir = ("imagesTr", "labelsTr") if atlas == o["atlas"] else (UNLABELLED_FOLDER,
                                                                                 ORACLE_LABELS_FOLDER)
        pair = (sitk.ReadImage(join(raw, img_dir, f"{atlas}_0000.nii.gz"), sitk.sitkFloat32),
                sitk.ReadImage(join(raw, lab_dir, f"{atlas}.nii.gz")))
        t0 = time.time()
        per_case = {}
        for c, (img, ref) in targets.items():
            seg = sitk.GetArrayFromImage(propagate_labels(img, [pair], num_classes))
            per_case[c] = nan_mean(label_dice(seg, ref, labels))
        res["atlases"][atlas] = {"role": role, "rank": ranking.index(atlas) + 1,
                                 "centrality": dict(o["atlas_choice"]["ranking"])[atlas],
                                 "dice_mean": nan_mean(list(per_case.values())), "per_case": per_case}
        print(f"{atlas} ({role}, rank {ranking.index(atlas) + 1}/{len(ranking)}): mean Dice on validation "
              f"{res['atlases'][atlas]['dice_mean']:.4f} ({time.time() - t0:.0f} s)", flush=True)
    others = [v["dice_mean"] for k, v in res["atlases"].items() if v["role"] == "random"]
    res["suggested_minus_random_mean"] = res["atlases"][o["atlas"]]["dice_mean"] - float(np.mean(others))
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(f"suggested - mean of {len(others)} random atlases: {res['suggested_minus_random_mean']:+.4f}")


if __name__ == "__main__":
    main()
