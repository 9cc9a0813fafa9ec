"""How cost grows with the number of unlabelled scans (issue 4, item 5). Not a test: prints a table.

For N in 2, 4, 8, 16 it makes a copy of a one-shot raw dataset with N unlabelled scans (the first N of the
pool; beyond the pool's size, copies of its scans under new names: this study is about cost, not accuracy),
then times
  - preprocessing: ``nnunetv2-oneshot plan ID --cpu`` (nnU-Net's fingerprint + plan + preprocess, plus the
    unlabelled scans with the same plans), wall seconds;
  - training: seconds per iteration and peak RSS of OneShotDistillTrainer_cpu (registration stage timed
    separately, per iteration), data loading in-process (benchmark/cost.py).
Per-iteration cost should stay flat: a step sees one pair whatever N is; only registration's pair count,
the canvas and preprocessing grow with N. Run it on an otherwise idle machine.

    python benchmarks/scaling_unlabelled.py 990 --json benchmarks/results/scaling_unlabelled_brain_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from os.path import join

from nnunetv2_oneshot.benchmark.cost import compare
from nnunetv2_oneshot.benchmark.report import machine
from nnunetv2_oneshot.process import bin_path, run_logged


def make_subset(src: str, raw_root: str, dataset_id: int, n: int) -> str:
    """Copy of the raw dataset ``src`` with ``n`` unlabelled scans, as Dataset{id}_ScaleN{n}."""
    name = f"Dataset{dataset_id:03d}_ScaleN{n}"
    dst = join(raw_root, name)
    shutil.rmtree(dst, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        shutil.copytree(join(src, sub), join(dst, sub))
    pool = sorted(f for f in os.listdir(join(src, "imagesUnlabelled")) if not f.startswith("."))
    os.makedirs(join(dst, "imagesUnlabelled"))
    for i in range(n):
        f = pool[i % len(pool)]
        new = f if i < len(pool) else f.replace("_0000", f"_copy{i // len(pool)}_0000")
        shutil.copy(join(src, "imagesUnlabelled", f), join(dst, "imagesUnlabelled", new))
    with open(join(src, "dataset.json")) as f:
        ds = json.load(f)
    ds.pop("oneshot", None)  # the split block lists the original pool; this copy's pool is its folder
    with open(join(dst, "dataset.json"), "w") as f:
        json.dump(ds, f, indent=1)
    return name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="source one-shot dataset id or name (in $nnUNet_raw)")
    p.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--trainer", default="OneShotDistillTrainer_cpu")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--first-id", type=int, default=970, help="dataset ids used for the copies (N of them)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from nnunetv2_oneshot.nnunet_io import dataset_name, raw_dataset_folder
    src = raw_dataset_folder(dataset_name(args.dataset))
    work = tempfile.mkdtemp(prefix="oneshot_scaling_")
    env = dict(os.environ, nnUNet_raw=join(work, "raw"), nnUNet_preprocessed=join(work, "pre"),
               nnUNet_results=join(work, "res"), nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    rows = []
    try:
        for k, n in enumerate(args.n):
            did = args.first_id + k
            name = make_subset(src, env["nnUNet_raw"], did, n)
            print(f"[N={n}] preprocessing {name} ...", flush=True)
            t = run_logged([bin_path("nnunetv2-oneshot"), "plan", str(did), "--cpu"], env, join(work, f"plan{n}.log"))
            print(f"[N={n}] timing {args.trainer} ({args.iters} iterations) ...", flush=True)
            r = compare(str(did), [args.trainer], "nnUNetOneShotCPUPlans", iters=args.iters, env=env,
                        log_file=join(work, f"cost{n}.log"))[0]
            rows.append({"n_unlabelled": n, "preprocess_s": t, "sec_per_iter": r["sec_per_iter"],
                         "peak_rss_mb": r["peak_rss_mb"],
                         "registration_sec_per_iter": r.get("registration_sec_per_iter")})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    print(f"\n{args.trainer}, CPU plans; ratios vs N={base['n_unlabelled']}")
    print(f"{'N':>4}{'preprocess s':>14}{'s/iter':>9}{'ratio':>7}{'peak RSS MB':>13}{'ratio':>7}{'reg s/iter':>12}")
    for r in rows:
        print(f"{r['n_unlabelled']:>4}{r['preprocess_s']:>14.1f}{r['sec_per_iter']:>9.3f}"
              f"{r['sec_per_iter'] / base['sec_per_iter']:>7.2f}{r['peak_rss_mb']:>13.0f}"
              f"{r['peak_rss_mb'] / base['peak_rss_mb']:>7.2f}{r['registration_sec_per_iter'] or 0:>12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": os.path.basename(src), "trainer": args.trainer, "machine": machine(),
                       "rows": rows, "date": time.strftime("%Y-%m-%d")}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
