"""RRL-MedSAM's inference network (METHOD.md B): general branch + medical branch + auto-prompting decoder.

Both branches are the SAME U-Net as nnU-Net plans for the student (dynamic-network-architectures,
``encoder`` returning the skips, ``decoder(skips)`` the logits), so the whole model is built from the plans
alone and the stock ``nnUNetv2_predict`` serves it:

    general:  x -> E_g -> D_g -> general logits  (also distilled from the SAM encoder during training)
    medical:  x -> E_m -> skips_l + P_l(prompt) -> D_m -> final logits
    prompt  = softmax(general logits), area-pooled to each skip's grid, embedded by a 3x3x3 conv P_l

P_l starts at zero (ControlNet-style), so training starts from two independent U-Nets and the medical
decoder learns how much to trust the general branch's mask. The frozen SAM encoder is a training-time
teacher only and is not part of this module.
"""
from __future__ import annotations

from typing import Dict, List, Union

import torch
from torch import nn


class RRLNet(nn.Module):
    """Args:
        general, medical: two U-Nets of the same architecture (``encoder(x) -> skips``,
            ``decoder(skips) -> logits`` or a list of deep-supervision logits, highest resolution first).
        num_classes: output channels of the segmentation heads (the prompt's channels).
        auto_prompt: False builds no prompt convs; the medical branch then predicts alone (ablation).
    Inputs:
        x: (B, C_in, *S).
    Returns (``forward``): the medical branch's logits, (B, num_classes, *S), or the deep-supervision list
        when the decoders are in deep-supervision mode: exactly what nnU-Net's loss and predictor expect.
    """

    def __init__(self, general: nn.Module, medical: nn.Module, num_classes: int, auto_prompt: bool = True):
        super().__init__()
        self.general = general
        self.medical = medical
        self.num_classes = num_classes
        # the prompt is an input to the medical decoder, not a path for its loss into the general branch
        self.detach_prompt = True
        self.prompt = None
        if auto_prompt:
            conv = medical.encoder.conv_op
            self.prompt = nn.ModuleList(
                conv(num_classes, c, 3, padding=1) for c in medical.encoder.output_channels)
            for p in self.prompt:
                nn.init.zeros_(p.weight)
                nn.init.zeros_(p.bias)

    @property
    def decoder(self) -> nn.Module:
        # what nnU-Net touches (deep_supervision switch, seg_layers): the decoder that makes the prediction
        return self.medical.decoder

    def set_deep_supervision(self, enabled: bool):
        self.general.decoder.deep_supervision = enabled
        self.medical.decoder.deep_supervision = enabled

    def forward_all(self, x: torch.Tensor) -> Dict[str, Union[torch.Tensor, List[torch.Tensor]]]:
        """Everything the training step needs: ``general`` and ``medical`` logits (tensor or DS list),
        ``general_skips`` (the general encoder's features per stage, for the SAM distillation)."""
        g_skips = self.general.encoder(x)
        general = self.general.decoder(g_skips)
        m_skips = self.medical.encoder(x)
        if self.prompt is not None:
            full = general[0] if isinstance(general, (list, tuple)) else general
            prompt = torch.softmax(full.float(), 1).to(full.dtype)
            if self.detach_prompt:
                prompt = prompt.detach()
            m_skips = [s + p(nn.functional.interpolate(prompt, size=s.shape[2:], mode="area"))
                       for s, p in zip(m_skips, self.prompt)]
        return {"general": general, "medical": self.medical.decoder(m_skips), "general_skips": g_skips}

    def forward(self, x: torch.Tensor):
        return self.forward_all(x)["medical"]


@torch.no_grad()
def mutual_ema_(a: nn.Module, b: nn.Module, alpha: float = 0.99):
    """Mutual EMA between two modules of one architecture (RRL-MedSAM), in place, in this order:
    a ← α·a + (1−α)·b, then b ← α·b + (1−α)·a (with the NEW a). Floating buffers are averaged too."""
    pa = dict(a.named_parameters()) | {k: v for k, v in a.named_buffers() if v.is_floating_point()}
    pb = dict(b.named_parameters()) | {k: v for k, v in b.named_buffers() if v.is_floating_point()}
    if pa.keys() != pb.keys() or any(pa[k].shape != pb[k].shape for k in pa):
        raise ValueError("mutual EMA needs two modules of the same architecture")
    for k, ta in pa.items():
        tb = pb[k]
        ta.mul_(alpha).add_(tb, alpha=1 - alpha)
        tb.mul_(alpha).add_(ta, alpha=1 - alpha)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
