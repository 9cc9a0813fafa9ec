"""Seconds per training iteration and peak memory of one-shot trainers vs nnUNetTrainer (same plans, patch,
batch). Not a test: prints a table and ratios, and optionally writes JSON.

Each trainer runs in its own subprocess with data augmentation in the main process (nnUNet_n_proc_DA=0),
so that time and peak RSS include data loading and pair synthesis. The registration stage is timed
separately (seconds per registration iteration; it runs once before training).

    python benchmarks/train_cost.py 990 -p nnUNetOneShotCPUPlans --iters 10
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _one(args) -> dict:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    dev = torch.device(args.device)
    trainer = get_trainer_from_args(args.dataset, "3d_fullres", "all", args.one, args.p, device=dev)
    trainer.disable_checkpointing = True
    out = {"trainer": args.one, "device": args.device}
    if hasattr(trainer, "registration_num_iterations"):
        trainer.registration_num_iterations = args.reg_iters
        trainer.initialize()
        trainer._load_oneshot_data()
        t = time.perf_counter()
        trainer.train_registration()
        out["registration_sec_per_iter"] = (time.perf_counter() - t) / args.reg_iters
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    times = []
    for i in range(args.warmup + args.iters):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.train_step(next(trainer.dataloader_train))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    out["sec_per_iter"] = sum(times) / len(times)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    out["patch_size"] = list(trainer.configuration_manager.patch_size)
    out["batch_size"] = trainer.batch_size
    return out


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
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(_one(args)))
        return 0
    env = dict(os.environ, nnUNet_n_proc_DA="0")
    results = []
    for tr in args.tr:
        cmd = [sys.executable, __file__, args.dataset, "-p", args.p, "--iters", str(args.iters), "--warmup",
               str(args.warmup), "--reg-iters", str(args.reg_iters), "--device", args.device, "--one", tr]
        print(f"timing {tr} ...", flush=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            sys.exit(f"{tr} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        results.append(json.loads(line[-1][7:]))
    ref = results[0]
    print(f"\npatch {ref['patch_size']}, batch {ref['batch_size']}, device {args.device}")
    print(f"{'trainer':34s}{'s/iter':>9s}{'ratio':>8s}{'peak RSS MB':>13s}{'ratio':>8s}{'reg s/iter':>12s}")
    for r in results:
        r["time_ratio"] = r["sec_per_iter"] / ref["sec_per_iter"]
        r["rss_ratio"] = r["peak_rss_mb"] / ref["peak_rss_mb"]
        reg = f"{r['registration_sec_per_iter']:.3f}" if "registration_sec_per_iter" in r else "-"
        print(f"{r['trainer']:34s}{r['sec_per_iter']:9.3f}{r['time_ratio']:8.2f}{r['peak_rss_mb']:13.0f}"
              f"{r['rss_ratio']:8.2f}{reg:>12s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
