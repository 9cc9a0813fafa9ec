"""RRLMedSAMTrainer: SAM-guided one-shot segmentation (RRL-MedSAM, METHOD.md B), inside nnU-Net.

    stage 0  registration atlas -> unlabelled scans (as OneShotRegAugTrainer)
    SAM      LiteMedSAM's frozen encoder embeds every training volume once (rrl/targets.py)
    train    self.network = RRLNet (general branch + medical branch + auto-prompting decoder, rrl/network.py)
             on pairs (synthetic x = atlas warped onto a real scan y, label = warped atlas label), so that the
             label is x's exact label AND y's registration pseudo-label:

    L = λ_seg·[L(med(x)) + L(gen(x))] + λ_pseudo·[L(med(y)) + L(gen(y))] + λ_distill·MSE(proj(E_g(·)), SAM(·))

L is nnU-Net's Dice+CE with deep supervision ("mutual supervision": both heads learn from the same labels).
The distillation acts on the general encoder's stage ``sam_feature_stage`` through a 1x1x1 projection: on
x and y during the first ``sam_stage1_fraction`` of the epochs (the atlas, under registration deformations,
and the real scans, under nnU-Net's augmentation), then on the synthetic x only (dual-stage; our choice).
After every optimiser step the two encoders exchange weights by mutual EMA (α = ``ema_alpha``).
The SAM encoder is a teacher only: not in ``network_weights``, not needed by ``nnUNetv2_predict``.
"""
from __future__ import annotations

import hashlib
import os
import time
from os.path import isfile, join
from typing import List

import numpy as np
import torch
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast
from torch._dynamo import OptimizedModule

from nnunetv2_oneshot.rrl.network import RRLNet, mutual_ema_
from nnunetv2_oneshot.rrl.targets import (coordinate_channels, distillation_loss, embed_volume, sample_targets,
                                          stage_strides, valid_cells, with_extra_channels)
from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer, SyntheticPairDataset

RRL_CURVES = ("train_seg_losses", "train_pseudo_losses", "train_distill_losses")


def _split_batch(out: dict, n: int):
    """forward_all's outputs for a concatenated batch -> (first n samples, the rest); lists stay lists."""
    def cut(v, sl):
        return [x[sl] for x in v] if isinstance(v, (list, tuple)) else v[sl]
    return ({k: cut(v, slice(None, n)) for k, v in out.items()}, {k: cut(v, slice(n, None)) for k, v in out.items()})


class CoordinatePairDataset(SyntheticPairDataset):
    """Synthetic pair (C synthetic + C real channels) plus 7 channels that locate every voxel for the SAM
    targets: the real scan's voxel coordinates (3), the atlas coordinates the synthetic voxel was warped from
    (3), and 1 + the atlas' index (0 where nnU-Net's loader pads)."""

    def __init__(self, synthesizer, class_locations):
        super().__init__(synthesizer, class_locations, with_real_image=True)
        self._grid = None

    def load_case(self, identifier: str):
        rng = np.random.default_rng(np.random.randint(0, 2 ** 31))
        image, label, real, _, atlas, flow = self.synthesizer.sample(identifier, rng, return_flow=True)
        if self._grid is None:
            self._grid = coordinate_channels(image.shape[1:])
        atlas_no = np.full((1, *image.shape[1:]), 1 + self.synthesizer.atlas_ids.index(atlas), np.float32)
        data = np.concatenate([image, real, self._grid, self._grid + flow, atlas_no])
        return data, label, None, {"class_locations": self.class_locations[identifier]}


