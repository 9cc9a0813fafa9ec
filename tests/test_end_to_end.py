"""Types the stock nnU-Net commands in subprocesses, as a user would, on a tiny one-shot dataset."""
import os
import shutil
import subprocess
import sys

import pytest

from toy_data import make_toy_dataset

BIN = os.path.dirname(sys.executable)


def _run(cmd, env, cwd):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_toy_dataset(str(root / "raw"), dataset_id=901)
    # exactly what the issue allows: the three nnU-Net folders (PATH/HOME so that a shell works at all)
    env = {"PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(root)),
           "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "res")}
    return root, env


def test_stock_plan_train_predict_evaluate(workdir):
    root, env = workdir
    raw_before = sorted(p.relative_to(root / "raw") for p in (root / "raw").rglob("*"))
    _run([f"{BIN}/nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "3d_fullres", "-np", "1"], env, root)
    log = _run([f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", "OneShotRegAugTrainer_tiny",
                "-device", "cpu"], env, root)
    assert "Stage 1/2" in log and "Stage 2/2" in log and "no labelled validation data" in log
    model = root / "res" / "Dataset901_Toy" / "OneShotRegAugTrainer_tiny__nnUNetPlans__3d_fullres" / "fold_all"
    assert (model / "checkpoint_final.pth").is_file() and (model / "progress_registration.png").is_file()
    # unlabelled images were preprocessed beside (not inside) nnU-Net's data folder
    pre = root / "pre" / "Dataset901_Toy"
    assert sorted(p.name for p in (pre / "nnUNetPlans_3d_fullres_unlabelled").glob("*.npy")) == \
        [f"toy_u{i:02d}.npy" for i in range(4)]
    assert not any("toy_u" in p.name for p in (pre / "nnUNetPlans_3d_fullres").iterdir())

    _run([f"{BIN}/nnUNetv2_predict", "-i", str(root / "raw/Dataset901_Toy/imagesTs"), "-o", str(root / "pred"),
          "-d", "901", "-c", "3d_fullres", "-f", "all", "-tr", "OneShotRegAugTrainer_tiny", "-device", "cpu",
          "-npp", "1", "-nps", "1"], env, root)
    _run([f"{BIN}/nnunetv2-oneshot", "propagate", "-i", str(root / "raw/Dataset901_Toy/imagesTs"),
          "-o", str(root / "prop"), "-d", "901", "-tr", "OneShotRegAugTrainer_tiny", "-device", "cpu"], env, root)

    from nnunetv2_oneshot.evaluation import dice_per_label
    import json
    dj = json.load(open(root / "raw/Dataset901_Toy/dataset.json"))
    ref = str(root / "raw/Dataset901_Toy/labelsTs")
    pred = dice_per_label(str(root / "pred"), ref, dj)
    prop = dice_per_label(str(root / "prop"), ref, dj)
    # chance: a labelling that ignores the image. The outer ellipsoid covers ~10% of the volume, so a
    # random labelling with the true class frequencies scores Dice ~0.1 on it.
    assert pred["per_label"]["outer"] > 0.5, pred
    assert prop["mean"] > 0.5, prop
    # nothing in the user's raw data was modified or added
    assert sorted(p.relative_to(root / "raw") for p in (root / "raw").rglob("*")) == raw_before
