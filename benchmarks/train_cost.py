"""Seconds per training iteration and peak memory of one-shot trainers vs nnUNetTrainer (same plans, patch,
batch). Not a test: prints a table and ratios, and optionally writes JSON. The measurement itself is
``nnunetv2_oneshot.benchmark.cost`` (also used by ``nnunetv2-oneshot benchmark``).

    python benchmarks/train_cost.py 990 -p nnUNetOneShotCPUPlans --iters 10
"""
from __future__ import annotations

import argparse
import json
import sys

from nnunetv2_oneshot.benchmark.cost import compare, format_table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    p.add_argument("-tr", nargs="+", default=["nnUNetTrainer", "OneShotRegAugTrainer"],
                   help="trainers; the first is the reference of the ratios")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reg-iters", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write results here")
    args = p.parse_args(argv)
    results = compare(args.dataset, args.tr, args.p, args.iters, args.warmup, args.reg_iters, args.device)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
