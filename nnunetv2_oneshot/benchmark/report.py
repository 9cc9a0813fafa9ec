"""Benchmark results: the JSON file (schema in the benchmark issue; more keys than asked), the markdown report,
a per-structure bar plot, an overlay and the training curves."""
from __future__ import annotations

import json
import os
import platform
from os.path import isfile, join
from typing import Dict, List, Optional

import numpy as np

from nnunetv2_oneshot.benchmark.methods import METHODS, ONE_LABEL, OURS, PROPAGATION, REGISTRATION, UPPER
from nnunetv2_oneshot.evaluation import nan_mean

GOALS = {"dice_gain_vs_1label": 0.10, "dice_gain_vs_propagation": 0.03, "recovered_fraction": 0.7,
         "train_iter_time_ratio": 1.6,
         # not in the issue: the propagation margin, held against classical registration (the brief's "atlas
         # registration", what a user who trains nothing does)
         "dice_gain_vs_atlas_registration": 0.03}
# The recovered fraction divides by the upper bound's lead over one-label nnU-Net; below this lead (in Dice) the
# ratio is noise over noise (a 500-iteration CT run: lead 0.002, ratio -21), so it is not judged
MIN_HEADROOM = 0.01
# The convergence verdict looks at the last fifth of the epochs: with fewer epochs than this, that is one or
# two points, and a model that has learned nothing yet reads as flat
MIN_EPOCHS_TO_JUDGE = 10


def machine() -> str:
    import torch
    # The vector ISA of torch's CPU kernels too: the CT's method trained 2.2x slower on one 2-core machine
    # (AVX2) than on another, so a record's train time says little without the kind of CPU
    cpu = f"{os.cpu_count()} CPU cores ({torch.backends.cpu.get_cpu_capability()}), {platform.machine()}"
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}{gpu}, torch {torch.__version__}"


def machines(scores: Dict[str, List[dict]]) -> str:
    """The machine(s) the reported pairs were scored on, as their records say, so that a report made again
    elsewhere (``--report-only`` on a laptop for a GPU run) names where the numbers came from. Records
    written before they kept it are counted, not given the machine the report happens to be made on."""
    named = [r.get("machine") for recs in scores.values() for r in recs]
    unnamed = sum(not m for m in named)  # an empty name is no name, as the list below takes it
    return "; ".join([*dict.fromkeys(m for m in named if m)] +
                     ([f"not named by {unnamed} older record{'s' * (unnamed > 1)}"] if unnamed else []))


def load_scores(bench) -> Dict[str, List[dict]]:
    """method -> the score records of the seeds that finished. Training time is read again from the model's
    logs (all legs of a resumed training; see run.training_seconds) where they are there; without them, e.g.
    from score records restored into a fresh output folder, the record's own copy counts. Curves come from
    the record; from the model's checkpoint only for a record scored before records kept them."""
    from nnunetv2_oneshot.benchmark.run import training_seconds
    out = {}
    for m in bench.methods:
        recs = []
        for s in bench.seeds:
            f = bench._score_file(s, m)
            if isfile(f):
                with open(f) as fh:
                    recs.append(json.load(fh))
                if METHODS[m].trainer:
                    t = training_seconds(bench._model_dir(s, METHODS[m]))
                    if t:
                        recs[-1]["train_s"] = t
                    if not recs[-1].get("curves"):  # a checkpoint is large: loaded only when needed
                        recs[-1]["curves"] = checkpoint_curves(bench._model_dir(s, METHODS[m]))
        if recs:
            out[m] = recs
    return out


