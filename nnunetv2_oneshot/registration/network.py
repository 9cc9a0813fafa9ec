"""VoxelMorph-style registration U-Net with a shared (Siamese) encoder (torch only)."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transform import integrate_velocity

__all__ = ["RegistrationNet"]


def _conv_block(in_ch: int, out_ch: int, stride: int, negative_slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


class RegistrationNet(nn.Module):
    """Predict a dense displacement field warping ``moving`` onto ``fixed``.

    Architecture (VoxelMorph U-Net, with the encoder applied to each image separately, as in Zhou et
    al., arXiv 2408.03616):

    * one shared encoder; level ``k`` is a 3x3x3 stride-2 conv + LeakyReLU(0.2), no normalisation;
      ``moving`` and ``fixed`` go through it independently (as one concatenated batch);
    * the decoder starts from the concatenated deepest features of both images; at every level it
      upsamples trilinearly to the skip's exact size, concatenates the moving and fixed skip features
      (the raw images at full resolution) and applies a 3x3x3 conv + LeakyReLU;
    * a 3x3x3 conv head (weights ~ N(0, 1e-5), zero bias, so the initial flow is ~0) outputs the flow,
      or a stationary velocity integrated by scaling and squaring when ``integrate_steps > 0``.

    Stride-2 convs give ``ceil(n / 2)`` sizes and upsampling targets each skip's size, so any input
    size works without padding and the output always has the input's spatial size.

    Args:
        in_channels: channels per image.
        encoder_channels: output channels of each stride-2 encoder level.
        decoder_channels: output channels of each decoder level, deepest first; same length as
            ``encoder_channels`` (the last one works at full resolution).
        integrate_steps: scaling-and-squaring steps (0 = predict the displacement directly).
        negative_slope: LeakyReLU slope.

    Shapes:
        ``moving``, ``fixed``: ``(B, in_channels, D, H, W)`` floating, intensities normalised;
        returns ``flow`` ``(B, 3, D, H, W)`` in voxel units (``warp(moving, flow) ~ fixed``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        encoder_channels: Sequence[int] = (32, 64, 64, 64),
        decoder_channels: Sequence[int] = (64, 64, 64, 32),
        integrate_steps: int = 0,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        encoder_channels = tuple(int(c) for c in encoder_channels)
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if in_channels < 1 or not encoder_channels or any(c < 1 for c in encoder_channels + decoder_channels):
            raise ValueError(
                f"channel counts must be positive and encoder_channels non-empty, got in_channels={in_channels}, "
                f"encoder_channels={encoder_channels}, decoder_channels={decoder_channels}"
            )
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError(
                f"decoder_channels must have one entry per encoder level: {decoder_channels} vs {encoder_channels}"
            )
        if integrate_steps < 0:
            raise ValueError(f"integrate_steps must be >= 0, got {integrate_steps}")
        self.in_channels = in_channels
        self.encoder_channels = encoder_channels
        self.decoder_channels = decoder_channels
        self.integrate_steps = integrate_steps

        self.encoder = nn.ModuleList()
        prev = in_channels
        for ch in encoder_channels:
            self.encoder.append(_conv_block(prev, ch, 2, negative_slope))
            prev = ch

        # skip channels per resolution level; level 0 (full resolution) is the raw image
        skip_channels = (in_channels,) + encoder_channels[:-1]
        levels = len(encoder_channels)
        self.decoder = nn.ModuleList()
        prev = 2 * encoder_channels[-1]
        for i, ch in enumerate(decoder_channels):
            self.decoder.append(_conv_block(prev + 2 * skip_channels[levels - 1 - i], ch, 1, negative_slope))
            prev = ch

        self.head = nn.Conv3d(prev, 3, kernel_size=3, padding=1)
        # tiny initial flow: training starts from (almost) the identity transform
        nn.init.normal_(self.head.weight, mean=0.0, std=1e-5)
        nn.init.zeros_(self.head.bias)

    def _encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [x]
        for block in self.encoder:
            feats.append(block(feats[-1]))
        return feats

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if moving.ndim != 5 or moving.shape != fixed.shape:
            raise ValueError(
                f"moving and fixed must both be (B, C, D, H, W) of equal shape, "
                f"got {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        if moving.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got shape {tuple(moving.shape)}")
        b = moving.shape[0]
        # one pass over the stacked batch == shared encoder weights, applied per image
        feats = self._encode(torch.cat((moving, fixed), dim=0))
        x = torch.cat((feats[-1][:b], feats[-1][b:]), dim=1)
        levels = len(self.encoder)
        for i, block in enumerate(self.decoder):
            skip = feats[levels - 1 - i]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat((x, skip[:b], skip[b:]), dim=1))
        flow = self.head(x)
        if self.integrate_steps > 0:
            flow = integrate_velocity(flow, self.integrate_steps)
        return flow
