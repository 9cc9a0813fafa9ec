"""Types the stock nnU-Net commands in subprocesses, as a user would, on a tiny one-shot dataset."""
import os

import numpy as np
import pytest


from conftest import BIN, run_cmd as _run, snapshot


@pytest.fixture(scope="module")
def workdir(toy_planned):
    return toy_planned


def test_stock_plan_train_predict_evaluate(workdir):
    root, env, raw_before = workdir
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
    # no -device: on a machine without a GPU it must pick the CPU (it once died in torch's CUDA deserialiser)
    _run([f"{BIN}/nnunetv2-oneshot", "propagate", "-i", str(root / "raw/Dataset901_Toy/imagesTs"),
          "-o", str(root / "prop"), "-d", "901", "-tr", "OneShotRegAugTrainer_tiny"], env, root)

    from nnunetv2_oneshot.evaluation import dice_per_label
    import json
    dj = json.load(open(root / "raw/Dataset901_Toy/dataset.json"))
    ref = str(root / "raw/Dataset901_Toy/labelsTs")
    pred = dice_per_label(str(root / "pred"), ref, dj)
    prop = dice_per_label(str(root / "prop"), ref, dj)
    # chance: a labelling that ignores the image. The outer ellipsoid covers ~10% of the volume, so a
    # random labelling with the true class frequencies scores Dice ~0.1 on it.
    assert pred["per_label"]["outer"] > 0.5, pred
    # propagation after 20 registration iterations: the small inner ellipsoid depends on the toy's random offsets
    # (0.23 and up seen); a geometry or export bug would sink the outer one too
    assert prop["per_label"]["outer"] > 0.5, prop
    # nothing in the user's raw data was modified or added
    assert snapshot(root / "raw") == raw_before


