"""Seconds per training iteration and peak memory of trainers at the same plans, patch and batch.

Each trainer is timed in its own subprocess (``python -m nnunetv2_oneshot.benchmark.cost SPEC``) with data
augmentation in the main process (nnUNet_n_proc_DA=0), so that time and peak RSS include data loading and
pair synthesis. The registration stage runs once before training and is timed separately.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import List, Optional


def _measure(spec: dict) -> dict:
    import torch
    from nnunetv2_oneshot.benchmark._train import build_trainer
    dev = torch.device(spec["device"])
    trainer = build_trainer(spec)
    trainer.disable_checkpointing = True
    out = {"trainer": spec["trainer"], "device": spec["device"]}
    if hasattr(trainer, "registration_num_iterations"):
        trainer.registration_num_iterations = spec["reg_iters"]
        trainer.initialize()
        trainer._load_oneshot_data()
        t = time.perf_counter()
        trainer.train_registration()
        out["registration_sec_per_iter"] = (time.perf_counter() - t) / spec["reg_iters"]
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        trainer.train_step(next(trainer.dataloader_train))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t)
    out["sec_per_iter"] = sum(times) / len(times)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    out["patch_size"] = list(trainer.configuration_manager.patch_size)
    out["batch_size"] = trainer.batch_size
    return out


def compare(dataset: str, trainers: List[str], plans: str, iters: int = 10, warmup: int = 2, reg_iters: int = 10,
            device: str = "cpu", attributes: Optional[dict] = None, env: Optional[dict] = None,
            log_file: Optional[str] = None) -> List[dict]:
    """Times each trainer; the first is the reference of ``time_ratio`` and ``rss_ratio``.
    ``attributes``: trainer -> attributes to set (e.g. a budget's optimiser), applied before timing."""
    env = dict(env or os.environ, nnUNet_n_proc_DA="0")
    results = []
    for tr in trainers:
        spec = dict(dataset=dataset, trainer=tr, plans=plans, iters=iters, warmup=warmup, reg_iters=reg_iters,
                    device=device, attributes=(attributes or {}).get(tr, {}))
        r = subprocess.run([sys.executable, "-m", "nnunetv2_oneshot.benchmark.cost", json.dumps(spec)], env=env,
                           capture_output=True, text=True)
        if log_file:
            with open(log_file, "a") as f:
                f.write(f"$ timing {tr}\n{r.stdout}\n{r.stderr}\n")
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            raise RuntimeError(f"timing {tr} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        results.append(json.loads(line[-1][7:]))
    for r in results:
        r["time_ratio"] = r["sec_per_iter"] / results[0]["sec_per_iter"]
        r["rss_ratio"] = r["peak_rss_mb"] / results[0]["peak_rss_mb"]
    return results


def format_table(results: List[dict]) -> str:
    lines = [f"patch {results[0]['patch_size']}, batch {results[0]['batch_size']}, device {results[0]['device']}",
             f"{'trainer':34s}{'s/iter':>9s}{'ratio':>8s}{'peak RSS MB':>13s}{'ratio':>8s}{'reg s/iter':>12s}"]
    for r in results:
        reg = f"{r['registration_sec_per_iter']:.3f}" if "registration_sec_per_iter" in r else "-"
        lines.append(f"{r['trainer']:34s}{r['sec_per_iter']:9.3f}{r['time_ratio']:8.2f}{r['peak_rss_mb']:13.0f}"
                     f"{r['rss_ratio']:8.2f}{reg:>12s}")
    return "\n".join(lines)


def cost_ratios(bench, log_file: str, iters: int = 10) -> dict:
    """The benchmark's cost block: OneShotDistillTrainer vs the plain-nnUNetTrainer baseline with the SAME
    budget attributes (so the same optimiser and augmentation), and the inference time ratio from the
    stock ``nnUNetv2_predict`` runs of the benchmark (same student network: should be ~1)."""
    import numpy as np
    from nnunetv2_oneshot.benchmark.methods import METHODS, ONE_LABEL, OURS, training_attributes
    from nnunetv2_oneshot.benchmark.report import load_scores
    base, ours = METHODS[ONE_LABEL], METHODS[OURS]
    attrs = {base.trainer: training_attributes(base, bench.budget), ours.trainer: training_attributes(ours, bench.budget)}
    # never more iterations than the budget trains per epoch (or registers): a smoke-test budget is timed briefly
    res = compare(bench.name, [base.trainer, ours.trainer], bench.plans,
                  iters=min(iters, bench.budget["iterations"]),
                  reg_iters=min(10, bench.budget["registration_iterations"]), device=bench.device, attributes=attrs,
                  env=bench.env, log_file=log_file)
    scores = load_scores(bench)
    inference = float("nan")
    if ONE_LABEL in scores and OURS in scores:
        # per case: a record predicted the test cases and the pool in one call, an older one imagesTs alone
        n_test = len(bench.test_images())
        per_case = lambda recs: np.mean([r["predict_s"] / r.get("predict_cases", n_test) for r in recs])  # noqa: E731
        inference = float(per_case(scores[OURS]) / per_case(scores[ONE_LABEL]))
    return {"train_iter_time_ratio_vs_nnUNetTrainer": res[1]["time_ratio"],
            "peak_rss_ratio_vs_nnUNetTrainer": res[1]["rss_ratio"],
            "inference_time_ratio_vs_nnUNetTrainer": inference,
            "sec_per_iter": {r["trainer"]: r["sec_per_iter"] for r in res},
            "peak_rss_mb": {r["trainer"]: r["peak_rss_mb"] for r in res},
            "registration_sec_per_iter": res[1].get("registration_sec_per_iter"),
            "patch_size": res[0]["patch_size"], "batch_size": res[0]["batch_size"]}


if __name__ == "__main__":
    print("RESULT " + json.dumps(_measure(json.loads(sys.argv[1]))))
