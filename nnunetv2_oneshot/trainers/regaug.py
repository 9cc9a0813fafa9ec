"""OneShotRegAugTrainer: registration-based augmentation for one-shot segmentation (METHOD.md A.1, A.2).

Stage 1 trains a registration net atlas -> unlabelled scans (local NCC + smoothness) on nnU-Net's
preprocessed data. Stage 2 is nnU-Net's own training loop, whose training dataset is replaced by one that
synthesises a new labelled pair on every draw (atlas warped by a sampled flow, appearance moved toward a real
subject); nnU-Net's loader then crops, augments and builds the deep-supervision targets as usual, so the
targets are recomputed after warping. The student is ``self.network``, nnU-Net's planned architecture, so the
stock ``nnUNetv2_predict`` serves it. The registration net travels in the checkpoint key ``"oneshot"``.
"""
from __future__ import annotations

import copy

import os
import time
from os.path import isfile, join
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from nnunetv2.paths import nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_oneshot.trainers.common import (AtomicCheckpoint, ClassPriorInit, MirroringChoice, OptimizerChoice,
                                              clip_grad_norms_)
from nnunetv2_oneshot.augmentation.synthesis import PairSynthesizer, SynthesisConfig, canvas_shape, pad_to_shape
from nnunetv2_oneshot.evaluation import mean_dice
from nnunetv2_oneshot.registration import GradientSmoothnessLoss, LocalNCCLoss, RegistrationNet, folding_fraction
from nnunetv2_oneshot.registration.transform import warp
from nnunetv2_oneshot.unlabelled import load_unlabelled, preprocess_unlabelled
from nnunetv2_oneshot.validation import OneShotDatasetError, validate_oneshot_dataset

VALIDATION_NOTE = ("One-shot training: there is no labelled validation data. The 'pseudo dice' below and the final "
                   "validation are measured on the labelled atlas case(s) that the synthetic training pairs are made "
                   "from: they show how well the student fits the atlas, NOT how well it generalises. Score held-out "
                   "scans (imagesTs/labelsTs) with nnUNetv2_predict + nnUNetv2_evaluate_folder.")


CLASSICAL_FLOW_CACHE = "registration_classical_flows.npz"
# the student's own labels of the unlabelled scans, for self-training (canvas shape, int16), beside the checkpoints
STUDENT_LABELS = "self_training_labels.npz"


class ClassicalFlowCache:
    """The classical backend's flows, kept beside the checkpoints so that a resumed training (``--c``) does not
    register every pair again (~15 s per pair on one core). A flow is reused only for the same atlas and subject
    arrays and voxel spacing (SHA-1 of their bytes), so changed preprocessing or data recomputes it."""

    def __init__(self, path: str, spacing):
        self.path, self.spacing = path, tuple(float(x) for x in spacing)
        self.flows: Dict[str, np.ndarray] = {}
        self.used = set()  # what save() keeps: flows of pairs that no longer exist are dropped
        if isfile(path):
            try:
                with np.load(path) as f:
                    self.flows = {k: f[k] for k in f.files}
            except (OSError, ValueError, EOFError):  # a torn or foreign file: recompute, overwrite on save
                self.flows = {}

    def _key(self, a: str, s: str, moving: np.ndarray, fixed: np.ndarray) -> str:
        import hashlib
        h = hashlib.sha1(repr((a, s, self.spacing, moving.shape, fixed.shape)).encode())
        h.update(np.ascontiguousarray(moving, np.float32).tobytes())
        h.update(np.ascontiguousarray(fixed, np.float32).tobytes())
        return h.hexdigest()

    def get(self, a: str, s: str, moving: np.ndarray, fixed: np.ndarray) -> Optional[np.ndarray]:
        """Flow (3, *S) for this pair, or None when it has not been computed for these arrays."""
        key = self._key(a, s, moving, fixed)
        flow = self.flows.get(key)
        if flow is None or flow.shape != (3,) + moving.shape[1:]:
            return None
        self.used.add(key)
        return flow

    def put(self, a: str, s: str, moving: np.ndarray, fixed: np.ndarray, flow: np.ndarray) -> np.ndarray:
        key = self._key(a, s, moving, fixed)
        self.flows[key] = flow = np.asarray(flow, np.float32)
        self.used.add(key)
        return flow

    def save(self):
        tmp = self.path + ".tmp.npz"  # np.savez appends .npz to names without it
        np.savez_compressed(tmp, **{k: self.flows[k] for k in sorted(self.used)})
        os.replace(tmp, self.path)