def aggregate(scores: Dict[str, List[dict]]) -> Dict[str, dict]:
    """Mean over seeds; ``dice_std`` is the spread of the per-seed mean Dice (0 with one seed)."""
    methods = {}
    for m, recs in scores.items():
        means = [r["dice"]["mean"] for r in recs]
        # on the unlabelled pool (see Benchmark.pool_score); None where a seed has none
        pool = None if any(r.get("pool_dice") is None for r in recs) else [float(r["pool_dice"]["mean"]) for r in recs]
        labels = list(recs[0]["dice"]["per_label"])
        methods[m] = {
            "dice_mean": float(np.mean(means)), "dice_std": float(np.std(means)),
            "dice_per_label": {l: nan_mean([r["dice"]["per_label"][l] for r in recs]) for l in labels},
            "hd95_mean": nan_mean([r["hd95"]["mean"] for r in recs]),
            "hd95_per_label": {l: nan_mean([r["hd95"]["per_label"][l] for r in recs]) for l in labels},
            "seeds": [r["seed"] for r in recs],
            "dice_per_seed": [float(x) for x in means],  # in the order of "seeds": for comparisons paired by seed
            "train_minutes": float(np.mean([r.get("train_s", 0.0) for r in recs]) / 60),
            "pool_dice_mean": None if pool is None else float(np.mean(pool)),
            "pool_dice_per_seed": pool,
        }
    return methods


def checkpoint_curves(model_dir: str) -> Optional[dict]:
    """nnU-Net's own logged curves (pseudo Dice EMA, train loss) from a model's final checkpoint; None without
    one. Kept in the score record too, so the report can be made again when the models are gone."""
    import torch
    f = join(model_dir, "checkpoint_final.pth")
    if not isfile(f):
        return None
    log = torch.load(f, map_location="cpu", weights_only=False)["logging"]
    return {"ema_fg_dice": [float(v) for v in log["ema_fg_dice"]],
            "train_losses": [float(v) for v in log["train_losses"]]}


def training_curves(scores: Dict[str, List[dict]], seeds: List[int]) -> tuple:
    """(seed, method -> curves) for the first of ``seeds`` with any curves in its score records; (None, {})
    if none has."""
    for seed in seeds:
        curves = {m: r["curves"] for m, recs in scores.items() for r in recs
                  if r.get("seed") == seed and r.get("curves")}
        if curves:
            return seed, curves
    return None, {}


def convergence(curve: List[float], tail: float = 0.2, tol: float = 0.02,
                min_epochs: int = MIN_EPOCHS_TO_JUDGE) -> dict:
    """Flat = the pseudo-Dice EMA moved less than ``tol`` over the last ``tail`` of the epochs; ``flat`` is None
    (not judged) for a curve shorter than ``min_epochs``."""
    n = max(2, int(round(len(curve) * tail)))
    change = float(curve[-1] - curve[-n]) if len(curve) >= n else float("nan")
    flat = bool(abs(change) < tol) if len(curve) >= min_epochs else None
    return {"last_fraction": tail, "ema_pseudo_dice_change": change, "flat": flat, "epochs": len(curve)}


def verdict(goal: dict) -> str:
    """'met', 'NOT met', or why a goal is not judged (``met`` None)."""
    if goal["met"] is None:
        return f"not judged: {goal['why']}"
    return "met" if goal["met"] else "NOT met"


def goals(methods: Dict[str, dict], cost: Optional[dict]) -> dict:
    g = {}
    if OURS in methods and ONE_LABEL in methods:
        gain = methods[OURS]["dice_mean"] - methods[ONE_LABEL]["dice_mean"]
        g["dice_gain_vs_1label"] = {"value": gain, "goal": GOALS["dice_gain_vs_1label"],
                                    "met": gain >= GOALS["dice_gain_vs_1label"]}
        if UPPER in methods:
            span = methods[UPPER]["dice_mean"] - methods[ONE_LABEL]["dice_mean"]
            if span >= MIN_HEADROOM:
                rec = gain / span
                g["recovered_fraction"] = {"value": rec, "goal": GOALS["recovered_fraction"],
                                           "met": bool(rec >= GOALS["recovered_fraction"])}
            else:
                g["recovered_fraction"] = {"value": None, "goal": GOALS["recovered_fraction"], "met": None,
                                           "why": f"the upper bound is {span:+.3f} above {ONE_LABEL}, "
                                                  f"under {MIN_HEADROOM}: the ratio would be noise"}
    for ref, key in ((PROPAGATION, "dice_gain_vs_propagation"), (REGISTRATION, "dice_gain_vs_atlas_registration")):
        if OURS in methods and ref in methods:
            gain = methods[OURS]["dice_mean"] - methods[ref]["dice_mean"]
            g[key] = {"value": gain, "goal": GOALS[key], "met": gain >= GOALS[key]}
    if cost:
        r = cost["train_iter_time_ratio_vs_nnUNetTrainer"]
        g["train_iter_time_ratio"] = {"value": r, "goal": GOALS["train_iter_time_ratio"],
                                      "met": r <= GOALS["train_iter_time_ratio"]}
    return g


