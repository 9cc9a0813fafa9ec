"""Synthesis of labelled training pairs by warping the atlas onto unlabelled subjects (METHOD.md A.2).

Given, on one common canvas, the atlas image/label and for every unlabelled subject i its image y_i and the
flow phi_i (atlas∘phi_i ≈ y_i, from the registration net), a sample for subject i is made ONLINE:

* flow: phi_i itself, or with probability ``flow_interpolation_prob`` an interpolation
  alpha·phi_i + (1-alpha)·phi_j toward another subject j, alpha ~ Beta(a, a) (BRBS / DataAug practice);
  the result is optionally scaled by s ~ U(flow_scale_range);
* appearance: with probability ``appearance_prob`` the warped atlas intensities of every structure k are
  moved toward subject i's intensity statistics in that structure (mean and std of y_i inside
  label∘phi_i == k) by beta ~ U(0, 1): x <- mu_a + (x - mu_a)·(1 + beta(sd_i/sd_a - 1)) + beta(mu_i - mu_a).
  Statistics need only the exact pairing phi_i, so they are computed once per subject.

The label is warped as one-hot (trilinear) then argmaxed. The paired real image y_i is returned too: it is
voxel-aligned with the sample whenever the flow is exactly phi_i (what distillation needs).
Arrays are numpy, (C, D, H, W) images and (1, D, H, W) labels; warping uses torch on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from nnunetv2_oneshot.registration.transform import warp, warp_labels


@dataclass
class SynthesisConfig:
    flow_interpolation_prob: float = 0.5
    flow_interpolation_beta: float = 2.0
    flow_scale_range: Tuple[float, float] = (1.0, 1.0)
    appearance_prob: float = 0.8
    # share of samples that are the atlas itself, unwarped, with its true label (read by the trainers' data
    # set, not by PairSynthesizer). Warped atlases are smoother than a real scan (trilinear resampling);
    # the plain baseline trains on the sharp atlas alone.
    atlas_prob: float = 0.0
    # share of samples that are a REAL unlabelled scan with the atlas label warped onto it by the exact flow
    # (its registration pseudo-label; read by the trainers' data set). What RRL-MedSAM's branches learn from
    # besides the synthetic pairs: real appearance, imperfect labels.
    pseudo_label_prob: float = 0.0
    # the appearance change also scales each structure's spread by (subject sd / atlas sd). Those sds come
    # from labels, and the subject's from the atlas label warped onto it, so misregistered voxels of other
    # tissues inflate them; the scaling then stretches partial-volume voxels at every label border. Judged by
    # models trained on real brain scans, it makes the pairs less realistic (benchmarks/synthetic_gap.py,
    # "appearance" against "appearance_means"). False: only the means move.
    appearance_match_spread: bool = True


def _region_stats(image: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Per channel and class (mean, std) of ``image`` (C, *S) inside ``label`` (1, *S) -> (C, K, 2); NaN if empty."""
    lab = label[0].ravel()
    counts = np.bincount(lab, minlength=num_classes)[:num_classes].astype(np.float64)
    stats = np.full((image.shape[0], num_classes, 2), np.nan)
    for c in range(image.shape[0]):
        x = image[c].ravel().astype(np.float64)
        s1 = np.bincount(lab, weights=x, minlength=num_classes)[:num_classes]
        s2 = np.bincount(lab, weights=x * x, minlength=num_classes)[:num_classes]
        ok = counts > 0
        mean = np.where(ok, s1 / np.maximum(counts, 1), np.nan)
        var = np.where(ok, s2 / np.maximum(counts, 1) - mean ** 2, np.nan)
        stats[c, :, 0] = mean
        stats[c, :, 1] = np.sqrt(np.maximum(var, 1e-12))
    return stats