class SyntheticPairDataset:
    """Stands in for nnU-Net's dataset in its data loader: every ``load_case(subject)`` returns a NEW pair
    synthesised for that unlabelled subject. ``with_real_image`` appends the paired real image's channels
    after the synthetic ones (C synthetic + C real), so that spatial augmentation keeps them aligned."""

    def __init__(self, synthesizer: PairSynthesizer, class_locations: Dict[str, dict], with_real_image: bool = False,
                 atlas_locations: Optional[Dict[str, dict]] = None, student_labels_path: Optional[str] = None,
                 student_label_prob: float = 0.0):
        self.synthesizer = synthesizer
        self.identifiers = list(synthesizer.subject_ids)
        self.class_locations = class_locations
        self.with_real_image = with_real_image
        self.atlas_locations = atlas_locations
        # self-training: once the trainer has written the student's own labels of the unlabelled scans to this
        # .npz ({subject id: (1, *S) int16}), ``student_label_prob`` of the samples are a real scan with them. A
        # file, not an attribute: nnU-Net's augmentation workers hold a copy of this object made at start-up,
        # so they re-read the file whenever it is replaced instead.
        self.student_labels_path = student_labels_path
        self.student_label_prob = student_label_prob
        self._student_labels = None  # ((inode, mtime_ns), {subject id: label})
        if not 0 <= student_label_prob <= 1:
            raise ValueError(f"student_label_prob must be in [0, 1], got {student_label_prob}")
        cfg = synthesizer.config
        if cfg.atlas_prob > 0 and atlas_locations is None:
            raise ValueError("SynthesisConfig.atlas_prob > 0 needs atlas_locations")
        if not (0 <= cfg.atlas_prob and 0 <= cfg.pseudo_label_prob and cfg.atlas_prob + cfg.pseudo_label_prob <= 1):
            raise ValueError(f"SynthesisConfig: atlas_prob ({cfg.atlas_prob}) and pseudo_label_prob "
                             f"({cfg.pseudo_label_prob}) must be >= 0 and sum to at most 1")

    def student_labels(self) -> Optional[Dict[str, np.ndarray]]:
        """The student's labels of the unlabelled scans as last written by the trainer; None before the first."""
        if self.student_label_prob <= 0 or not self.student_labels_path:
            return None
        try:
            st = os.stat(self.student_labels_path)
        except FileNotFoundError:
            self._student_labels = None
            return None
        version = (st.st_ino, st.st_mtime_ns)  # the trainer replaces the file: a new inode each time
        if self._student_labels is None or self._student_labels[0] != version:
            with np.load(self.student_labels_path) as f:
                self._student_labels = (version, {k: f[k] for k in f.files})
        return self._student_labels[1]

    def load_case(self, identifier: str):
        # nnU-Net's workers seed numpy's global state differently per process; draw our seed from it
        rng = np.random.default_rng(np.random.randint(0, 2 ** 31))
        cfg, syn = self.synthesizer.config, self.synthesizer
        student = self.student_labels()
        # drawn only once the student's labels exist, so that until then the sample stream is unchanged
        if student is not None and rng.random() < self.student_label_prob:
            # the real scan with the student's own label; it is its own real partner. Patch locations are those
            # of its registration label: near enough for nnU-Net's foreground oversampling
            image, label = syn.subjects[identifier].copy(), student[identifier].copy()
            data = np.concatenate([image, image]) if self.with_real_image else image
            return data, label, None, {"class_locations": self.class_locations[identifier]}
        # one draw decides the kind of sample; none when both shares are 0, so the default stream is unchanged
        u = rng.random() if cfg.atlas_prob + cfg.pseudo_label_prob > 0 else 1.0
        if u < cfg.atlas_prob:
            # the atlas as it is; its own image is its voxel-aligned real partner (the distillation pairing)
            atlas = syn.atlas_ids[rng.integers(len(syn.atlas_ids))]
            # copies: nnU-Net's loader may crop to a view and augment it in place, which must not reach the atlas
            image, label = (x.copy() for x in syn.atlases[atlas])
            real, locations = image, self.atlas_locations[atlas]
        elif u < cfg.atlas_prob + cfg.pseudo_label_prob:
            # the real scan with its registration pseudo-label; the scan is its own real partner
            atlas = syn.atlas_ids[rng.integers(len(syn.atlas_ids))]
            image, label = syn.subjects[identifier].copy(), syn.exact_labels[(atlas, identifier)].copy()
            real, locations = image, self.class_locations[identifier]
        else:
            image, label, real, _ = syn.sample(identifier, rng)
            locations = self.class_locations[identifier]
        data = np.concatenate([image, real]) if self.with_real_image else image
        return data, label, None, {"class_locations": locations}

    def __getitem__(self, identifier):
        return self.load_case(identifier)