class RRLMedSAMTrainer(OneShotRegAugTrainer):
    # class attributes, not instance ones: they shape the network, which nnUNetv2_predict builds from the class
    auto_prompt = True
    # widest stage of each branch: the paper's general encoder is ~3% of SAM-B's image encoder (89.7M
    # parameters); 96 keeps nnU-Net's default 3d_fullres encoder (32..320) at ~2.4M. CPU plans are narrower.
    max_features = 96

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # exact pairing: the warped atlas label is also the real scan's registration pseudo-label
        self.synthesis.flow_interpolation_prob = 0.0
        self.synthesis_with_real_image = True
        self.lambda_seg = 1.0
        self.lambda_pseudo = 1.0
        self.lambda_distill = 1.0
        self.mutual_ema = True
        self.ema_alpha = 0.99  # published
        self.sam_feature_stage = 2  # general encoder stage that is distilled (stride 4 in nnU-Net's plans)
        self.sam_stage1_fraction = 0.5  # stage 1 (real + synthetic) for this fraction of the epochs, then stage 2
        self.sam_embed_every = 1  # embed every n-th target slice, interpolate in between (tests: cheaper)
        self.sam_batch_size = 4
        # LiteMedSAM's embeddings are small (|y| < 0.9, median channel std 0.05): raw, their MSE is ~30x below the
        # segmentation losses and the distillation barely acts. Standardised per channel (over all training
        # volumes), the MSE of an uninformed prediction is ~1.
        self.sam_standardise_targets = True
        self.projection = None
        self.sam_targets = None  # {("atlas"|"subject", id): (E, *G) float16 tensor}
        for k in RRL_CURVES:
            self.logger.local_logger.my_fantastic_logging.setdefault(k, [])

    # ------------------------------------------------------------------ network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> RRLNet:
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        if cls.max_features:
            kwargs["features_per_stage"] = [min(f, cls.max_features) for f in kwargs["features_per_stage"]]

        def branch():
            return get_network_from_plans(configuration_manager.network_arch_class_name, kwargs,
                                          configuration_manager.network_arch_init_kwargs_req_import,
                                          num_input_channels, num_output_channels, allow_init=True,
                                          deep_supervision=enable_deep_supervision)
        return RRLNet(branch(), branch(), num_output_channels, auto_prompt=cls.auto_prompt)

    def _unwrapped(self) -> RRLNet:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def set_deep_supervision_enabled(self, enabled: bool):
        self._unwrapped().set_deep_supervision(enabled)

    def _do_i_compile(self):
        return False

    def sam_stride(self) -> tuple:
        return stage_strides(self.configuration_manager.network_arch_init_kwargs["strides"], self.sam_feature_stage)

    def initialize(self):
        if self.self_training_start_fraction is not None:  # its samples are always pairs (CoordinatePairDataset)
            raise SystemExit("error: RRLMedSAMTrainer has no self-training; leave self_training_start_fraction None")
        if not self.was_initialized:
            from nnunetv2_oneshot.sam.litemedsam import LITEMEDSAM_EMBED_DIM
            feats = self.configuration_manager.network_arch_init_kwargs["features_per_stage"]
            c = min(feats[self.sam_feature_stage], self.max_features or feats[self.sam_feature_stage])
            conv = torch.nn.Conv3d if len(self.configuration_manager.patch_size) == 3 else torch.nn.Conv2d
            # the projection must exist before nnU-Net builds the optimiser, which covers it
            self.projection = conv(c, LITEMEDSAM_EMBED_DIM, 1).to(self.device)
        super().initialize()

    def _init_heads_with_class_prior(self):
        super()._init_heads_with_class_prior()  # the medical heads (self.network.decoder)
        net = self._unwrapped()
        with torch.no_grad():
            for g, m in zip(net.general.decoder.seg_layers, net.medical.decoder.seg_layers):
                g.bias.copy_(m.bias)

    def optimizer_parameters(self):
        return list(self.network.parameters()) + list(self.projection.parameters())

    def gradient_clip_groups(self) -> list:
        return [list(self.network.parameters()), list(self.projection.parameters())]

    # ------------------------------------------------------------------ data
    def build_synthetic_dataset(self):
        plain = super().build_synthetic_dataset()
        return CoordinatePairDataset(plain.synthesizer, plain.class_locations)

    def get_training_transforms(self, *args, **kwargs):
        from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
        transforms = super().get_training_transforms(*args, **kwargs)
        return with_extra_channels(transforms, 2 * self.num_input_channels,
                                   (SpatialTransform, Convert2DTo3DTransform, MirrorTransform))

    # ------------------------------------------------------------------ SAM targets
    def _check_sam_weights(self):
        from nnunetv2_oneshot.sam.litemedsam import LiteMedSAMUnavailable, litemedsam_weights_path, verify_checksum
        try:
            verify_checksum(litemedsam_weights_path())
        except LiteMedSAMUnavailable as e:  # one line, before any compute
            raise SystemExit(f"error: {e}") from None

    def _sam_cache_folder(self) -> str:
        return join(self.preprocessed_dataset_folder_base, "litemedsam_targets",
                    f"{self.plans_manager.plans_name}_{self.configuration_name}")

    def prepare_sam_targets(self):
        """Embeds the atlas(es) and the unlabelled scans (first channel, on the registration canvas) once;
        cached in the preprocessed folder, keyed by the volume's bytes, the stride and ``sam_embed_every``."""
        from nnunetv2_oneshot.sam.litemedsam import load_litemedsam_encoder
        d = self.oneshot_data
        volumes = {("atlas", k): v[0][0] for k, v in d["atlases"].items()}
        volumes.update({("subject", k): v[0] for k, v in d["subjects"].items()})
        stride = self.sam_stride()
        folder = self._sam_cache_folder()
        os.makedirs(folder, exist_ok=True)
        encoder, targets, t0 = None, {}, time.time()
        # start at a volume of our own: trainings of other seeds filling the same cache at the same time (the
        # benchmark's --jobs) then embed different volumes first and load each other's instead of all repeating one
        items = sorted(volumes.items())
        start = os.getpid() % len(items)
        for n, (key, vol) in enumerate(items[start:] + items[:start], 1):
            digest = hashlib.sha1(np.ascontiguousarray(vol, dtype=np.float32).tobytes()).hexdigest()[:16]
            fname = join(folder, f"{key[1]}_{digest}_s{'x'.join(map(str, stride))}_e{self.sam_embed_every}.npy")
            if isfile(fname):
                targets[key] = torch.from_numpy(np.load(fname))
                continue
            if encoder is None:
                encoder = load_litemedsam_encoder(self.device)
                self.print_to_log_file(f"SAM targets: embedding {len(volumes)} volumes slice by slice with LiteMedSAM "
                                       f"(stride {stride}, every {self.sam_embed_every}); cached in {folder}")
            emb = embed_volume(encoder, vol, stride, batch_size=self.sam_batch_size, every=self.sam_embed_every,
                               device=self.device)
            np.save(fname + ".tmp.npy", emb)
            os.replace(fname + ".tmp.npy", fname)
            targets[key] = torch.from_numpy(emb)
            self.print_to_log_file(f"SAM targets: {n}/{len(volumes)} ({key[1]}), {time.time() - t0:.0f} s")
        if self.sam_standardise_targets:
            cells = torch.cat([t.float().flatten(1) for t in targets.values()], 1)
            mean, std = cells.mean(1), cells.std(1).clamp_min(1e-6)
            shape = (-1,) + (1,) * (next(iter(targets.values())).ndim - 1)
            targets = {k: ((t.float() - mean.view(shape)) / std.view(shape)).half() for k, t in targets.items()}
            self.print_to_log_file(f"SAM targets standardised per channel (std before: median {std.median():.4f})")
        self.sam_targets = targets
        del encoder

    def on_train_start(self):
        self._check_sam_weights()
        if self.synthesis.atlas_prob > 0:  # its SAM targets and coordinates are those of the unlabelled scans
            raise SystemExit(f"error: {type(self).__name__} does not support synthesis.atlas_prob > 0")
        if self.synthesis.pseudo_label_prob > 0:  # it learns from the pseudo-labels in every step (lambda_pseudo)
            raise SystemExit(f"error: {type(self).__name__} does not use synthesis.pseudo_label_prob; "
                             f"set lambda_pseudo instead")
        if not self.was_initialized:
            self.initialize()
        self._load_oneshot_data()
        self.train_registration()
        self.prepare_sam_targets()
        self.print_to_log_file("Stage 2/2: training RRLNet (general + medical branch, auto-prompt) on synthetic "
                               "pairs and registration pseudo-labels")
        # skip OneShotRegAugTrainer.on_train_start (done above) and go on with nnU-Net's
        super(OneShotRegAugTrainer, self).on_train_start()

    # ------------------------------------------------------------------ training
    def in_stage1(self) -> bool:
        return self.current_epoch < self.sam_stage1_fraction * self.num_epochs

    def _distill(self, skips, coords, atlas_no, keys, kind: str) -> torch.Tensor:
        stride = self.sam_stride()
        ids = [self.synthesizer_atlas_ids[int(round(float(a.max()))) - 1] for a in atlas_no] if kind == "atlas" \
            else list(keys)
        emb = torch.stack([self.sam_targets[(kind, i)] for i in ids]).to(self.device)
        feats = self.projection(skips[self.sam_feature_stage])
        targets = sample_targets(emb, coords.float(), stride)
        n = atlas_no.amax(dim=tuple(range(1, atlas_no.ndim)), keepdim=True)
        valid = valid_cells(((atlas_no - n).abs() < 1e-3).float() * (n > 0.5), stride)
        return distillation_loss(feats, targets, valid)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        c = self.num_input_channels
        synthetic, real = data[:, :c], data[:, c:2 * c]
        coords_real, coords_syn, atlas_no = data[:, 2 * c:2 * c + 3], data[:, 2 * c + 3:2 * c + 6], data[:, -1:]
        net = self._unwrapped()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            # one forward for both (instance norm is per sample, so this equals two passes, with bigger GEMMs)
            out_s, out_r = _split_batch(net.forward_all(torch.cat([synthetic, real])), synthetic.shape[0])
            l_seg = self.loss(out_s["medical"], target) + self.loss(out_s["general"], target)
            l_pseudo = self.loss(out_r["medical"], target) + self.loss(out_r["general"], target)
            l_distill = self._distill(out_s["general_skips"], coords_syn, atlas_no, batch["keys"], "atlas")
            if self.in_stage1():
                l_distill = 0.5 * (l_distill + self._distill(out_r["general_skips"], coords_real, atlas_no,
                                                             batch["keys"], "subject"))
            loss = self.lambda_seg * l_seg + self.lambda_pseudo * l_pseudo + self.lambda_distill * l_distill
        self.backward_and_step(loss)
        if self.mutual_ema:
            mutual_ema_(net.general.encoder, net.medical.encoder, self.ema_alpha)
        return {"loss": loss.detach().cpu().numpy(), "seg": l_seg.detach().cpu().numpy(),
                "pseudo": l_pseudo.detach().cpu().numpy(), "distill": l_distill.detach().cpu().numpy()}

    @property
    def synthesizer_atlas_ids(self) -> List[str]:
        return sorted(self.oneshot_data["atlases"])

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        out = collate_outputs(train_outputs)
        for key, name in zip(RRL_CURVES, ("seg", "pseudo", "distill")):
            self.logger.log(key, float(np.mean(out[name])), self.current_epoch)
        self.print_to_log_file("losses: seg %.4f, pseudo-label %.4f, SAM distillation %.4f (stage %d)%s" % (
            *(self.logger.get_value(k, step=-1) for k in RRL_CURVES), 1 if self.in_stage1() else 2,
            ", mutual EMA" if self.mutual_ema else ""))

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            from nnunetv2_oneshot.plotting import plot_curves
            log = self.logger.local_logger.my_fantastic_logging
            n = min(len(log[k]) for k in RRL_CURVES + ("val_losses",))
            if n:
                names = ("seg (synthetic, both heads)", "pseudo-labels (real, both heads)", "SAM distillation")
                curves = {name: log[k][:n] for name, k in zip(names, RRL_CURVES)}
                curves["val (on the atlas)"] = log["val_losses"][:n]
                plot_curves(join(self.output_folder, "progress_oneshot.png"), list(range(n)), curves,
                            f"{type(self).__name__}: training losses per epoch", "epoch")

    # ------------------------------------------------------------------ checkpoints
    def _extra_checkpoint_state(self) -> dict:
        state = super()._extra_checkpoint_state()
        state["projection"] = self.projection.state_dict()
        return state

    def _load_extra_checkpoint_state(self, state: dict):
        super()._load_extra_checkpoint_state(state)
        self.projection.load_state_dict(state["projection"])
