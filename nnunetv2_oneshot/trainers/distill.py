"""OneShotDistillTrainer: reconstruction-guided teacher-student distillation (METHOD.md A.3).

A teacher with the student's layout (nnU-Net's planned U-Net, one output channel per input channel, no deep
supervision) reconstructs the REAL unlabelled scan y; the student (``self.network``) segments the synthetic
scan made by warping the atlas onto that same y, against the warped atlas label. Both inputs come through
nnU-Net's loader as one sample (synthetic channels, then real channels), so spatial augmentation moves
them together and they stay voxel-aligned; the hint loss (1 − cosine, teacher side detached) then
compares the last two decoder levels voxel by voxel.

    L = λ_seg·L_seg (nnU-Net's Dice+CE, deep supervision) + λ_recon·L_recon + λ_hint·L_hint

Teacher and student share one optimiser (one lr schedule, one checkpointed state; see trainers/common.py).
"""
from __future__ import annotations

from os.path import join
from typing import List

import numpy as np
import torch
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunetv2_oneshot.distillation import CosineHintLoss, DecoderFeatureTap
from nnunetv2_oneshot.registration import LocalNCCLoss
from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer

# per-epoch curves added to nnU-Net's logger (one value per epoch, like its own)
ONESHOT_CURVES = ("train_seg_losses", "train_recon_losses", "train_hint_losses", "train_registration_ncc")


