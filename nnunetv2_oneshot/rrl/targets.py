"""SAM teacher targets for RRL-MedSAM's distillation, computed once per volume and carried through augmentation.

The frozen 2D encoder (LiteMedSAM's TinyViT: 256x256 slice -> 256x64x64 embedding) costs seconds per slice
on a CPU, so it cannot run on every training patch. Instead each training volume (atlas, unlabelled scans)
is embedded ONCE, slice by slice along its first axis (each slice min-max normalised with the volume's
0.5/99.5 percentiles, repeated to 3 channels, resized to 256x256); the embeddings are restacked along depth
and pooled to the grid of the general encoder stage that is distilled (``stride`` voxels per cell). A
training patch then needs only the volume coordinates of its voxels: they travel as extra channels through
nnU-Net's spatial augmentation (as a ``regression_target``, which its spatial transform warps exactly like the
image and its intensity transforms leave alone), and the target is the embedding volume sampled there.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

REGRESSION_KEY = "regression_target"
ASIDE_KEY = "oneshot_coordinates"  # no nnU-Net transform knows this key, so none touches it


def target_grid_shape(shape: Sequence[int], stride: Sequence[int]) -> Tuple[int, ...]:
    return tuple(math.ceil(s / t) for s, t in zip(shape, stride))


@torch.no_grad()
def embed_volume(encoder: Callable[[torch.Tensor], torch.Tensor], volume: np.ndarray, stride: Sequence[int],
                 input_size: int = 256, batch_size: int = 4, every: int = 1,
                 device: torch.device = torch.device("cpu"), progress: Optional[Callable[[int, int], None]] = None
                 ) -> np.ndarray:
    """Slice-wise embeddings of a 3D volume on a coarse grid.

    Args:
        encoder: 2D image encoder, (N, 3, input_size, input_size) -> (N, E, h, w).
        volume: (D, H, W) one channel of one volume.
        stride: (s_d, s_h, s_w) voxels per target cell; target depth i is slice min(D-1, i*s_d + s_d//2).
        every: embed only every ``every``-th target depth and interpolate linearly in between (cheap tests).
    Returns:
        float16 array (E, ceil(D/s_d), ceil(H/s_h), ceil(W/s_w)).
    """
    d, h, w = volume.shape
    grid = target_grid_shape(volume.shape, stride)
    lo, hi = np.percentile(volume, (0.5, 99.5))
    vol = torch.from_numpy(np.clip((volume - lo) / max(hi - lo, 1e-8), 0, 1).astype(np.float32))
    depths = list(range(0, grid[0], every))
    if depths[-1] != grid[0] - 1:
        depths.append(grid[0] - 1)
    out = {}
    for start in range(0, len(depths), batch_size):
        chunk = depths[start:start + batch_size]
        z = [min(d - 1, i * stride[0] + stride[0] // 2) for i in chunk]
        x = nn.functional.interpolate(vol[z][:, None], size=(input_size, input_size), mode="bilinear",
                                      align_corners=False).repeat(1, 3, 1, 1).to(device)
        emb = encoder(x).float()
        emb = nn.functional.interpolate(emb, size=grid[1:], mode="area" if emb.shape[-1] >= grid[2] else "bilinear")
        for i, e in zip(chunk, emb.cpu()):
            out[i] = e
        if progress is not None:
            progress(min(start + batch_size, len(depths)), len(depths))
    result = torch.empty((out[depths[0]].shape[0], *grid))
    for a, b in zip(depths[:-1], depths[1:]):
        for i in range(a, b + 1):
            t = (i - a) / (b - a)
            result[:, i] = (1 - t) * out[a] + t * out[b]
    if len(depths) == 1:
        result[:, 0] = out[depths[0]]
    return result.numpy().astype(np.float16)


def coordinate_channels(shape: Sequence[int], flow: Optional[np.ndarray] = None) -> np.ndarray:
    """(3, *shape) voxel coordinates of a volume, plus ``flow`` (3, *shape) if given: the coordinates in the
    moving image that a backward warp ``out(x) = moving(x + flow(x))`` read from."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    return grid if flow is None else grid + flow


def sample_targets(embeddings: torch.Tensor, coords: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """Teacher targets on the feature grid of a patch.

    Args:
        embeddings: (B, E, *G) per-sample embedding volumes (``embed_volume``'s grid).
        coords: (B, 3, *S) volume voxel coordinates of each patch voxel (after augmentation).
        stride: voxels per feature cell; S must be divisible by it.
    Returns:
        (B, E, *S/stride): the embeddings trilinearly sampled at each feature cell's centre (the mean of
        its voxels' coordinates). Outside the volume: zeros (mask them with ``valid``).
    """
    k = tuple(int(s) for s in stride)
    centres = nn.functional.avg_pool3d(coords, kernel_size=k, stride=k)
    grid_shape = embeddings.shape[2:]
    # voxel coordinate c lies at cell index (c - (s-1)/2) / s; normalise for align_corners=True
    norm = [((centres[:, i] - (k[i] - 1) / 2) / k[i]) / max(grid_shape[i] - 1, 1) * 2 - 1 for i in range(3)]
    grid = torch.stack(norm[::-1], dim=-1)  # grid_sample wants (x, y, z) = (W, H, D) order
    return nn.functional.grid_sample(embeddings.float(), grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=True)


def valid_cells(valid: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """(B, 1, *S) ones inside the volume (zeros where the loader padded) -> (B, 1, *S/stride) bool: cells
    whose voxels all lie inside."""
    k = tuple(int(s) for s in stride)
    return nn.functional.avg_pool3d(valid, kernel_size=k, stride=k) > 0.999


class SplitExtraChannels:
    """First transform: channels ``n_image:`` of the image become a regression target (spatially warped with
    the image, never intensity-augmented)."""

    def __init__(self, n_image: int):
        self.n_image = n_image

    def __call__(self, **data_dict) -> dict:
        img = data_dict["image"]
        data_dict["image"], data_dict[REGRESSION_KEY] = img[:self.n_image], img[self.n_image:]
        return data_dict


class SetAsideExtraChannels:
    """Right after the spatial transforms: move the regression target out of reach of the later ones (which
    do not all handle it)."""

    def __call__(self, **data_dict) -> dict:
        data_dict[ASIDE_KEY] = data_dict.pop(REGRESSION_KEY)
        return data_dict


class JoinExtraChannels:
    """Last transform: append the set-aside channels to the image again (nnU-Net's loader keeps only
    ``image`` and ``segmentation``)."""

    def __call__(self, **data_dict) -> dict:
        data_dict["image"] = torch.cat([data_dict["image"], data_dict.pop(ASIDE_KEY).to(data_dict["image"].dtype)])
        return data_dict


def with_extra_channels(transforms, n_image: int, spatial_types: Tuple[type, ...]):
    """Wraps nnU-Net's training ``ComposeTransforms`` so that image channels ``n_image:`` are moved by the
    spatial transforms (instances of ``spatial_types``) only."""
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    inner = list(transforms.transforms)
    kind = lambda t: t.transform if isinstance(t, RandomTransform) else t  # noqa: E731
    last = max((i for i, t in enumerate(inner) if isinstance(kind(t), spatial_types)), default=None)
    if last is None:
        raise ValueError("no spatial transform found in nnU-Net's training transforms")
    return ComposeTransforms([SplitExtraChannels(n_image), *inner[:last + 1], SetAsideExtraChannels(),
                              *inner[last + 1:], JoinExtraChannels()])


def distillation_loss(features: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Feature MSE over the valid cells. features, targets: (B, E, *G); valid: (B, 1, *G) bool."""
    m = valid.expand_as(targets).float()
    return ((features.float() - targets) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def stage_strides(strides: List[Sequence[int]], stage: int) -> Tuple[int, ...]:
    """Cumulative stride of encoder stage ``stage`` (nnU-Net's per-stage strides)."""
    return tuple(int(np.prod([s[i] for s in strides[:stage + 1]])) for i in range(len(strides[0])))