def headroom(methods: Dict[str, dict]) -> Optional[dict]:
    """How far the upper bound is above one-label nnU-Net, and the gain over one-label nnU-Net paired by seed.
    A gain goal above the headroom asks the method to beat supervised training on all the pool's labels."""
    if ONE_LABEL not in methods or UPPER not in methods:
        return None
    span = methods[UPPER]["dice_mean"] - methods[ONE_LABEL]["dice_mean"]
    res = {"upper_minus_1label": span, "gain_goal_within_headroom": bool(span >= GOALS["dice_gain_vs_1label"])}
    if OURS in methods:
        res["gain_vs_1label_per_seed"] = _per_seed_differences(methods[OURS], methods[ONE_LABEL], "dice_per_seed")
    return res


def _per_seed_differences(v: dict, ref: dict, key: str) -> Dict[str, float]:
    """``v[key] - ref[key]`` for the seeds both have, keyed by seed as a string (JSON keys)."""
    a, b = dict(zip(v["seeds"], v[key])), dict(zip(ref["seeds"], ref[key]))
    return {str(s): a[s] - b[s] for s in sorted(a) if s in b}


def parent(name: str, methods: Dict[str, dict]) -> Optional[str]:
    """The method an ablation or variant changes (its name up to the first ``_``: ``RRLMedSAMTrainer_noEMA``
    -> ``RRLMedSAMTrainer``), where that is in the results and not already a reference of every row."""
    base = name.split("_")[0]
    return base if base != name and base in methods and base not in (ONE_LABEL, OURS) else None


def paired(methods: Dict[str, dict]) -> Dict[str, dict]:
    """Every method against one-label nnU-Net, against the method and, for an ablation, against the method it
    changes (:func:`parent`), paired by seed, on the test cases and on the pool: a difference smaller than its
    spread over seeds is noise. Seeds missing from either side are left out; the upper bound (trained on the
    pool's labels) has no pool difference."""
    out = {}
    for name, v in methods.items():
        row = {}
        for ref in (ONE_LABEL, OURS, parent(name, methods)):
            if ref is None or ref == name or ref not in methods:
                continue
            r = methods[ref]
            cmp = {}
            for key, per_seed in (("test", "dice_per_seed"), ("pool", "pool_dice_per_seed")):
                if v.get(per_seed) is None or r.get(per_seed) is None:
                    continue
                diffs = _per_seed_differences(v, r, per_seed)
                if diffs:
                    cmp[key] = {"per_seed": diffs, "mean": float(np.mean(list(diffs.values()))),
                                "std": float(np.std(list(diffs.values())))}
            if cmp:
                row["vs_" + ref] = cmp
        if row:
            out[name] = row
    return out


#: bootstrap resamples of the per-subject CIs, and their seed (the interval is the same every time it is made)
BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


def bootstrap_ci(diffs, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple:
    """Percentile bootstrap CI of the mean of ``diffs`` (one value per subject): subjects are resampled with
    replacement. (nan, nan) with fewer than 2 values."""
    d = np.asarray(diffs, float)
    if d.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (resamples, d.size))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def per_case_dice(recs: List[dict]) -> Dict[str, float]:
    """case -> mean Dice over the seeds of ``recs`` (score records that kept per-case Dice)."""
    cases = {}
    for r in recs:
        for c, v in (r["dice"].get("per_case") or {}).items():
            cases.setdefault(c, []).append(v)
    return {c: nan_mean(v) for c, v in sorted(cases.items())}