class OneShotRegAugTrainer(AtomicCheckpoint, ClassPriorInit, MirroringChoice, OptimizerChoice, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnU-Net pops this flag inside super().__init__; we need it to resume the registration stage
        self._continue_requested = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp:
            # the decoder hooks, the teacher and the registration stage are single-process today: each rank would
            # train its own registration net and teacher. Stop before any compute rather than train that.
            raise SystemExit(f"error: {type(self).__name__} does not run under several GPUs (nnUNetv2_train "
                             f"-num_gpus N) yet: train with -num_gpus 1")
        self.mirror_axes = None  # no mirroring: lateralised labels swap under a flip (trainers/common.py)
        self.class_prior_init = True  # small structures are learnt at all (trainers/common.py)
        # --- stage 1: registration (published: VoxelMorph-style net, NCC window 9, lr 1e-4)
        self.registration_num_iterations = 3000
        self.registration_lr = 1e-4
        self.registration_encoder_channels = (32, 64, 64, 64)
        self.registration_decoder_channels = (64, 64, 64, 32)
        self.registration_integrate_steps = 0  # >0: scaling-and-squaring (diffeomorphic) flows
        self.registration_ncc_window = 9
        # stabiliser of local NCC on window means (registration/losses.py): 1e-6 still diverged on the chest CT
        # (air clipped flat by nnU-Net's CT normalisation), 1e-5 trained stably
        self.registration_ncc_eps = 1e-5
        self.registration_smoothness_weight = 1.0
        self.registration_log_every = 50
        self.registration_save_every = 500
        # divergence guard: at a log point whose mean loss is this much above the best so far (or not finite),
        # the net and optimiser go back to the best log point and the lr is halved (seen once in ~10 CPU runs:
        # Adam 1e-3 jumped from NCC -0.46 to smoothness 85 and 52% folded voxels, and never came back)
        self.registration_divergence_margin = 0.2
        # start stage 1 from this file's registration net (a checkpoint_registration.pth, or any of our trainers'
        # nnU-Net checkpoints) instead of from scratch; a finished one skips stage 1. Lets several one-shot
        # trainers of one dataset share one registration (the benchmark does, per seed: equal flows, one cost)
        self.registration_init_from: Optional[str] = None
        # "net": the published VoxelMorph-style net, trained in stage 1. "classical": no net; every atlas->subject
        # pair registered by SimpleITK (affine + diffeomorphic demons, registration/classical.py), deterministic.
        # On the benchmark pools the classical flows warp the atlas labels better than the CPU budget's net
        # (brain 0.670 against 0.61-0.65 over seeds; chest CT 0.894 against ~0.80), ~15 s per pair on one core,
        # kept in the output folder (registration_classical_flows.npz) so that --c does not register again.
        self.registration_backend = "net"
        # --- stage 2: online synthesis of labelled pairs (see augmentation/synthesis.py)
        self.synthesis = SynthesisConfig(flow_interpolation_prob=0.5, flow_interpolation_beta=2.0,
                                         flow_scale_range=(1.0, 1.0), appearance_prob=0.8)
        self.synthesis_with_real_image = False  # distillation trainers set True
        # --- self-training (None: off). From this fraction of the epochs on, ``self_training_prob`` of the samples
        # are real unlabelled scans labelled by the student itself (sliding window on the canvas, no mirroring),
        # predicted anew every ``self_training_refresh_fraction`` of the epochs. The pairs show the student one
        # anatomy, the atlas's; its own labels of the real scans are the only other anatomy it can learn from.
        self.self_training_start_fraction: Optional[float] = None
        self.self_training_prob = 0.5
        self.self_training_refresh_fraction = 0.1
        # state
        self.registration_net = None
        self.registration_optimizer = None
        self.registration_iteration = 0
        self.registration_log: List[Tuple[int, float, float]] = []  # (iteration, ncc loss, smoothness)
        self.oneshot_data = None
        self._synthetic_dataset = None
        self._student_labels_epoch = None  # epoch of the last self-training labels; None: none this process

    # ------------------------------------------------------------------ set-up
    def initialize(self):
        if self.registration_backend not in ("net", "classical"):
            raise SystemExit(f"error: registration_backend must be 'net' or 'classical', got "
                             f"{self.registration_backend!r}")
        super().initialize()
        if self.registration_backend == "net":  # the classical backend has no net to build, train or save
            self.registration_net = RegistrationNet(
                self.num_input_channels, encoder_channels=self.registration_encoder_channels,
                decoder_channels=self.registration_decoder_channels,
                integrate_steps=self.registration_integrate_steps).to(self.device)
            self.registration_optimizer = torch.optim.Adam(self.registration_net.parameters(),
                                                           lr=self.registration_lr)

    def _raw_dataset_folder(self) -> str:
        if not nnUNet_raw:  # an _EnvPath in nnU-Net 2.8: falsy when the variable is unset
            raise RuntimeError("nnUNet_raw is not set: the one-shot trainers read the unlabelled images from the raw "
                               "dataset. Export nnUNet_raw.")
        return join(nnUNet_raw, self.plans_manager.dataset_name)

    def _load_oneshot_data(self):
        """Validates the raw dataset, preprocesses the unlabelled images (cached) and puts atlas(es) and subjects
        on one canvas. Everything here is small for one-shot data (1..k labelled + N unlabelled volumes)."""
        try:
            ds = validate_oneshot_dataset(self._raw_dataset_folder())
        except OneShotDatasetError as e:  # one line for the user, not a traceback through nnU-Net
            raise SystemExit(f"error: {e}") from None
        self.print_to_log_file(f"One-shot dataset: {len(ds.labelled)} labelled case(s) (atlas: {ds.atlas}), "
                               f"{len(ds.unlabelled)} unlabelled image(s)")
        self.print_to_log_file(VALIDATION_NOTE)
        folder = preprocess_unlabelled(ds.unlabelled, self.plans_manager, self.configuration_manager,
                                       self.configuration_name, self.dataset_json, self.preprocessed_dataset_folder,
                                       log=self.print_to_log_file)
        subjects = load_unlabelled(folder, sorted(ds.unlabelled))
        labelled = self.dataset_class(self.preprocessed_dataset_folder, sorted(ds.labelled))
        atlases = {}
        for k in labelled.identifiers:
            data, seg, _, _ = labelled.load_case(k)
            # -1 marks "outside the nonzero mask" in nnU-Net's preprocessing: background for warping
            atlases[k] = (np.asarray(data[:], dtype=np.float32), np.maximum(np.asarray(seg[:]), 0).astype(np.int16))
        multiple = 2 ** len(self.registration_encoder_channels)
        shape = canvas_shape([a[0].shape[1:] for a in atlases.values()] + [s.shape[1:] for s in subjects.values()],
                             multiple)
        pad_img = lambda x: pad_to_shape(x, shape, float(x.min()))[0]
        self.oneshot_data = {
            "atlases_unpadded": atlases,
            "atlases": {k: (pad_img(i), pad_to_shape(s, shape, 0)[0]) for k, (i, s) in atlases.items()},
            "subjects": {k: pad_img(v) for k, v in subjects.items()},
        }
        self.print_to_log_file(f"Registration canvas: {shape}")

    # ------------------------------------------------------------------ stage 1
    def _registration_state(self) -> dict:
        net = self.registration_net is not None
        return {"registration_net": self.registration_net.state_dict() if net else None,
                "registration_optimizer": self.registration_optimizer.state_dict() if net else None,
                "registration_iteration": self.registration_iteration,
                "registration_log": self.registration_log,
                # preprocessed atlas image(s)/label(s): `nnunetv2-oneshot propagate` needs only the results folder
                "atlases": self.oneshot_data["atlases_unpadded"] if self.oneshot_data else {},
                "registration_config": self._registration_config(),
                "registration_backend": self.registration_backend}

    def _registration_config(self) -> dict:
        return {"in_channels": self.num_input_channels,
                "encoder_channels": tuple(self.registration_encoder_channels),
                "decoder_channels": tuple(self.registration_decoder_channels),
                "integrate_steps": self.registration_integrate_steps}

    def _load_registration_state(self, state: dict):
        if self.registration_net is not None:
            if state.get("registration_net") is None:
                raise SystemExit("error: the checkpoint holds no registration net (its trainer used the classical "
                                 "backend); this trainer needs one (registration_backend = 'net')")
            self.registration_net.load_state_dict(state["registration_net"])
            self.registration_optimizer.load_state_dict(state["registration_optimizer"])
        self.registration_iteration = state["registration_iteration"]
        self.registration_log = list(state["registration_log"])

    def train_registration(self):
        if self.registration_backend == "classical":
            self.print_to_log_file("Stage 1/2: classical registration (SimpleITK affine + diffeomorphic demons): no "
                                   "net to train; the flows are computed next")
            return
        reg_ckpt = join(self.output_folder, "checkpoint_registration.pth")
        if self.registration_iteration < self.registration_num_iterations and self._continue_requested \
                and isfile(reg_ckpt):
            self._load_registration_state(torch.load(reg_ckpt, map_location=self.device, weights_only=False))
            self.print_to_log_file(f"Resuming registration from iteration {self.registration_iteration}")
        elif self.registration_iteration == 0 and self.registration_init_from:
            self._init_registration_from(self.registration_init_from)
        if self.registration_iteration >= self.registration_num_iterations:
            self.print_to_log_file("Registration stage already done (restored from checkpoint).")
            return
        d = self.oneshot_data
        pairs = [(a, s) for a in sorted(d["atlases"]) for s in sorted(d["subjects"])]
        ncc = LocalNCCLoss(self.registration_ncc_window, eps=self.registration_ncc_eps)
        smooth = GradientSmoothnessLoss("l2")
        net = self.registration_net.train()
        self.print_to_log_file(f"Stage 1/2: training the registration net on {len(pairs)} atlas->subject pairs for "
                               f"{self.registration_num_iterations} iterations")
        t0, start = time.time(), self.registration_iteration
        acc = []
        best = None  # (mean loss, iteration, net state, optimiser state) at the best log point
        if self.registration_iteration == 0:
            # the untrained net (near-zero flows) is the first candidate: a run can blow up before its first
            # log point (seen: smoothness 836 and 29% folded voxels at it 25), and must then go back to it
            best = (self._mean_registration_loss(pairs, ncc, smooth), 0, copy.deepcopy(net.state_dict()),
                    copy.deepcopy(self.registration_optimizer.state_dict()))
        while self.registration_iteration < self.registration_num_iterations:
            a, s = pairs[np.random.randint(len(pairs))]
            moving = torch.from_numpy(d["atlases"][a][0][None]).to(self.device)
            fixed = torch.from_numpy(d["subjects"][s][None]).to(self.device)
            flow = net(moving, fixed)
            l_sim = ncc(warp(moving, flow), fixed)
            l_smooth = smooth(flow)
            loss = l_sim + self.registration_smoothness_weight * l_smooth
            self.registration_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.registration_optimizer.step()
            self.registration_iteration += 1
            acc.append((l_sim.item(), l_smooth.item()))
            if self.registration_iteration % self.registration_log_every == 0 \
                    or self.registration_iteration == self.registration_num_iterations:
                m = np.mean(acc, 0)
                acc = []
                total = float(m[0] + self.registration_smoothness_weight * m[1])
                if best is None or total < best[0]:
                    best = (total, self.registration_iteration, copy.deepcopy(net.state_dict()),
                            copy.deepcopy(self.registration_optimizer.state_dict()))
                elif not np.isfinite(total) or total > best[0] + self.registration_divergence_margin:
                    net.load_state_dict(best[2])
                    self.registration_optimizer.load_state_dict(best[3])
                    for g in self.registration_optimizer.param_groups:
                        g["lr"] *= 0.5
                    self.print_to_log_file(
                        f"registration diverged at it {self.registration_iteration} (loss {total:.3f}, best "
                        f"{best[0]:.3f} at it {best[1]}): restored that state, lr halved to "
                        f"{self.registration_optimizer.param_groups[0]['lr']:.2e}")
                self.registration_log.append((self.registration_iteration, float(m[0]), float(m[1])))
                rate = (time.time() - t0) / (self.registration_iteration - start)
                self.print_to_log_file(
                    f"registration it {self.registration_iteration}/{self.registration_num_iterations}: "
                    f"ncc loss {m[0]:.4f}, smoothness {m[1]:.4f}, folding {folding_fraction(flow.detach()):.4%}, "
                    f"{rate:.2f} s/it, ETA {rate * (self.registration_num_iterations - self.registration_iteration) / 60:.1f} min")
            if self.registration_iteration % self.registration_save_every == 0 \
                    or self.registration_iteration == self.registration_num_iterations:
                self._save_registration_checkpoint(reg_ckpt)
        self._plot_registration_progress()

    def _init_registration_from(self, path: str):
        if not isfile(path):
            raise SystemExit(f"error: registration_init_from: {path} does not exist")
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        state = ckpt.get("oneshot", ckpt)
        if "registration_net" not in state:
            raise SystemExit(f"error: registration_init_from: {path} holds no registration net (expected a "
                             f"checkpoint_registration.pth or a one-shot trainer's checkpoint)")
        mine = self._registration_config()
        if state.get("registration_config") != mine:
            raise SystemExit(f"error: registration_init_from: {path} holds a registration net built with "
                             f"{state.get('registration_config')}, this trainer builds {mine}")
        self._load_registration_state(state)
        self.print_to_log_file(f"Registration net taken from {path} (trained {self.registration_iteration} "
                               f"iterations)")

    @torch.no_grad()
    def _mean_registration_loss(self, pairs, ncc, smooth, n: int = 4) -> float:
        d, losses = self.oneshot_data, []
        for a, s in pairs[:n]:
            moving = torch.from_numpy(d["atlases"][a][0][None]).to(self.device)
            fixed = torch.from_numpy(d["subjects"][s][None]).to(self.device)
            flow = self.registration_net(moving, fixed)
            losses.append(float(ncc(warp(moving, flow), fixed) + self.registration_smoothness_weight * smooth(flow)))
        return float(np.mean(losses))

    def _save_registration_checkpoint(self, filename: str):
        if self.local_rank == 0 and not self.disable_checkpointing:
            torch.save(self._registration_state(), filename + ".tmp")
            os.replace(filename + ".tmp", filename)

    def _plot_registration_progress(self):
        if not self.registration_log or self.local_rank != 0:
            return
        from nnunetv2_oneshot.plotting import plot_curves
        it, sim, sm = np.array(self.registration_log).T
        plot_curves(join(self.output_folder, "progress_registration.png"), it,
                    {"local NCC loss (−NCC)": sim, "smoothness": sm},
                    "Stage 1: registration atlas → unlabelled scans", "registration iteration")

    @torch.no_grad()
    def compute_flows(self) -> Dict[Tuple[str, str], np.ndarray]:
        d = self.oneshot_data
        classical = self.registration_backend == "classical"
        if classical:
            from nnunetv2_oneshot.registration.classical import classical_flow
            cache = ClassicalFlowCache(join(self.output_folder, CLASSICAL_FLOW_CACHE),
                                       self.configuration_manager.spacing)
        else:
            self.registration_net.eval()
        flows, folds, t0, computed = {}, [], time.time(), 0
        pairs = [(a, s) for a in d["atlases"] for s in d["subjects"]]
        for i, (a, s) in enumerate(pairs):
            moving, fixed = d["atlases"][a][0], d["subjects"][s]
            if classical:  # SimpleITK on the first channel, in the plans' voxel spacing (seconds per pair)
                flow = cache.get(a, s, moving, fixed)
                if flow is None:
                    flow = cache.put(a, s, moving, fixed,
                                     classical_flow(moving, fixed, self.configuration_manager.spacing))
                    computed += 1
                    how = f"{(time.time() - t0) / computed:.1f} s/pair"
                else:
                    how = f"from {CLASSICAL_FLOW_CACHE}"
                flow = torch.from_numpy(flow)[None]
            else:
                flow = self.registration_net(torch.from_numpy(moving[None]).to(self.device),
                                             torch.from_numpy(fixed[None]).to(self.device))
            folds.append(folding_fraction(flow))
            flows[(a, s)] = flow[0].float().cpu().numpy()
            if classical:
                self.print_to_log_file(f"classical registration {i + 1}/{len(pairs)} ({a} -> {s}): folding "
                                       f"{folds[-1]:.4%}, {how}")
        if classical and computed and self.local_rank == 0:
            cache.save()
        self.print_to_log_file(f"Flows for {len(flows)} pairs; mean folding (non-positive Jacobian determinant) "
                               f"{np.mean(folds):.4%} of voxels")
        return flows

    # ------------------------------------------------------------------ stage 2
    def do_split(self):
        # One-shot: every labelled case is trained on (as the atlas); validation repeats them (see VALIDATION_NOTE).
        # Same for every fold, so fold 'all' and fold 0 both work.
        if self.dataset_class is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        keys = sorted(self.dataset_class.get_identifiers(self.preprocessed_dataset_folder))
        return keys, keys

    def build_synthetic_dataset(self) -> SyntheticPairDataset:
        d = self.oneshot_data
        synth = PairSynthesizer(d["atlases"], d["subjects"], self.compute_flows(),
                                num_classes=max(self.label_manager.all_labels) + 1, config=self.synthesis)
        fg = self.label_manager.foreground_labels
        where = lambda lab: DefaultPreprocessor._sample_foreground_locations(lab, fg, seed=1234, verbose=False)
        locations = {s: where(synth.exact_labels[(synth.atlas_ids[0], s)]) for s in synth.subject_ids}
        atlas_locations = {a: where(lab) for a, (_, lab) in d["atlases"].items()} \
            if self.synthesis.atlas_prob > 0 else None
        self._synthetic_dataset = SyntheticPairDataset(
            synth, locations, with_real_image=self.synthesis_with_real_image, atlas_locations=atlas_locations,
            student_labels_path=join(self.output_folder, STUDENT_LABELS),
            student_label_prob=self.self_training_prob if self.self_training_start_fraction is not None else 0.0)
        return self._synthetic_dataset

    def get_tr_and_val_datasets(self):
        _, val_keys = self.do_split()
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, val_keys,
                                         folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
        return self.build_synthetic_dataset(), dataset_val

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self._load_oneshot_data()
        self.train_registration()
        self.print_to_log_file("Stage 2/2: training the student (nnU-Net's planned network) on synthetic pairs")
        # labels of an earlier run or an older student: a resumed run predicts them anew at its first epoch
        if self.local_rank == 0 and isfile(join(self.output_folder, STUDENT_LABELS)):
            os.remove(join(self.output_folder, STUDENT_LABELS))
        super().on_train_start()

    # ------------------------------------------------------------------ self-training
    def _self_training_due(self) -> bool:
        if self.self_training_start_fraction is None:
            return False
        if self.current_epoch < int(round(self.self_training_start_fraction * self.num_epochs)):
            return False
        every = max(1, int(round(self.self_training_refresh_fraction * self.num_epochs)))
        return self._student_labels_epoch is None or self.current_epoch - self._student_labels_epoch >= every

    def refresh_student_labels(self) -> Dict[str, np.ndarray]:
        """Labels every unlabelled scan (on the canvas) with the current student and writes them where the
        training data set reads them (``STUDENT_LABELS`` in the output folder, replaced atomically)."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        t0 = time.time()
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=True, device=self.device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, type(self).__name__, None)
        labels = {}
        with torch.no_grad():
            for s, img in self.oneshot_data["subjects"].items():
                logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(img)).float().cpu()
                labels[s] = self.label_manager.convert_logits_to_segmentation(logits).numpy()[None].astype(np.int16)
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        self.network.train()
        # progress: how far the student has moved from the registration labels, and since its last labels
        ds = self._synthetic_dataset
        fg = self.label_manager.foreground_labels
        agree = np.mean([mean_dice(labels[s], ds.synthesizer.exact_labels[(ds.synthesizer.atlas_ids[0], s)], fg)
                         for s in labels])
        before = ds.student_labels()  # the file's labels, read before it is replaced below
        changed = "" if before is None else ", %.2f%% of voxels changed since the last labels" % (
            100 * np.mean([np.mean(labels[s] != before[s]) for s in labels]))
        if self.local_rank == 0:
            path = join(self.output_folder, STUDENT_LABELS)
            tmp = path[:-len(".npz")] + "_tmp.npz"  # np.savez appends .npz to a name without it
            np.savez(tmp, **labels)
            os.replace(tmp, path)
        self._student_labels_epoch = self.current_epoch
        self.print_to_log_file(f"Self-training: the student labelled {len(labels)} unlabelled scans ({time.time() - t0:.0f}"
                               f" s); mean Dice with their registration labels {agree:.3f}{changed}")
        return labels

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self._self_training_due():
            self.refresh_student_labels()

    def gradient_clip_groups(self) -> list:
        """The optimiser's parameters by network, each clipped on its own at nnU-Net's norm (12): the student
        (``self.network``) first. Trainers with more networks in the optimiser add a group per network."""
        return [list(self.network.parameters())]

    def backward_and_step(self, loss: torch.Tensor):
        """nnU-Net's update (grad scaler on CUDA, gradient norm clipped at 12, per network: see
        :meth:`gradient_clip_groups`), for train_steps with losses of their own (the distillation trainers)."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            clip_grad_norms_(self.gradient_clip_groups())
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            clip_grad_norms_(self.gradient_clip_groups())
            self.optimizer.step()

    # ------------------------------------------------------------------ checkpoints
    def _complete_checkpoint(self, path: str) -> None:
        # nnU-Net has written its own keys; ours go into the same file so that --c restores everything
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["oneshot"] = self._extra_checkpoint_state()
        torch.save(ckpt, path)

    def _extra_checkpoint_state(self) -> dict:
        return self._registration_state()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        ckpt = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        if "oneshot" in ckpt:
            self._load_extra_checkpoint_state(ckpt["oneshot"])

    def _load_extra_checkpoint_state(self, state: dict):
        self._load_registration_state(state)
