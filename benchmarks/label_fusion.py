"""Would the student's confident labels, filled in from a registration, be better targets than the student?
Not a test.

Self-training can only teach the student what its targets know better than it does. This script measures that
without training: on scans with reference labels (a benchmark's unlabelled pool, never the test donors) it
scores the student's labels, each registration's labels, and their fusion "the student where its softmax
maximum is at least t, the registration elsewhere" for several t, and, where the two disagree, how often each
is right. A fusion well above the student is a target worth self-training on; one within noise of it is not.

    export nnUNet_results=$O/seed3/nnUNet_results     # the benchmark seed whose student is analysed
    nnUNetv2_predict -i $nnUNet_raw/Dataset990_OneShotBrain/imagesUnlabelled -o /tmp/student -d 990 \
        -c 3d_fullres -f all -tr OneShotDistillTrainer -p nnUNetOneShotCPUPlans -npp 1 -nps 1 --save_probabilities
    nnunetv2-oneshot propagate --classical -i $nnUNet_raw/Dataset990_OneShotBrain/imagesUnlabelled \
        -o /tmp/classical -d 990
    python benchmarks/label_fusion.py 990 --student /tmp/student --source classical=/tmp/classical \
        --source net=$O/seed3/registration_on_pool --json benchmarks/results/label_fusion_brain_seed3.json

The committed records analysed the means-only student of the CPU run's seeds 2 and 3, trained before that
became the default and so found there under ``-tr OneShotDistillTrainer_meanShift``; in a benchmark run with
today's code it is ``OneShotDistillTrainer``, as above.

Every folder holds one segmentation per pool case (nnU-Net naming); the references are the dataset's
``labelsUnlabelledOracle`` unless ``--reference`` names another folder. Dice is
:func:`nnunetv2_oneshot.evaluation.mean_dice` (nnU-Net's convention), averaged over the cases.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from os.path import isdir, join

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.8, 0.9, 0.95, 0.99)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--student", required=True, help="the student's predictions, saved with --save_probabilities")
    p.add_argument("--source", action="append", required=True, metavar="NAME=FOLDER",
                   help="a registration's labels of the same cases (repeatable)")
    p.add_argument("--reference", help="reference labels (default: the dataset's labelsUnlabelledOracle)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)

    import SimpleITK as sitk
    from nnunetv2_oneshot.constants import ORACLE_LABELS_FOLDER
    from nnunetv2_oneshot.evaluation import label_dice, mean_dice, nan_mean
    from nnunetv2_oneshot.nnunet_io import raw_dataset_folder

    try:
        raw = raw_dataset_folder(a.dataset)
    except ValueError as e:
        sys.exit(f"error: {e}")
    name = os.path.basename(raw)
    dataset_json = json.load(open(join(raw, "dataset.json")))
    ending = dataset_json["file_ending"]
    names = {int(v): k for k, v in dataset_json["labels"].items() if k != "ignore" and int(v) > 0}
    labels = sorted(names)
    ref_dir = a.reference or join(raw, ORACLE_LABELS_FOLDER)
    sources = dict(s.split("=", 1) for s in a.source)
    for folder in [a.student, ref_dir, *sources.values()]:
        if not isdir(folder):
            sys.exit(f"error: no folder {folder}")
    cases = sorted(f[:-len(ending)] for f in os.listdir(a.student) if f.endswith(ending))
    missing = [(c, d) for c in cases for d in [ref_dir, *sources.values()]
               if not os.path.isfile(join(d, c + ending))]
    if not cases or missing:
        sys.exit(f"error: no student segmentations in {a.student}" if not cases else
                 f"error: {len(missing)} segmentations missing, e.g. {missing[0][0]} in {missing[0][1]}")
    if not all(os.path.isfile(join(a.student, c + ".npz")) for c in cases):
        sys.exit(f"error: {a.student} lacks the .npz probabilities: predict with --save_probabilities")

    def read(folder, case):
        return sitk.GetArrayFromImage(sitk.ReadImage(join(folder, case + ending)))

    per_case = []
    for c in cases:
        ref, stu = read(ref_dir, c), read(a.student, c)
        conf = np.load(join(a.student, c + ".npz"))["probabilities"].max(0)  # same (z, y, x) order as sitk
        d = label_dice(stu, ref, labels)
        row = {"student": nan_mean(d), "student_per_label": d}
        for s, folder in sources.items():
            reg = read(folder, c)
            dis = reg != stu
            right = (lambda lab: float((lab[dis] == ref[dis]).mean())) if dis.any() else (lambda lab: float("nan"))
            d = label_dice(reg, ref, labels)
            row[s] = {"dice": nan_mean(d), "per_label": d,
                      "disagree_fraction": float(dis.mean()),
                      "disagree_student_right": right(stu), "disagree_registration_right": right(reg),
                      "fused": {t: mean_dice(np.where(conf >= t, stu, reg), ref, labels) for t in THRESHOLDS},
                      "kept": {t: float((conf >= t).mean()) for t in THRESHOLDS}}
        per_case.append(row)

    res = {"dataset": name, "cases": cases, "student": nan_mean([r["student"] for r in per_case]),
           "student_per_label": {names[l]: nan_mean([r["student_per_label"][i] for r in per_case])
                                 for i, l in enumerate(labels)}, "sources": {}}
    print(f"{name}: {len(cases)} cases; student {res['student']:.3f}")
    for s in sources:
        rs = [r[s] for r in per_case]
        out = {"dice": nan_mean([r["dice"] for r in rs]),
               "per_label": {names[l]: nan_mean([r["per_label"][i] for r in rs]) for i, l in enumerate(labels)},
               **{k: nan_mean([r[k] for r in rs]) for k in
                  ("disagree_fraction", "disagree_student_right", "disagree_registration_right")},
               "fused": {str(t): nan_mean([r["fused"][t] for r in rs]) for t in THRESHOLDS},
               "kept": {str(t): nan_mean([r["kept"][t] for r in rs]) for t in THRESHOLDS}}
        res["sources"][s] = out
        print(f"  {s}: {out['dice']:.3f}; they disagree on {out['disagree_fraction']:.1%} of the voxels, where the "
              f"student is right on {out['disagree_student_right']:.1%}, {s} on "
              f"{out['disagree_registration_right']:.1%}")
        print("    fused (student where its confidence >= t): " + ", ".join(
            f"t={t} {out['fused'][str(t)]:.3f} (student on {out['kept'][str(t)]:.0%})" for t in THRESHOLDS))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
