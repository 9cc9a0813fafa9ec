"""OneShotDistillTrainer through the stock commands: train, kill mid-epoch, resume with --c, predict."""

import pytest

from conftest import BIN, run_cmd, train_until_first_checkpoint_then_kill

TRAINER = "OneShotDistillTrainer_tiny"
CURVES = ("train_losses", "val_losses", "train_seg_losses", "train_recon_losses", "train_hint_losses",
          "train_registration_ncc")


def _model(root):
    return root / "res" / "Dataset901_Toy" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_all"


def test_kill_mid_epoch_then_continue_restores_everything(toy_planned):
    import torch
    root, env, _ = toy_planned
    model = _model(root)
    cmd = [f"{BIN}/nnUNetv2_train", "901", "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"]
    # the tiny budget saves checkpoint_latest after every epoch; killed in epoch 1
    train_until_first_checkpoint_then_kill(cmd, env, root, model, root / "distill_first.log")
    assert not (model / "checkpoint_final.pth").is_file(), "training ended before it could be killed"
    latest = torch.load(model / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] >= 1 and "teacher" in latest["oneshot"]

    log = run_cmd(cmd + ["--c"], env, root)
    assert "Registration stage already done" in log
    final = torch.load(model / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # every curve continues: exactly one value per epoch, none lost, none doubled
    for k in CURVES:
        assert len(final["logging"][k]) == 3, (k, final["logging"][k])
    starts = final["logging"]["epoch_start_timestamps"]
    assert starts == sorted(starts)
    # the networks of the killed run were restored, not re-initialised: the registration net never trains in
    # stage 2, so it must equal the killed run's exactly
    for k, v in latest["oneshot"]["registration_net"].items():
        assert torch.equal(v, final["oneshot"]["registration_net"][k]), k
    assert final["oneshot"]["registration_iteration"] == latest["oneshot"]["registration_iteration"]
    # the teacher kept training from where it was (its weights moved on from the killed run's)
    assert any(not torch.equal(v, final["oneshot"]["teacher"][k]) for k, v in latest["oneshot"]["teacher"].items())
    assert (model / "progress_oneshot.png").is_file()


def test_stock_predict_loads_the_student(toy_planned):
    root, env, _ = toy_planned
    if not (_model(root) / "checkpoint_final.pth").is_file():
        pytest.skip("needs the model of the previous test")
    out = root / "pred_distill"
    run_cmd([f"{BIN}/nnUNetv2_predict", "-i", str(root / "raw/Dataset901_Toy/imagesTs"), "-o", str(out), "-d", "901",
             "-c", "3d_fullres", "-f", "all", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"], env, root)
    import json
    from nnunetv2_oneshot.evaluation import dice_per_label
    dj = json.load(open(root / "raw/Dataset901_Toy/dataset.json"))
    res = dice_per_label(str(out), str(root / "raw/Dataset901_Toy/labelsTs"), dj)
    assert res["per_label"]["outer"] > 0.5, res  # chance ~0.1


@pytest.fixture(scope="module")
def hint_regressor_runs(toy_planned):
    """Both settings of ``hint_regressor`` in one process (importing nnU-Net costs ~10 s a process)."""
    root, env, _ = toy_planned
    code = """
import torch
from nnunetv2.run.run_training import get_trainer_from_args
for regressor in (True, False):
    t = get_trainer_from_args('901', '3d_fullres', 'all', 'OneShotDistillTrainer_tiny', device=torch.device('cpu'))
    t.hint_regressor = regressor
    t.initialize()
    x = torch.randn(2, 1, *t.configuration_manager.patch_size)
    t.network(x); t.teacher(x)
    s, te = t._student_hint_features(), t._teacher_tap.features
    assert [a.shape for a in s] == [b.shape for b in te]
    loss = t.hint_loss(s, te)
    loss.backward()
    assert all(p.grad is None for p in t.teacher.parameters())
    assert t.network.decoder.stages[-1].convs[0].conv.weight.grad.abs().sum() > 0
    opt = {id(p) for g in t.optimizer.param_groups for p in g['params']}
    if t.hint_regressors is not None:
        assert all(r.weight.grad.abs().sum() > 0 for r in t.hint_regressors)
        assert all(id(p) in opt for p in t.hint_regressors.parameters())
    # student, teacher (and regressors) clipped each on its own, together exactly the optimiser's parameters
    from nnunetv2_oneshot.trainers.common import clip_grad_norms_
    groups = t.gradient_clip_groups()
    assert sorted(id(p) for g in groups for p in g) == sorted(opt)
    assert {id(p) for p in groups[0]} == {id(p) for p in t.network.parameters()}
    assert {id(p) for p in groups[1]} == {id(p) for p in t.teacher.parameters()}
    for p in t.network.parameters():
        p.grad = torch.full_like(p, 1e-4)
    for p in t.teacher.parameters():
        p.grad = torch.full_like(p, 10.0)
    student = [p.grad.clone() for p in t.network.parameters()]
    clip_grad_norms_(groups)
    assert all(torch.equal(a, p.grad) for a, p in zip(student, t.network.parameters()))  # a joint clip shrinks it
    assert abs(float(torch.cat([p.grad.flatten() for p in t.teacher.parameters()]).norm()) - 12.0) < 0.12  # float32 sum
    print('CLIP', regressor, 'separate')
    state = t._extra_checkpoint_state()
    n = len(t.hint_regressors) if t.hint_regressors is not None else 0
    print('REGRESSOR', regressor, 'hint_regressors' in state, n)
    t.num_epochs, t.lambda_hint, t.hint_rampup_fraction = 10, 2.0, 0.5
    ramp = []
    for e in (0, 2, 5, 9):
        t.current_epoch = e
        ramp.append(round(t.hint_weight(), 6))
    t.hint_start_fraction, t.hint_rampup_fraction = 0.5, 0.2
    for e in (4, 5, 6, 7, 9):
        t.current_epoch = e
        ramp.append(round(t.hint_weight(), 6))
    t.hint_start_fraction, t.hint_rampup_fraction = 0.0, None
    print('RAMP', regressor, ramp, t.hint_weight())
"""
    return run_cmd([f"{BIN}/python", "-c", code], env, root)


@pytest.mark.parametrize("regressor", [True, False])
def test_hint_regressor_shapes_gradients_optimiser_and_checkpoint(hint_regressor_runs, regressor):
    """With ``hint_regressor`` a 1x1x1 conv per hint level maps student features to the teacher's space: same
    shapes, trained by the hint (gradient), in the one optimiser, saved with the checkpoint's extra keys. Student
    and teacher gradients are clipped each on its own."""
    out = hint_regressor_runs
    assert f"REGRESSOR {regressor} {regressor} {2 if regressor else 0}" in out
    assert f"CLIP {regressor} separate" in out
    # linear ramp of λ_hint over the first half, then flat; then: off for half the epochs, 2-epoch ramp
    assert f"RAMP {regressor} [0.0, 0.8, 2.0, 2.0, 0.0, 0.0, 1.0, 2.0, 2.0] 2.0" in out


def test_distillation_moves_structure_means_only_and_spreadMatch_keeps_the_old_change(toy_planned):
    """The method's appearance change moves structure means only (measured better on the brain); the variant
    that reproduces its earlier benchmark rows scales the spreads too; registration augmentation alone keeps
    the synthesis default. What each flag does to the pairs is tested in test_synthesis.py."""
    root, env, _ = toy_planned
    code = """
import torch
from nnunetv2.run.run_training import get_trainer_from_args
for name in ('OneShotDistillTrainer', 'OneShotDistillTrainer_cpu', 'OneShotDistillTrainer_meanShift',
             'OneShotDistillTrainer_spreadMatch', 'OneShotDistillTrainer_spreadMatch_cpu', 'OneShotRegAugTrainer'):
    t = get_trainer_from_args('901', '3d_fullres', 'all', name, device=torch.device('cpu'))
    print('SPREAD', name, t.synthesis.appearance_match_spread, t.synthesis.appearance_prob > 0)
"""
    out = run_cmd([f"{BIN}/python", "-c", code], env, root)
    spread = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.startswith("SPREAD ")}
    assert spread == {"OneShotDistillTrainer": ["False", "True"], "OneShotDistillTrainer_cpu": ["False", "True"],
                      "OneShotDistillTrainer_meanShift": ["False", "True"],
                      "OneShotDistillTrainer_spreadMatch": ["True", "True"],
                      "OneShotDistillTrainer_spreadMatch_cpu": ["True", "True"],
                      "OneShotRegAugTrainer": ["True", "True"]}


def test_atlas_prob_one_trains_on_the_unwarped_atlas_with_its_own_patch_locations(toy_planned):
    """``synthesis.atlas_prob`` inside the trainer: with 1.0 every sample is the atlas (image, label, and the
    atlas as its real partner), and the foreground locations nnU-Net samples patches around are the atlas'
    own, not those of the warped atlas."""
    root, env, _ = toy_planned
    code = """
import numpy as np, torch
from nnunetv2.run.run_training import get_trainer_from_args
t = get_trainer_from_args('901', '3d_fullres', 'all', 'OneShotDistillTrainer_tiny', device=torch.device('cpu'))
t.synthesis.atlas_prob = 1.0
t.initialize()
t._load_oneshot_data()
t.train_registration()
ds = t.build_synthetic_dataset()
(img, lab), = t.oneshot_data['atlases'].values()
checked = 0
for s in ds.identifiers:
    data, seg, _, props = ds.load_case(s)
    assert np.array_equal(seg, lab) and np.allclose(data[:1], img) and np.allclose(data[1:], img)
    for c, locs in props['class_locations'].items():
        for z, x, y in np.asarray(locs)[:, 1:]:
            assert lab[0, z, x, y] == c
            checked += 1
print('CHECKED', len(ds.identifiers), checked > 0)
"""
    out = run_cmd([f"{BIN}/python", "-c", code], env, root)
    assert "CHECKED 4 True" in out


def test_classical_backend_builds_no_net_and_reuses_its_flows_on_resume(toy_planned):
    """``registration_backend = "classical"``: no registration net is built or saved, and the SimpleITK flows are
    kept in the output folder, so a resumed training reuses them; a changed subject is registered again."""
    root, env, _ = toy_planned
    code = """
import os, numpy as np, torch
import nnunetv2_oneshot.registration.classical as classical
from nnunetv2.run.run_training import get_trainer_from_args

def trainer():
    t = get_trainer_from_args('901', '3d_fullres', 'all', 'OneShotDistillTrainer_tiny', device=torch.device('cpu'))
    t.output_folder = os.path.join(os.getcwd(), 'classical_flows_check')
    os.makedirs(t.output_folder, exist_ok=True)
    t.registration_backend = 'classical'
    t.initialize()
    t._load_oneshot_data()
    return t

calls = []
real = classical.classical_flow
classical.classical_flow = lambda *a, **k: calls.append(1) or real(*a, **k)
t = trainer()
state = t._extra_checkpoint_state()
print('NET', t.registration_net is None, state['registration_net'] is None, state['registration_backend'])
first = t.compute_flows()
n_first = len(calls)
t2 = trainer()
second = t2.compute_flows()
print('CACHED', n_first, len(calls) - n_first, sorted(first) == sorted(second),
      all(np.array_equal(first[k], second[k]) for k in first))
t3 = trainer()
s0 = sorted(t3.oneshot_data['subjects'])[0]
t3.oneshot_data['subjects'][s0] = t3.oneshot_data['subjects'][s0][:, ::-1].copy()
before = len(calls)
t3.compute_flows()
print('CHANGED', len(calls) - before)
t3._load_extra_checkpoint_state(state)  # a checkpoint without a net loads into a classical trainer
print('FILES', sorted(os.listdir(t.output_folder)))
"""
    out = run_cmd([f"{BIN}/python", "-c", code], env, root)
    assert "NET True True classical" in out
    assert "CACHED 4 0 True True" in out  # 4 pairs registered once, none again on the "resume"
    assert "CHANGED 1" in out
    assert "FILES ['registration_classical_flows.npz']" in out


def test_self_training_labels_the_pool_with_the_student_on_schedule(toy_planned):
    """``self_training_start_fraction``: a real training writes the student's labels of every unlabelled scan
    (canvas-shaped, valid label values) at the start epoch, replacing a stale file of an earlier run, and
    leaves the student training with deep supervision; the refresh schedule follows the fractions."""
    root, env, _ = toy_planned
    code = """
import os, numpy as np, torch
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2_oneshot.trainers.regaug import STUDENT_LABELS
t = get_trainer_from_args('901', '3d_fullres', 'all', 'OneShotDistillTrainer_tiny', device=torch.device('cpu'))
t.output_folder = os.path.join(os.getcwd(), 'self_training_check')
os.makedirs(t.output_folder, exist_ok=True)
path = os.path.join(t.output_folder, STUDENT_LABELS)
np.savez(path, stale=np.zeros(3))
t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch = 2, 3, 1
t.self_training_start_fraction, t.self_training_refresh_fraction = 0.5, 0.5
t.run_training()
log = open(t.log_file).read()
with np.load(path) as f:
    labels = {k: f[k] for k in f.files}
subjects = t.oneshot_data['subjects']
assert sorted(labels) == sorted(subjects), sorted(labels)
canvas = next(iter(subjects.values())).shape[1:]
assert all(v.shape == (1, *canvas) and set(np.unique(v)) <= set(t.label_manager.all_labels) for v in labels.values())
again = t.refresh_student_labels()
assert t.network.training and t.network.decoder.deep_supervision
assert all(np.array_equal(again[k], t._synthetic_dataset.student_labels()[k]) for k in again)
due = []
t.num_epochs, t.self_training_refresh_fraction, t._student_labels_epoch = 10, 0.2, None
for e in range(10):
    t.current_epoch = e
    if t._self_training_due():
        due.append(e)
        t._student_labels_epoch = e
print('SELFTRAIN', log.count('Self-training: the student labelled'), due)
"""
    env = dict(env, nnUNet_n_proc_DA="1")  # one augmentation worker: it must read the labels from the file
    out = run_cmd([f"{BIN}/python", "-c", code], env, root)
    assert "SELFTRAIN 1 [5, 7, 9]" in out, out[-2000:]