class OneShotDistillTrainer(OneShotRegAugTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lambda_seg = 1.0
        self.lambda_recon = 1.0
        self.lambda_hint = 1.0  # best published weights 1/1/1
        self.recon_loss = "l1"  # "l1" or "mse": the paper does not say
        self.hint_levels = (-2, -1)  # last two decoder stages: ½ and full resolution
        # fraction of the epochs during which the teacher learns to reconstruct (then frozen); None = always
        self.teacher_train_fraction = None
        # exact pairing: an interpolated flow has no real scan it is aligned with, so no hint could be formed
        self.synthesis.flow_interpolation_prob = 0.0
        self.synthesis_with_real_image = True
        # the appearance change moves structure means only: scaling their spread too made the pairs less
        # realistic (benchmarks/synthetic_gap.py) and the student worse on three brain seeds (pool −0.018 ±
        # 0.007) and on the chest CT's seed 0 (pool −0.006); OneShotDistillTrainer_spreadMatch keeps the old one
        self.synthesis.appearance_match_spread = False
        # convs per stage of the teacher; None = as planned for the student. The hint needs only the decoder
        # features' SHAPES to match (stages, widths, strides), so 1 conv per stage halves the teacher's cost.
        self.teacher_convs_per_stage = 1
        # FitNets-style regressor: the hint compares a 1x1x1 projection of the student's features with the
        # teacher's, so the student's features must PREDICT the teacher's rather than equal them (see
        # README "What was measured" for why: the student's full-resolution stage is narrow in CPU plans).
        self.hint_regressor = False
        # λ_hint is 0 until ``hint_start_fraction`` of the epochs, then ramps up linearly over
        # ``hint_rampup_fraction`` of them (None/0: full weight from the start). An untrained teacher's features
        # are noise, and at short budgets the hint keeps the student from learning small structures.
        self.hint_start_fraction = 0.0
        self.hint_rampup_fraction = None
        self.teacher = None
        self.hint_regressors = None
        for k in ONESHOT_CURVES:
            self.logger.local_logger.my_fantastic_logging.setdefault(k, [])

    # ------------------------------------------------------------------ networks
    def build_teacher(self) -> torch.nn.Module:
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        c = determine_num_input_channels(self.plans_manager, self.configuration_manager, self.dataset_json)
        cm = self.configuration_manager
        kwargs = dict(cm.network_arch_init_kwargs)
        if self.teacher_convs_per_stage is not None:
            n = self.teacher_convs_per_stage
            kwargs["n_conv_per_stage"] = [n] * len(kwargs["n_conv_per_stage"])
            kwargs["n_conv_per_stage_decoder"] = [n] * len(kwargs["n_conv_per_stage_decoder"])
        return get_network_from_plans(cm.network_arch_class_name, kwargs,
                                      cm.network_arch_init_kwargs_req_import, c, c, allow_init=True,
                                      deep_supervision=False)

    def initialize(self):
        # the teacher must exist before nnU-Net builds the optimiser, which covers both networks
        self.teacher = self.build_teacher().to(self.device)
        if self.hint_regressor:
            stages = self.teacher.decoder.stages
            conv = torch.nn.Conv3d if len(self.configuration_manager.patch_size) == 3 else torch.nn.Conv2d
            self.hint_regressors = torch.nn.ModuleList(
                conv(stages[l].output_channels, stages[l].output_channels, 1) for l in self.hint_levels
            ).to(self.device)
        super().initialize()
        self._student_tap = DecoderFeatureTap(self.network, self.hint_levels)
        self._teacher_tap = DecoderFeatureTap(self.teacher, self.hint_levels)
        self.hint_loss = CosineHintLoss()
        self._ncc = LocalNCCLoss(self.registration_ncc_window, eps=self.registration_ncc_eps)

    def _do_i_compile(self):
        # forward hooks read the decoder features; keep the graph eager
        return False

    def optimizer_parameters(self):
        # one optimiser for teacher and student: one lr schedule and one checkpointed optimiser state
        params = list(self.network.parameters()) + list(self.teacher.parameters())
        return params + (list(self.hint_regressors.parameters()) if self.hint_regressors is not None else [])

    def gradient_clip_groups(self) -> list:
        # student, teacher and hint regressors each clipped on their own: the teacher's reconstruction gradient
        # must not shrink the student's step (nnU-Net clips its one network)
        groups = [list(self.network.parameters()), list(self.teacher.parameters())]
        return groups + ([list(self.hint_regressors.parameters())] if self.hint_regressors is not None else [])

    def _student_hint_features(self) -> list:
        feats = self._student_tap.features
        if self.hint_regressors is None:
            return feats
        return [r(f) for r, f in zip(self.hint_regressors, feats)]

    def _reconstruction_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.recon_loss == "l1":
            return torch.nn.functional.l1_loss(pred, target)
        if self.recon_loss == "mse":
            return torch.nn.functional.mse_loss(pred, target)
        raise ValueError(f"recon_loss must be 'l1' or 'mse', got {self.recon_loss!r}")

    def hint_weight(self) -> float:
        """λ_hint of the current epoch (0 before ``hint_start_fraction``, then ramped up over
        ``hint_rampup_fraction`` of the epochs)."""
        since = self.current_epoch - (self.hint_start_fraction or 0.0) * self.num_epochs
        if since < 0:
            return 0.0
        if not self.hint_rampup_fraction:
            return self.lambda_hint
        return self.lambda_hint * min(1.0, since / (self.hint_rampup_fraction * self.num_epochs))

    def _teacher_trains(self) -> bool:
        if self.teacher_train_fraction is None:
            return True
        return self.current_epoch < max(1, round(self.teacher_train_fraction * self.num_epochs))

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.teacher.train(self._teacher_trains())
        self.teacher.requires_grad_(self._teacher_trains())

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        c = self.num_input_channels
        synthetic, real = data[:, :c], data[:, c:]
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(synthetic)
            l_seg = self.loss(output, target)
            recon = self.teacher(real)
            l_recon = self._reconstruction_loss(recon, real)
            l_hint = self.hint_loss(self._student_hint_features(), self._teacher_tap.features)
            loss = self.lambda_seg * l_seg + self.hint_weight() * l_hint
            if self._teacher_trains():
                loss = loss + self.lambda_recon * l_recon
        self.backward_and_step(loss)
        with torch.no_grad():  # how well the synthetic scan matches its real one: registration quality, live
            ncc = self._ncc(synthetic.float(), real.float())
        return {"loss": loss.detach().cpu().numpy(), "seg": l_seg.detach().cpu().numpy(),
                "recon": l_recon.detach().cpu().numpy(), "hint": l_hint.detach().cpu().numpy(),
                "registration_ncc": ncc.cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        out = collate_outputs(train_outputs)
        for key, name in zip(ONESHOT_CURVES, ("seg", "recon", "hint", "registration_ncc")):
            self.logger.log(key, float(np.mean(out[name])), self.current_epoch)
        self.print_to_log_file("losses: seg %.4f, recon %.4f, hint %.4f (weight %.2f); registration NCC loss of the "
                               "pairs %.4f%s" % (*(self.logger.get_value(k, step=-1) for k in ONESHOT_CURVES[:3]),
                                                 self.hint_weight(), self.logger.get_value(ONESHOT_CURVES[3], step=-1),
                                                 "" if self._teacher_trains() else " (teacher frozen)"))

    def on_epoch_end(self):
        super().on_epoch_end()  # increments current_epoch
        if self.local_rank == 0:
            self._plot_oneshot_progress()

    def _plot_oneshot_progress(self):
        from nnunetv2_oneshot.plotting import plot_curves
        log = self.logger.local_logger.my_fantastic_logging
        n = min(len(log[k]) for k in ONESHOT_CURVES + ("val_losses",))
        if n == 0:
            return
        lambdas = (self.lambda_seg, self.lambda_recon, self.lambda_hint)
        curves = {f"{k.split('_')[1]} (λ={lam:g})": log[k][:n] for k, lam in zip(ONESHOT_CURVES[:3], lambdas)}
        curves["registration (−NCC, synthetic vs real)"] = log["train_registration_ncc"][:n]
        curves["val (on the atlas)"] = log["val_losses"][:n]
        plot_curves(join(self.output_folder, "progress_oneshot.png"), list(range(n)), curves,
                    f"{type(self).__name__}: training losses per epoch", "epoch",
                    dashed=("registration (−NCC, synthetic vs real)",))

    # ------------------------------------------------------------------ checkpoints
    def _extra_checkpoint_state(self) -> dict:
        state = super()._extra_checkpoint_state()
        state["teacher"] = self.teacher.state_dict()
        if self.hint_regressors is not None:
            state["hint_regressors"] = self.hint_regressors.state_dict()
        return state

    def _load_extra_checkpoint_state(self, state: dict):
        super()._load_extra_checkpoint_state(state)
        self.teacher.load_state_dict(state["teacher"])
        if self.hint_regressors is not None:
            self.hint_regressors.load_state_dict(state["hint_regressors"])
