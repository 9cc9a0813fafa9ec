"""Hint loss between teacher and student decoder features, and a tap that records decoder features."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


class CosineHintLoss(nn.Module):
    """L_hint = Σ_levels mean_batch (1 − cos(vec(S_l), vec(T_l))), teacher side DETACHED.

    Each level's features are flattened per sample over (C, D, H, W), so the similarity compares the whole
    feature volume voxel by voxel: this is why student and teacher inputs must be voxel-aligned. Detaching
    the teacher makes the hint pull the student toward the teacher and never the reverse (the published
    code detached both sides, which trains nothing).

    Args:
        eps: guards the norms of all-zero features.
    Inputs:
        student, teacher: sequences of tensors, level l of shape (B, C_l, *S_l), equal between the two.
    Returns:
        0-dim tensor in [0, 2·levels].
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(student) != len(teacher) or len(student) == 0:
            raise ValueError(f"need the same non-zero number of levels, got {len(student)} and {len(teacher)}")
        total = 0
        for s, t in zip(student, teacher):
            if s.shape != t.shape:
                raise ValueError(f"feature shapes differ: student {tuple(s.shape)} vs teacher {tuple(t.shape)}")
            cos = nn.functional.cosine_similarity(s.flatten(1).float(), t.detach().flatten(1).float(), dim=1,
                                                  eps=self.eps)
            total = total + (1 - cos).mean()
        return total


class DecoderFeatureTap:
    """Records the outputs of chosen decoder stages of a U-Net on every forward pass (forward hooks).

    Works with dynamic-network-architectures' U-Nets (``net.decoder.stages``: one block per resolution,
    lowest first; the last stage is full resolution, before the segmentation head). ``levels=(-2, -1)``
    taps the last two stages: ½ resolution and full resolution.
    """

    def __init__(self, network: nn.Module, levels: Sequence[int] = (-2, -1)):
        stages = getattr(getattr(network, "decoder", None), "stages", None)
        if stages is None:
            raise ValueError(f"{type(network).__name__} has no decoder.stages to tap")
        self.features: List[torch.Tensor] = [None] * len(levels)
        self._handles = [stages[l].register_forward_hook(self._hook(i)) for i, l in enumerate(levels)]

    def _hook(self, i: int):
        def hook(_module, _inputs, output):
            self.features[i] = output
        return hook

    def remove(self):
        for h in self._handles:
            h.remove()