def per_subject(scores: Dict[str, List[dict]], refs=(ONE_LABEL, REGISTRATION)) -> Dict[str, dict]:
    """Every method against each of ``refs``, paired by subject: per held-out case the difference of the Dice
    (each side averaged over its seeds), its mean over the cases, a 95% bootstrap CI of that mean, and the
    fraction of cases the method wins. Many scanned subjects, not a handful of seeds, carry the uncertainty.
    Only the cases both sides scored count; records without per-case Dice give nothing."""
    dice = {m: per_case_dice(recs) for m, recs in scores.items()}
    out = {}
    for name in scores:
        row = {}
        for ref in refs:
            if ref == name or ref not in dice:
                continue
            common = [c for c in dice[name] if c in dice[ref] and np.isfinite(dice[name][c] - dice[ref][c])]
            if len(common) < 2:
                continue
            d = np.array([dice[name][c] - dice[ref][c] for c in common])
            lo, hi = bootstrap_ci(d)
            row["vs_" + ref] = {"mean": float(d.mean()), "ci95": [lo, hi], "cases": len(common),
                                "win_fraction": float(np.mean(d > 0))}
        if row:
            out[name] = row
    return out


def bar_plot(methods: Dict[str, dict], out_file: str, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(methods)
    labels = list(next(iter(methods.values()))["dice_per_label"]) + ["mean"]
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(labels) * max(1, len(names) / 3)), 4.5))
        w = 0.8 / len(names)
        x = np.arange(len(labels))
        for i, m in enumerate(names):
            vals = [methods[m]["dice_per_label"][l] for l in labels[:-1]] + [methods[m]["dice_mean"]]
            ax.bar(x + (i - (len(names) - 1) / 2) * w, np.nan_to_num(vals), w, label=m)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("Dice")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach the top
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(out_file, dpi=100)
        plt.close(fig)


def curves_plot(curves: Dict[str, dict], out_file: str, title: str):
    from nnunetv2_oneshot.plotting import plot_curves
    if not curves:
        return
    n = max(len(c["ema_fg_dice"]) for c in curves.values())
    plot_curves(out_file, list(range(1, n + 1)),
                {m: c["ema_fg_dice"] + [np.nan] * (n - len(c["ema_fg_dice"])) for m, c in curves.items()},
                title, "epoch", ylabel="pseudo Dice (EMA)")