def test_classical_propagation_needs_no_model(workdir):
    """``propagate --classical``: the labelled case registered onto each image with SimpleITK, written in the
    image's own geometry, the raw data untouched; a missing dataset fails in one line before any compute."""
    import json
    import subprocess
    import SimpleITK as sitk
    from nnunetv2_oneshot.evaluation import dice_per_label
    root, env, raw_before = workdir
    ts = root / "raw/Dataset901_Toy/imagesTs"
    log = _run([f"{BIN}/nnunetv2-oneshot", "propagate", "--classical", "-i", str(ts), "-o", str(root / "classical"),
                "-d", "901"], env, root)
    assert "registered 2/2: toy_t01" in log
    img, seg = sitk.ReadImage(str(ts / "toy_t00_0000.nii.gz")), sitk.ReadImage(str(root / "classical/toy_t00.nii.gz"))
    assert seg.GetSize() == img.GetSize() and seg.GetSpacing() == img.GetSpacing()
    dj = json.load(open(root / "raw/Dataset901_Toy/dataset.json"))
    res = dice_per_label(str(root / "classical"), str(root / "raw/Dataset901_Toy/labelsTs"), dj)
    assert res["per_label"]["outer"] > 0.8 and res["per_label"]["inner"] > 0.5, res  # unwarped atlas: see below
    unwarped = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "raw/Dataset901_Toy/labelsTr/toy_000.nii.gz")))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "raw/Dataset901_Toy/labelsTs/toy_t00.nii.gz")))
    found = sitk.GetArrayFromImage(seg)
    d = lambda a, b: 2 * np.sum((a == 2) & (b == 2)) / (np.sum(a == 2) + np.sum(b == 2))  # noqa: E731
    assert d(found, truth) > d(unwarped, truth)  # registration moved the inner structure toward the truth
    assert snapshot(root / "raw") == raw_before
    r = subprocess.run([f"{BIN}/nnunetv2-oneshot", "propagate", "--classical", "-i", str(ts), "-o",
                        str(root / "classical2"), "-d", "977"], env=env, cwd=root, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (root / "classical2").exists()


def test_continue_restores_registration_and_reuses_unlabelled_cache(workdir):
    root, env, _ = workdir
    model = root / "res" / "Dataset901_Toy" / "OneShotRegAugTrainer_tiny__nnUNetPlans__3d_fullres" / "fold_all"
    if not (model / "checkpoint_final.pth").is_file():
        pytest.skip("needs the model trained by test_stock_plan_train_predict_evaluate")
    cache = root / "pre" / "Dataset901_Toy" / "nnUNetPlans_3d_fullres_unlabelled" / "toy_u00.npy"
    mtime = cache.stat().st_mtime_ns
    log = _run([f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", "OneShotRegAugTrainer_tiny",
                "-device", "cpu", "--c"], env, root)
    assert "Registration stage already done" in log
    assert "using 4 cached preprocessed cases" in log
    assert cache.stat().st_mtime_ns == mtime


def _toy_dataset_and_plans(workdir):
    """The toy dataset's one-shot view and the nnUNetPlans that the stock-plan test made."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_oneshot.validation import validate_oneshot_dataset
    root, _, _ = workdir
    plans_file = root / "pre" / "Dataset901_Toy" / "nnUNetPlans.json"
    if not plans_file.is_file():
        pytest.skip("needs the plans made by test_stock_plan_train_predict_evaluate")
    return validate_oneshot_dataset(str(root / "raw" / "Dataset901_Toy")), PlansManager(str(plans_file))


def test_unlabelled_preprocessing_is_redone_when_plans_change(workdir, tmp_path):
    import numpy as np
    from nnunetv2_oneshot.unlabelled import preprocess_unlabelled
    ds, pm = _toy_dataset_and_plans(workdir)
    out = str(tmp_path / "nnUNetPlans_3d_fullres")
    kw = dict(configuration="3d_fullres", dataset_json=ds.dataset_json, preprocessed_dataset_folder=out,
              verbose=False)
    folder = preprocess_unlabelled(ds.unlabelled, pm, pm.get_configuration("3d_fullres"), **kw)
    assert folder == out + "_unlabelled"
    shape1 = np.load(os.path.join(folder, "toy_u00.npy")).shape
    # same plans: cached (file untouched)
    t = os.stat(os.path.join(folder, "toy_u00.npy")).st_mtime_ns
    preprocess_unlabelled(ds.unlabelled, pm, pm.get_configuration("3d_fullres"), **kw)
    assert os.stat(os.path.join(folder, "toy_u00.npy")).st_mtime_ns == t
    # coarser target spacing in the plans: redone, at the new resolution
    plans = pm.plans
    plans["configurations"]["3d_fullres"]["spacing"] = [3.0, 3.0, 3.0]
    pm2 = type(pm)(plans)
    preprocess_unlabelled(ds.unlabelled, pm2, pm2.get_configuration("3d_fullres"), **kw)
    shape2 = np.load(os.path.join(folder, "toy_u00.npy")).shape
    assert shape2[1] < shape1[1]


def test_unlabelled_cache_built_by_another_training_meanwhile_is_kept_whole(workdir, tmp_path):
    """Trainings started side by side (folds, seeds) each build the cache; one that finishes second keeps
    the first one's whole cache instead of deleting it under the other's feet, and leaves nothing behind."""
    import shutil
    from nnunetv2_oneshot.unlabelled import preprocess_unlabelled
    ds, pm = _toy_dataset_and_plans(workdir)
    cm = pm.get_configuration("3d_fullres")
    kw = dict(configuration="3d_fullres", dataset_json=ds.dataset_json, verbose=False)
    other = preprocess_unlabelled(ds.unlabelled, pm, cm, preprocessed_dataset_folder=str(tmp_path / "a"), **kw)
    (tmp_path / "a_unlabelled" / "built_by_the_other.txt").write_text("")
    out = tmp_path / "b_unlabelled"

    class OtherFinishesFirst:  # the configuration, except that the other training's cache lands meanwhile
        def __getattr__(self, k):
            return getattr(cm, k)

        @property
        def preprocessor_class(self):
            def make(verbose=False):
                real = cm.preprocessor_class(verbose=verbose)

                class P:
                    def run_case(self, *a):
                        if not out.exists():
                            shutil.copytree(other, out)
                        return real.run_case(a[0], a[1], a[2], cm, a[4])
                return P()
            return make

    folder = preprocess_unlabelled(ds.unlabelled, pm, OtherFinishesFirst(), preprocessed_dataset_folder=str(tmp_path / "b"),
                                   **kw)
    assert folder == str(out) and (out / "built_by_the_other.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_unlabelled", "b_unlabelled"]  # no .tmp/.old left
    log = []
    preprocess_unlabelled(ds.unlabelled, pm, cm, preprocessed_dataset_folder=str(tmp_path / "b"),
                          **dict(kw, verbose=True), log=log.append)
    assert log and log[0].startswith("Unlabelled images: using")  # the kept cache is a valid one


def test_fold_0_and_fold_all_train_on_the_labelled_case_and_validate_on_it(workdir):
    root, env, _ = workdir
    code = ("from nnunetv2.run.run_training import get_trainer_from_args\n"
            "import torch\n"
            "for fold in (0, 'all'):\n"
            "    t = get_trainer_from_args('901', '3d_fullres', fold, 'OneShotRegAugTrainer_tiny',"
            " device=torch.device('cpu'))\n"
            "    print(fold, t.do_split())\n")
    out = _run([f"{BIN}/python", "-c", code], env, root)
    assert "0 (['toy_000'], ['toy_000'])" in out and "all (['toy_000'], ['toy_000'])" in out


def _with_trainer(workdir, trainer: str, body: str, fold: str = "'all'") -> str:
    """Runs ``body`` in a fresh process, with ``t`` built exactly as nnUNetv2_train builds a trainer."""
    return _with_trainers(workdir, [trainer], body, fold)


def _with_trainers(workdir, trainers, body: str, fold: str = "'all'") -> str:
    """``body`` once per trainer (``name``, and ``t`` built as nnUNetv2_train builds it), all in ONE fresh
    process: each process pays ~10 s of importing nnU-Net, so parametrised cases share one."""
    root, env, _ = workdir
    code = ("from nnunetv2.run.run_training import get_trainer_from_args\n"
            "import torch, numpy as np\n"
            f"for name in {list(trainers)!r}:\n"
            f"    t = get_trainer_from_args('901', '3d_fullres', {fold}, name, device=torch.device('cpu'))\n"
            + "".join("    " + line + "\n" for line in body.splitlines()))
    return _run([f"{BIN}/python", "-c", code], env, root)


MIRRORING = {"OneShotRegAugTrainer_tiny": None, "OneShotDistillTrainer_tiny": None, "nnUNetTrainer_oneshotTiny": None,
             "nnUNetTrainer_oneshotBaseline": (0, 1, 2)}


@pytest.fixture(scope="module")
def mirroring(workdir):
    return _with_trainers(workdir, MIRRORING, "m = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]\n"
                                              "print('AXES', name, m, t.inference_allowed_mirroring_axes)\n")


@pytest.mark.parametrize("trainer", MIRRORING)
def test_mirroring_in_training_and_test_time_augmentation(mirroring, trainer):
    expected = MIRRORING[trainer]
    assert f"AXES {trainer} {expected} {expected}\n" in mirroring


def test_checkpoint_tells_predict_not_to_mirror(workdir):
    root, _, _ = workdir
    import torch
    ckpt = root / "res" / "Dataset901_Toy" / "OneShotRegAugTrainer_tiny__nnUNetPlans__3d_fullres" / "fold_all" / \
        "checkpoint_final.pth"
    if not ckpt.is_file():
        pytest.skip("needs the model of test_stock_plan_train_predict_evaluate")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["inference_allowed_mirroring_axes"] is None


CLASS_PRIOR = {"nnUNetTrainer_oneshotTiny": True, "OneShotRegAugTrainer_tiny": True,
               "nnUNetTrainer_oneshotBaseline": False}


@pytest.fixture(scope="module")
def class_prior(workdir):
    label = workdir[0] / "raw" / "Dataset901_Toy" / "labelsTr" / "toy_000.nii.gz"
    return _with_trainers(workdir, CLASS_PRIOR, (
        "import SimpleITK as sitk\n"
        "t.initialize()\n"
        "heads = t.network.decoder.seg_layers\n"
        "p = torch.softmax(heads[0].bias.detach(), 0).numpy()\n"
        f"lab = sitk.GetArrayFromImage(sitk.ReadImage('{label}'))\n"
        "f = np.bincount(lab.ravel(), minlength=3) / lab.size\n"
        "same = all(torch.equal(h.bias, heads[0].bias) for h in heads)\n"
        "print('PRIOR', name, bool(np.abs(p - f).max() < 0.02 and same))\n"))


@pytest.mark.parametrize("trainer", CLASS_PRIOR)
def test_class_prior_init_sets_the_head_biases_to_the_label_frequencies(class_prior, trainer):
    assert f"PRIOR {trainer} {CLASS_PRIOR[trainer]}\n" in class_prior


@pytest.mark.parametrize("log_every", [2, 12])
def test_registration_divergence_is_caught_and_rolled_back(workdir, log_every):
    """Adam at lr 5 blows the registration up; the guard restores the best state and halves the lr, and the
    stage ends with finite weights. With a log point only every 12 iterations the net has already blown up
    at the first one, so the best state is the untrained net's (iteration 0)."""
    out = _with_trainer(workdir, "OneShotRegAugTrainer_tiny", (
        "torch.manual_seed(0); np.random.seed(0)\n"
        f"t.registration_lr, t.registration_num_iterations, t.registration_log_every = 5.0, 24, {log_every}\n"
        "t.disable_checkpointing = True\n"
        "t.initialize(); t._load_oneshot_data(); t.train_registration()\n"
        "ok = all(torch.isfinite(p).all() for p in t.registration_net.parameters())\n"
        "print('LR', t.registration_optimizer.param_groups[0]['lr'], 'FINITE', bool(ok))\n"), fold="0")
    assert "registration diverged at it" in out
    if log_every == 12:
        assert "at it 0): restored" in out
    lr = float(out.split("LR ")[1].split()[0])
    assert lr < 5.0 and "FINITE True" in out


def test_registration_init_from_another_trainers_checkpoint(workdir, tmp_path):
    """A Distill trainer given the RegAug model's checkpoint skips stage 1 and has exactly that net; a net of
    another width, or a file without one, stops with a one-line error."""
    model = workdir[0] / "res" / "Dataset901_Toy" / "OneShotRegAugTrainer_tiny__nnUNetPlans__3d_fullres" / "fold_all"
    if not (model / "checkpoint_registration.pth").is_file():
        pytest.skip("needs the model trained by test_stock_plan_train_predict_evaluate")
    src = model / "checkpoint_registration.pth"
    body = ("t.disable_checkpointing = True\n"
            "t.initialize(); t._load_oneshot_data()\n"
            f"t.registration_init_from = r'{src}'\n"
            "t.train_registration()\n"
            f"ref = torch.load(r'{src}', map_location='cpu', weights_only=False)['registration_net']\n"
            "same = all(torch.equal(v, ref[k]) for k, v in t.registration_net.state_dict().items())\n"
            "print('SAME', same, 'IT', t.registration_iteration)\n")
    out = _with_trainer(workdir, "OneShotDistillTrainer_tiny", body)
    assert "Registration net taken from" in out and "Stage 1/2" not in out and "SAME True IT 20" in out
    with pytest.raises(AssertionError, match="registration net built with"):
        _with_trainer(workdir, "OneShotDistillTrainer_tiny", "t.registration_encoder_channels = (4, 8, 8, 8)\n"
                      "t.registration_decoder_channels = (8, 8, 8, 4)\n" + body)
    import torch
    torch.save({"something": 1}, tmp_path / "x.pth")
    with pytest.raises(AssertionError, match="holds no registration net"):
        _with_trainer(workdir, "OneShotDistillTrainer_tiny", body.replace(str(src), str(tmp_path / "x.pth")))
