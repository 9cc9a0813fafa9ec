"""Pieces shared by our trainers and by the plain-nnUNetTrainer baselines they are compared with."""
import os
import shutil
from os.path import isfile

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler


class AtomicCheckpoint:
    """Checkpoints are written to ``<name>.part`` and renamed into place, so a crash or kill while writing
    leaves the previous checkpoint intact instead of a truncated file that ``--c`` cannot load (nnU-Net
    writes in place). Subclasses add their own keys in ``_complete_checkpoint(path)``, before the rename.

    ``snapshot_every`` (epochs, 0 = off; a multiple of ``save_every``): also keep the latest checkpoint of
    every such epoch as ``checkpoint_epoch<N>.pth`` (N epochs done), which ``nnUNetv2_predict -chk`` loads, so
    that a curve of Dice on held-out scans against training length can be drawn after one training."""

    snapshot_every = 0

    def save_checkpoint(self, filename: str) -> None:
        part = filename + ".part"
        super().save_checkpoint(part)
        if isfile(part):  # nothing is written on other ranks or with disable_checkpointing
            self._complete_checkpoint(part)
            os.replace(part, filename)
            if self.snapshot_every and os.path.basename(filename) == "checkpoint_latest.pth":
                done = self.current_epoch + 1  # nnU-Net saves at the end of an epoch, before counting it
                if done % self.snapshot_every == 0:
                    shutil.copyfile(filename, os.path.join(os.path.dirname(filename), f"checkpoint_epoch{done}.pth"))

    def _complete_checkpoint(self, path: str) -> None:
        pass


#: nnU-Net's gradient-norm clip of its network, applied to each network of ours on its own
GRAD_CLIP_NORM = 12.0


def clip_grad_norms_(groups, max_norm: float = GRAD_CLIP_NORM) -> None:
    """Clips the gradient norm of each parameter group separately (in place): a second network (a teacher, a
    projection) trained by the same optimiser must not change the student's step size, as one joint clip
    would (a large teacher gradient scales the student's down)."""
    for params in groups:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class OptimizerChoice:
    """Mixin: ``optimizer_name`` "sgd" (nnU-Net's default: SGD, Nesterov, momentum 0.99) or "adamw"; both
    with nnU-Net's poly lr schedule from ``initial_lr``. Short CPU budgets use AdamW 1e-2. Measured fitting
    the brain atlas with class-prior head init (see ClassPriorInit): mean Dice of the 12 deep grey
    structures after 200 iterations 0.34 with AdamW 3e-3 (200-iteration schedule) and 0.93 with AdamW 1e-2
    (300-iteration schedule; 0.96 at 300). The optimiser covers ``optimizer_parameters()``."""

    optimizer_name = "sgd"

    def optimizer_parameters(self):
        return list(self.network.parameters())

    def configure_optimizers(self):
        params = self.optimizer_parameters()
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                        nesterov=True)
        elif self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(params, self.initial_lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"optimizer_name must be 'sgd' or 'adamw', got {self.optimizer_name!r}")
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class MirroringChoice:
    """``mirror_axes``: the spatial axes nnU-Net may mirror, in training augmentation AND in test-time
    augmentation (nnU-Net stores them in the checkpoint for ``nnUNetv2_predict``). ``"nnunet"``: nnU-Net's
    default (all three axes in 3D); ``None``: no mirroring (like ``nnUNetTrainerNoMirroring``); or a tuple.

    One-shot trainers default to ``None``. A left/right flip of the one atlas swaps lateralised structures
    (thalamus_left lands where thalamus_right is), so the network cannot learn which side is which, and a
    flip along the other axes makes anatomy no scan has; registration synthesis gives realistic variety
    instead. Measured on the brain dataset: see README "What was measured"."""

    mirror_axes = "nnunet"

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if self.mirror_axes != "nnunet":
            mirror_axes = None if self.mirror_axes is None else tuple(self.mirror_axes)
            self.inference_allowed_mirroring_axes = mirror_axes
        return rotation, dummy_2d, initial_patch_size, mirror_axes


def class_prior_bias(counts: np.ndarray, regions=None) -> np.ndarray:
    """Output biases that make an untrained network predict the label frequencies of ``counts`` (voxels per
    label value, index = value): log-frequencies for softmax heads, or, for region-based (sigmoid) heads,
    the logit of each region's frequency. Add-one smoothing keeps absent labels finite."""
    counts = np.asarray(counts, dtype=np.float64) + 1.0
    if regions is None:
        return np.log(counts / counts.sum())
    p = np.array([sum(counts[v] for v in np.atleast_1d(r) if v < len(counts)) for r in regions]) / counts.sum()
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class ClassPriorInit:
    """``class_prior_init``: set the biases of the segmentation heads (every deep-supervision level) to the
    label frequencies of the training cases, so that training starts from "predict the class prior" instead
    of "every class everywhere" (the bias initialisation of RetinaNet's focal-loss paper).

    Why: with a uniform start, a structure of 60 voxels out of 170k gets a soft-Dice gradient of about
    2/(Σp + |g|) ≈ 2/11000 per voxel, so small structures are learnt only after the network has pushed them
    down everywhere. Measured fitting the brain atlas (CPU plan, AdamW 1e-2, 300 iterations): mean Dice of
    the 12 deep grey structures 0.00 with nnU-Net's init, 0.96 with this one (cortex/WM 0.79/0.86 vs
    0.78/0.86). Only at the start of a training: a checkpoint, when loaded, overwrites it."""

    class_prior_init = False

    def initialize(self):
        was = self.was_initialized
        super().initialize()
        if not was and self.class_prior_init:
            self._init_heads_with_class_prior()

    def _training_label_counts(self) -> np.ndarray:
        tr_keys, _ = self.do_split()
        ds = self.dataset_class(self.preprocessed_dataset_folder, tr_keys)
        n = max(self.label_manager.all_labels) + 1
        counts = np.zeros(n, dtype=np.int64)
        for k in tr_keys:
            seg = np.asarray(ds.load_case(k)[1])
            # -1: outside the nonzero crop; the ignore label (always the largest value) is >= n
            seg = seg[(seg >= 0) & (seg < n)].astype(np.int64)
            counts += np.bincount(seg, minlength=n)
        return counts

    def _init_heads_with_class_prior(self):
        net = self.network
        net = getattr(net, "module", net)  # DDP
        net = getattr(net, "_orig_mod", net)  # torch.compile
        heads = getattr(getattr(net, "decoder", None), "seg_layers", None)
        if heads is None:
            self.print_to_log_file(f"class_prior_init: {type(net).__name__} has no decoder.seg_layers; skipped")
            return
        counts = self._training_label_counts()
        regions = self.label_manager.foreground_regions if self.label_manager.has_regions else None
        bias = torch.from_numpy(class_prior_bias(counts, regions)).float()
        with torch.no_grad():
            for head in heads:
                if head.bias is None or head.bias.shape != bias.shape:
                    self.print_to_log_file("class_prior_init: head without a matching bias; skipped")
                    return
                head.bias.copy_(bias.to(head.bias.device))
        self.print_to_log_file("class_prior_init: segmentation head biases set from label frequencies "
                               + np.array2string(counts / max(1, counts.sum()), precision=4, max_line_width=200))