def markdown(res: dict, files: Dict[str, str]) -> str:
    m = res["methods"]
    scored = res.get("scored_split", "test")
    lines = [f"# Benchmark: {res['dataset']}", "",
             f"Machine: {res['machine']}. Plans `{res['plans']}`. Seeds {res['seeds']}. Budget per model: "
             f"{res['budget']['epochs']} epochs x {res['budget']['iterations']} iterations "
             f"({res['budget']['optimizer']}, lr {res['budget']['lr']}); registration "
             f"{res['budget']['registration_iterations']} iterations.",
             f"Split: atlas `{res['split']['atlas']}`, {len(res['split']['unlabelled'])} unlabelled, "
             f"{scored} {', '.join('`%s`' % t for t in res['split'].get(scored, []))} (scored; seen by no "
             f"stage).", "",
             "| method | Dice mean | Dice std (seeds) | HD95 mean (mm) | seeds | train min | pool Dice |",
             "|---|---|---|---|---|---|---|"]
    for name, v in m.items():
        pool = "n/a" if v.get("pool_dice_mean") is None else f"{v['pool_dice_mean']:.3f}"
        std = f"{v['dice_std']:.3f}" if len(v["seeds"]) > 1 else "n/a"  # one seed has no spread, not a zero one
        lines.append(f"| {name} | {v['dice_mean']:.3f} | {std} | {v['hd95_mean']:.1f} | "
                     f"{len(v['seeds'])} | {v['train_minutes']:.1f} | {pool} |")
    lines += ["", "Pool Dice: the same models on the unlabelled pool scans, against their true labels. The one-shot "
                  "trainers saw these scans without labels; changes to the method are judged on this column, "
                  "never on the test donors. n/a for the upper bound, which trained on those labels."]
    labels = list(next(iter(m.values()))["dice_per_label"])
    lines += ["", "Dice per structure (mean over seeds):", "",
              "| structure | " + " | ".join(m) + " |", "|---|" + "---|" * len(m)]
    for l in labels:
        lines.append(f"| {l} | " + " | ".join(f"{v['dice_per_label'][l]:.3f}" for v in m.values()) + " |")
    if res.get("goals"):
        lines += ["", "Goals (from the benchmark issue; dice_gain_vs_atlas_registration, not in it, holds the method "
                      f"to the propagation margin against classical registration, {REGISTRATION}):", ""]
        for k, g in res["goals"].items():
            value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
            lines.append(f"- {k}: {value} (goal {'<=' if k.endswith('time_ratio') else '>='} {g['goal']}) -> "
                         f"**{verdict(g)}**")
        # a row with a seed the others lack moves its mean, not the others': say so, or the goals and the
        # paired differences below seem to disagree
        seed_sets = {tuple(m[r]["seeds"]) for r in (OURS, ONE_LABEL, UPPER, PROPAGATION, REGISTRATION) if r in m}
        if len(seed_sets) > 1:
            lines += ["", "The goals compare the table's means, each over its own seeds (the seeds column); the "
                          "differences paired by seed below use only the seeds both sides have."]
    h = res.get("headroom")
    if h:
        paired = ", ".join(f"{v:+.3f}" for v in h.get("gain_vs_1label_per_seed", {}).values())
        lines += ["", f"Headroom: the upper bound is {h['upper_minus_1label']:+.3f} above {ONE_LABEL}"
                      + ("" if h["gain_goal_within_headroom"] else
                         f", less than the gain goal ({GOALS['dice_gain_vs_1label']}): at this budget that goal "
                         f"would need the method to beat supervised training on all the pool's labels")
                      + "." + (f" {OURS} − {ONE_LABEL}, paired by seed: {paired}." if paired else "")]
    if res.get("paired"):
        refs = [r for r in (ONE_LABEL, OURS) if r in m]
        cell = lambda d: "" if d is None else f"{d['mean']:+.3f} " + (
            f"± {d['std']:.3f}" if len(d["per_seed"]) > 1 else "(1 seed)")
        # ablations also against the method they change: the difference that says what the part is worth
        parents = {name: parent(name, m) for name in res["paired"]}
        ablations = any(parents.values())
        lines += ["", "Differences paired by seed (mean ± sd over seeds; a difference within its sd is noise):", "",
                  "| method | " + " | ".join(f"test vs {r} | pool vs {r}" for r in refs)
                  + (" | test vs its parent | pool vs its parent" if ablations else "") + " |",
                  "|---|" + "---|---|" * (len(refs) + ablations)]
        for name, row in res["paired"].items():
            cells = [cell(row.get("vs_" + r, {}).get(k)) for r in refs for k in ("test", "pool")]
            if ablations:
                cells += [cell(row.get("vs_" + parents[name], {}).get(k)) if parents[name] else ""
                          for k in ("test", "pool")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if ablations:
            lines += ["", "Parent: the method an ablation changes (its name up to the first `_`), on the seeds "
                          "both have."]
    if res.get("per_subject"):
        refs = [r for r in (ONE_LABEL, REGISTRATION) if any("vs_" + r in row for row in res["per_subject"].values())]
        cell = lambda d: "" if d is None else (f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                                               f"wins {100 * d['win_fraction']:.0f}% of {d['cases']}")
        lines += ["", f"Differences paired by subject on the {res.get('scored_split', 'test')} scans (mean Dice "
                      f"difference, 95% bootstrap CI over subjects, share of subjects where the method is better):",
                  "", "| method | " + " | ".join(f"vs {r}" for r in refs) + " |", "|---|" + "---|" * len(refs)]
        for name, row in res["per_subject"].items():
            lines.append(f"| {name} | " + " | ".join(cell(row.get("vs_" + r)) for r in refs) + " |")
    if res.get("convergence"):
        c = res["convergence"]
        seed = c.get("seed", res["seeds"][0])
        if c["flat"] is None:
            judged = (f"not judged: {c.get('epochs')} epochs are fewer than {MIN_EPOCHS_TO_JUDGE}, too short a "
                      f"budget for any comparison")
        else:
            judged = "flat" if c["flat"] else "NOT flat: the budget is too short"
        lines += ["", f"Convergence of the upper bound ({UPPER}, seed {seed}): pseudo-Dice EMA changed "
                      f"by {c['ema_pseudo_dice_change']:+.3f} over the last {int(c['last_fraction'] * 100)}% of "
                      f"the epochs -> {judged}."]
    if res.get("registration"):
        r = res["registration"]
        d = "n/a" if r.get("warped_label_dice") is None else f"{r['warped_label_dice']:.3f}"
        lines += ["", f"Registration ({r.get('source')}'s net): atlas labels warped onto the pool, Dice vs the "
                      f"pool's true labels {d}; folded voxels {100 * r['folding_fraction']:.3f}%."]
    if res.get("cost"):
        c = res["cost"]
        lines += ["", f"Cost (same patch and batch): training iteration time x"
                      f"{c['train_iter_time_ratio_vs_nnUNetTrainer']:.2f}, peak RSS "
                      f"x{c['peak_rss_ratio_vs_nnUNetTrainer']:.2f}, inference time "
                      f"x{c['inference_time_ratio_vs_nnUNetTrainer']:.2f} vs nnUNetTrainer."]
    lines += [""] + [f"![{k}]({os.path.basename(v)})" for k, v in files.items()]
    return "\n".join(lines) + "\n"


def write(bench, cost: Optional[dict]) -> dict:
    from nnunetv2_oneshot.benchmark.run import HELD_OUT
    from nnunetv2_oneshot.cli.demo import overlay_png
    stem = bench.name + bench.suffix  # <dataset>_validation.* for the validation split
    scores = load_scores(bench)
    if not scores:
        raise RuntimeError("no finished runs to report")
    methods = aggregate(scores)
    regs = [r["registration"] for r in scores.get(PROPAGATION, []) if "registration" in r]
    registration = None
    if regs:
        wd = [r["warped_label_dice"] for r in regs if r["warped_label_dice"] is not None]
        registration = {"warped_label_dice": float(np.mean(wd)) if wd else None,
                        "folding_fraction": float(np.mean([r["folding_fraction"] for r in regs])),
                        "source": regs[0]["source"]}
    cfg = bench.config()
    res = {"dataset": bench.name, "scored_split": bench.split, "budget": bench.budget, "seeds": bench.seeds, "machine": machines(scores),
           "plans": bench.plans, "split": cfg["split"], "methods": methods, "cost": cost,
           "registration": registration, "goals": goals(methods, cost), "headroom": headroom(methods),
           "paired": paired(methods), "per_subject": per_subject(scores)}
    curve_seed, curves = training_curves(scores, bench.seeds)
    if UPPER in curves:
        res["convergence"] = dict(convergence(curves[UPPER]["ema_fg_dice"]), seed=curve_seed)
    files = {}
    bar = join(bench.out, f"{stem}_dice.png")
    bar_plot(methods, bar, f"{bench.name}: Dice per structure on the {bench.split} cases (mean over seeds)")
    files["Dice per structure"] = bar
    if curves:
        f = join(bench.out, f"{stem}_curves.png")
        curves_plot(curves, f, f"{bench.name}: nnU-Net's pseudo Dice (EMA) per epoch, seed {curve_seed}")
        files["training curves"] = f
    images, ref = (join(bench.raw, f) for f in HELD_OUT[bench.split])
    case = sorted(x for x in os.listdir(ref) if x.endswith(bench.ds.file_ending))[0]
    image = join(images, case[:-len(bench.ds.file_ending)] + "_0000" + bench.ds.file_ending)
    preds = {m: join(bench._seed_dir(bench.seeds[0]), "predictions" + bench.suffix, m, case) for m in methods
             if m in (ONE_LABEL, PROPAGATION, REGISTRATION, OURS, UPPER)}
    preds = {k: v for k, v in preds.items() if isfile(v)}
    f = join(bench.out, f"{stem}_overlay.png")
    if preds and isfile(image):
        overlay_png(image, join(ref, case), preds, f)
        files["overlay"] = f
    elif isfile(f):  # drawn by an earlier report; this folder no longer has the predictions to redraw it
        files["overlay"] = f
    with open(join(bench.out, f"{stem}.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(join(bench.out, f"{stem}.md"), "w") as fh:
        fh.write(markdown(res, files))
    return res