class PairSynthesizer:
    """Samples (synthetic image, synthetic label, paired real image) for an unlabelled subject.

    Args:
        atlases: {atlas id: (image (C, *S) float32, label (1, *S) int)} on the common canvas.
        subjects: {subject id: image (C, *S) float32} on the same canvas.
        flows: {(atlas id, subject id): flow (3, *S) float32 in voxels} with warp(atlas, flow) ≈ subject.
        num_classes: number of label values (labels are 0..num_classes-1).
    """

    def __init__(self, atlases: Dict[str, Tuple[np.ndarray, np.ndarray]], subjects: Dict[str, np.ndarray],
                 flows: Dict[Tuple[str, str], np.ndarray], num_classes: int,
                 config: Optional[SynthesisConfig] = None):
        self.atlases = atlases
        self.subjects = subjects
        self.flows = flows
        self.num_classes = num_classes
        self.config = config or SynthesisConfig()
        self.subject_ids = sorted(subjects)
        self.atlas_ids = sorted(atlases)
        missing = [(a, s) for a in self.atlas_ids for s in self.subject_ids if (a, s) not in flows]
        if missing:
            raise ValueError(f"flows missing for (atlas, subject) pairs {missing[:3]}...")
        self.atlas_stats = {a: _region_stats(img, lab, num_classes) for a, (img, lab) in atlases.items()}
        # labels warped with the exact flows: used for the subjects' intensity statistics and for
        # the foreground locations nnU-Net's loader samples patches around
        self.exact_labels = {k: self._warp_label(atlases[k[0]][1], f) for k, f in flows.items()}
        self.subject_stats = {k: _region_stats(subjects[k[1]], lab, num_classes)
                              for k, lab in self.exact_labels.items()}

    def _warp_label(self, label: np.ndarray, flow: np.ndarray) -> np.ndarray:
        out = warp_labels(torch.from_numpy(label[None].astype(np.int64)), torch.from_numpy(flow[None]),
                          self.num_classes)
        return out[0].numpy().astype(np.int16)

    def sample_flow(self, atlas: str, subject: str, rng: np.random.Generator) -> Tuple[np.ndarray, bool]:
        """Returns (flow, exact) where exact says the flow is phi_subject itself (voxel-aligned pairing)."""
        cfg = self.config
        flow = self.flows[(atlas, subject)]
        exact = True
        if len(self.subject_ids) > 1 and rng.random() < cfg.flow_interpolation_prob:
            other = self.subject_ids[rng.integers(len(self.subject_ids))]
            if other != subject:
                a = rng.beta(cfg.flow_interpolation_beta, cfg.flow_interpolation_beta)
                flow = a * flow + (1 - a) * self.flows[(atlas, other)]
                exact = False
        lo, hi = cfg.flow_scale_range
        if hi > lo or lo != 1.0:
            s = rng.uniform(lo, hi)
            if s != 1.0:
                flow = flow * s
                exact = False
        return flow.astype(np.float32, copy=False), exact

    def adapt_appearance(self, image: np.ndarray, label: np.ndarray, atlas: str, subject: str,
                         beta: float) -> np.ndarray:
        """Moves each structure's intensities of the warped atlas toward the subject's by ``beta`` in [0, 1]: its
        mean, and its spread too where ``config.appearance_match_spread``."""
        sa, ss = self.atlas_stats[atlas], self.subject_stats[(atlas, subject)]
        out = image.copy()
        lab = label[0]
        for k in np.unique(lab):
            m = lab == k
            for c in range(image.shape[0]):
                mu_a, sd_a = sa[c, k]
                mu_s, sd_s = ss[c, k]
                if np.isnan(mu_a) or np.isnan(mu_s):
                    continue
                gain = 1 + beta * (sd_s / max(sd_a, 1e-6) - 1) if self.config.appearance_match_spread else 1.0
                out[c][m] = mu_a + (image[c][m] - mu_a) * gain + beta * (mu_s - mu_a)
        return out

    def sample(self, subject: str, rng: np.random.Generator, atlas: Optional[str] = None, return_flow: bool = False):
        """Returns (image (C, *S) float32, label (1, *S) int16, real subject image (C, *S), exact: bool), plus
        (atlas id, flow (3, *S)) with ``return_flow``."""
        if atlas is None:
            atlas = self.atlas_ids[rng.integers(len(self.atlas_ids))]
        flow, exact = self.sample_flow(atlas, subject, rng)
        img, lab = self.atlases[atlas]
        ft = torch.from_numpy(flow[None])
        warped = warp(torch.from_numpy(img[None]), ft)[0].numpy()
        warped_lab = self._warp_label(lab, flow) if not exact else self.exact_labels[(atlas, subject)]
        if rng.random() < self.config.appearance_prob:
            warped = self.adapt_appearance(warped, warped_lab, atlas, subject, float(rng.uniform(0, 1)))
        out = (warped.astype(np.float32), warped_lab, self.subjects[subject], exact)
        return out + (atlas, flow) if return_flow else out


def pad_to_shape(array: np.ndarray, shape: Sequence[int], value: float) -> Tuple[np.ndarray, Tuple[slice, ...]]:
    """Centre-pads (C, *S) to (C, *shape); returns the array and the slices that recover the original."""
    pads, slices = [(0, 0)], [slice(None)]
    for s, t in zip(array.shape[1:], shape):
        if t < s:
            raise ValueError(f"cannot pad shape {array.shape[1:]} to smaller {tuple(shape)}")
        before = (t - s) // 2
        pads.append((before, t - s - before))
        slices.append(slice(before, before + s))
    return np.pad(array, pads, constant_values=value), tuple(slices)


def canvas_shape(shapes: Sequence[Sequence[int]], multiple: int) -> Tuple[int, ...]:
    """Smallest shape that holds every shape and is a multiple of ``multiple`` along each axis."""
    mx = np.max(np.array(shapes), axis=0)
    return tuple(int(np.ceil(m / multiple) * multiple) for m in mx)
