"""Smoke test of the README's main command at the tiny budget (the full budget is measured, not tested)."""
import json
import os
import subprocess
import sys

BIN = os.path.dirname(sys.executable)


def test_demo_quick_builds_trains_predicts_and_scores(tmp_path):
    env = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.pop(k, None)  # the demo must set up its own folders
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "demo", "--quick", "--workdir", str(tmp_path / "demo")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for step in ("[1/6]", "[3/6] train nnUNetTrainer (1 label)", "[4/6] train OneShotDistillTrainer", "[6/6]"):
        assert step in r.stdout
    scores = json.load(open(tmp_path / "demo" / "dice.json"))
    assert set(scores) == {"nnUNetTrainer (1 label)", "OneShotDistillTrainer", "atlas propagation"}
    for method in scores.values():
        assert len(method["per_label"]) == 14
        assert all(0.0 <= v <= 1.0 for v in method["per_label"].values())
    # the registration net was trained and used: label propagation is far above chance (~0.05 per structure)
    assert scores["atlas propagation"]["mean"] > 0.2
    assert (tmp_path / "demo" / "overlay.png").stat().st_size > 10000
    assert "thalamus_left" in (tmp_path / "demo" / "dice_table.txt").read_text()
