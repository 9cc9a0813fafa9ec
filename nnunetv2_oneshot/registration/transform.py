"""Dense displacement fields: warping, composition, integration and random smooth flows.

Conventions shared by everything in :mod:`nnunetv2_oneshot.registration`:

* images are floating tensors of shape ``(B, C, D, H, W)``;
* a displacement field ``flow`` has shape ``(B, 3, D, H, W)`` and is in **voxel units**; channel ``i``
  is the displacement along spatial axis ``i`` in ``(D, H, W)`` order;
* warping is a pull-back (backward warping): ``warp(image, flow)(x) = image(x + flow(x))``, so ``flow``
  maps fixed-space coordinates to moving-space coordinates (the VoxelMorph convention).

Only torch is used here (no nnU-Net import) so the module can be tested and reused on its own.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "SpatialTransformer",
    "warp_labels",
    "integrate_velocity",
    "compose",
    "random_smooth_flow",
]

_MODES = ("bilinear", "nearest")
_PADDING_MODES = ("zeros", "border", "reflection")


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------
def _spatial_shape(shape: Sequence[int]) -> Tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"expected a spatial shape (D, H, W) of three positive ints, got {shape}")
    return shape  # type: ignore[return-value]


def _check_flow(flow: torch.Tensor, name: str = "flow") -> None:
    if flow.ndim != 5 or flow.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, D, H, W), got {tuple(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {flow.dtype}")


def _check_image_and_flow(image: torch.Tensor, flow: torch.Tensor, image_name: str = "image") -> None:
    if image.ndim != 5:
        raise ValueError(f"{image_name} must have shape (B, C, D, H, W), got {tuple(image.shape)}")
    _check_flow(flow)
    if image.shape[2:] != flow.shape[2:]:
        raise ValueError(
            f"{image_name} and flow spatial shapes differ: {tuple(image.shape)} vs {tuple(flow.shape)}"
        )
    bi, bf = image.shape[0], flow.shape[0]
    if bi != bf and 1 not in (bi, bf):
        raise ValueError(
            f"{image_name} and flow batch sizes must match or one must be 1: "
            f"{tuple(image.shape)} vs {tuple(flow.shape)}"
        )


def _check_modes(mode: str, padding_mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")


def _coord_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # Half-precision sampling coordinates lose sub-voxel accuracy on volumes of a few hundred voxels,
    # so coordinates are always computed in at least float32.
    dtype = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# --------------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------------
def identity_grid(
    shape: Sequence[int],
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Voxel coordinates of a ``(D, H, W)`` grid.

    Returns:
        tensor of shape ``(1, 3, D, H, W)``; channel ``i`` holds the integer index along axis ``i``
        (values in ``[0, shape[i] - 1]``). ``identity_grid(s) + flow`` are the absolute sampling
        positions used by :func:`warp`.
    """
    shape = _spatial_shape(shape)
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def _normalised_identity(shape: Sequence[int], device, dtype) -> torch.Tensor:
    """Identity grid in ``grid_sample`` layout: ``(1, D, H, W, 3)``, last dim ``(x, y, z) = (W, H, D)``,
    values in ``[-1, 1]`` (``align_corners=True``: -1 and 1 are the centres of the corner voxels)."""
    shape = _spatial_shape(shape)
    axes = [torch.linspace(-1.0, 1.0, s, device=device, dtype=dtype) for s in shape]
    gd, gh, gw = torch.meshgrid(*axes, indexing="ij")
    return torch.stack((gw, gh, gd), dim=-1).unsqueeze(0)


def _flow_to_grid(flow: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``(B, 3, D, H, W)`` voxel displacement -> ``(B, D, H, W, 3)`` normalised sampling grid."""
    spatial = flow.shape[2:]
    # align_corners=True: voxel i <-> -1 + 2 i / (n - 1); a size-1 axis always samples its only voxel.
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in spatial], device=flow.device, dtype=flow.dtype)
    disp = flow.permute(0, 2, 3, 4, 1) * scale  # (B, D, H, W, 3) in (D, H, W) order
    return identity + disp.flip(-1)  # grid_sample wants (W, H, D) order


def _sample(image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """grid_sample with batch broadcasting (either side may have batch 1)."""
    b = max(image.shape[0], grid.shape[0])
    image = image.expand(b, *image.shape[1:])
    grid = grid.expand(b, *grid.shape[1:])
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def _warp(
    image: torch.Tensor, flow: torch.Tensor, mode: str, padding_mode: str, identity: torch.Tensor
) -> torch.Tensor:
    dtype = identity.dtype
    grid = _flow_to_grid(flow.to(dtype), identity)
    out = _sample(image.to(dtype), grid, mode, padding_mode)
    return out.to(image.dtype)


# --------------------------------------------------------------------------------------------------
# public warping API
# --------------------------------------------------------------------------------------------------
def warp(
    image: torch.Tensor,
    flow: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Backward-warp ``image`` with a voxel displacement field: ``out(x) = image(x + flow(x))``.

    Args:
        image: ``(B, C, D, H, W)`` floating tensor (any intensity range).
        flow: ``(B, 3, D, H, W)`` displacement in voxels, channels in ``(D, H, W)`` order. Either batch
            may be 1 and is then broadcast against the other.
        mode: ``"bilinear"`` (trilinear for 3D) or ``"nearest"``.
        padding_mode: ``"border"`` (default; replicates edge voxels), ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(max(B_image, B_flow), C, D, H, W)`` tensor with ``image``'s dtype. Differentiable w.r.t.
        ``image`` and (for ``"bilinear"``) ``flow``.
    """
    _check_image_and_flow(image, flow)
    _check_modes(mode, padding_mode)
    if not image.is_floating_point():
        raise TypeError(f"warp needs a floating image, got {image.dtype}; use warp_labels for label maps")
    identity = _normalised_identity(image.shape[2:], image.device, _coord_dtype(image, flow))
    return _warp(image, flow, mode, padding_mode, identity)


class SpatialTransformer(nn.Module):
    """Module form of :func:`warp` that caches the identity sampling grid.

    The grid is a non-persistent buffer (never saved in ``state_dict``) rebuilt whenever the input's
    spatial shape, device or dtype changes, so one instance serves any input size.

    Args:
        mode: default interpolation, ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.
    """

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border") -> None:
        super().__init__()
        _check_modes(mode, padding_mode)
        self.mode = mode
        self.padding_mode = padding_mode
        self.register_buffer("_identity", None, persistent=False)

    def _get_identity(self, shape, device, dtype) -> torch.Tensor:
        grid = self._identity
        if grid is None or grid.shape[1:4] != tuple(shape) or grid.device != device or grid.dtype != dtype:
            grid = _normalised_identity(shape, device, dtype)
            self._identity = grid
        return grid

    def forward(self, image: torch.Tensor, flow: torch.Tensor, mode: Optional[str] = None) -> torch.Tensor:
        """``image`` ``(B, C, D, H, W)`` float, ``flow`` ``(B, 3, D, H, W)`` voxels -> warped image
        ``(B, C, D, H, W)``; ``mode`` overrides the default interpolation for this call."""
        mode = self.mode if mode is None else mode
        _check_image_and_flow(image, flow)
        _check_modes(mode, self.padding_mode)
        if not image.is_floating_point():
            raise TypeError(f"SpatialTransformer needs a floating image, got {image.dtype}")
        identity = self._get_identity(image.shape[2:], image.device, _coord_dtype(image, flow))
        return _warp(image, flow, mode, self.padding_mode, identity)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"


def warp_labels(
    label: torch.Tensor,
    flow: torch.Tensor,
    num_classes: Optional[int] = None,
    mode: str = "bilinear",
    padding_mode: str = "border",
    chunk_size: int = 16,
) -> torch.Tensor:
    """Warp an integer label map.

    With ``mode="bilinear"`` the one-hot encoding is warped trilinearly and arg-maxed, which gives
    smoother boundaries than nearest-neighbour sampling. Classes are processed ``chunk_size`` at a
    time with a running max, so memory does not grow with the number of labels.

    Args:
        label: ``(B, 1, D, H, W)`` integer tensor.
        flow: ``(B, 3, D, H, W)`` displacement in voxels (see :func:`warp`).
        num_classes: if given, labels must lie in ``[0, num_classes)``; if ``None`` only the label
            values present in ``label`` are encoded (they need not be contiguous).
        mode: ``"bilinear"`` (one-hot + argmax) or ``"nearest"``.
        padding_mode: as in :func:`warp`. With ``"zeros"``, voxels sampled outside the volume get the
            smallest label (class 0 / the smallest present value).
        chunk_size: number of classes warped per ``grid_sample`` call.

    Returns:
        ``(B, 1, D, H, W)`` tensor with ``label``'s dtype; its values are a subset of the input's.
    """
    if label.ndim != 5 or label.shape[1] != 1:
        raise ValueError(f"label must have shape (B, 1, D, H, W), got {tuple(label.shape)}")
    if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
        raise TypeError(f"label must be an integer tensor, got {label.dtype}")
    _check_image_and_flow(label, flow, image_name="label")
    _check_modes(mode, padding_mode)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    dtype = _coord_dtype(flow)
    identity = _normalised_identity(label.shape[2:], label.device, dtype)
    grid = _flow_to_grid(flow.to(dtype), identity)

    if mode == "nearest":
        # float64 keeps every int32 label exact; float32 would already round above 2**24.
        out = _sample(label.to(torch.float64), grid.to(torch.float64), "nearest", padding_mode)
        return out.round().to(label.dtype)

    if num_classes is None:
        values, index = torch.unique(label, return_inverse=True)
        index = index.reshape(label.shape)
    else:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        lo, hi = int(label.min()), int(label.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), found range [{lo}, {hi}]")
        values = torch.arange(num_classes, device=label.device, dtype=label.dtype)
        index = label.long()

    best_val: Optional[torch.Tensor] = None
    best_idx: Optional[torch.Tensor] = None
    for start in range(0, values.numel(), chunk_size):
        classes = torch.arange(start, min(start + chunk_size, values.numel()), device=label.device)
        onehot = (index == classes.view(1, -1, 1, 1, 1)).to(dtype)  # (B, K', D, H, W)
        val, idx = _sample(onehot, grid, "bilinear", padding_mode).max(dim=1, keepdim=True)
        idx = idx + start
        if best_val is None:
            best_val, best_idx = val, idx
        else:
            better = val > best_val  # strict: ties keep the lower class, like a plain argmax
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx, best_idx)
    return values[best_idx]


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Integrate a stationary velocity field by scaling and squaring (diffeomorphic registration).

    ``phi = v / 2**steps``, then ``steps`` times ``phi = phi + warp(phi, phi)`` (border padding, so a
    constant velocity integrates exactly to itself).

    Args:
        velocity: ``(B, 3, D, H, W)`` velocity in voxels.
        steps: number of squarings; 0 returns ``velocity`` unchanged.

    Returns:
        ``(B, 3, D, H, W)`` displacement field in voxels.
    """
    _check_flow(velocity, "velocity")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return velocity
    identity = _normalised_identity(velocity.shape[2:], velocity.device, _coord_dtype(velocity))
    flow = velocity / (2**steps)
    for _ in range(steps):
        flow = flow + _warp(flow, flow, "bilinear", "border", identity)
    return flow


def compose(flow_a: torch.Tensor, flow_b: torch.Tensor) -> torch.Tensor:
    """Compose two displacement fields so that ``warp(warp(img, a), b) ~= warp(img, compose(a, b))``.

    ``warp(warp(img, a), b)(x) = img(x + b(x) + a(x + b(x)))``, hence
    ``compose(a, b)(x) = b(x) + a(x + b(x)) = b + warp(a, b)`` (``a`` sampled trilinearly, border
    padding). The composed field is only approximately equal to warping twice because the double
    warp interpolates the image twice.

    Args:
        flow_a: ``(B, 3, D, H, W)`` voxels, applied to the image first.
        flow_b: ``(B, 3, D, H, W)`` voxels, applied second.

    Returns:
        ``(B, 3, D, H, W)`` displacement in voxels.
    """
    _check_flow(flow_a, "flow_a")
    _check_flow(flow_b, "flow_b")
    if flow_a.shape[2:] != flow_b.shape[2:]:
        raise ValueError(f"flow shapes differ: {tuple(flow_a.shape)} vs {tuple(flow_b.shape)}")
    return flow_b + warp(flow_a, flow_b)


def random_smooth_flow(
    shape: Sequence[int],
    max_displacement: float,
    control_points: Union[int, Sequence[int]] = 4,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random smooth displacement: uniform values in ``[-1, 1]`` on a coarse control grid, trilinearly
    upsampled (``align_corners=True``) to ``shape`` and scaled so the largest displacement vector has
    Euclidean norm ``max_displacement`` voxels.

    Args:
        shape: spatial size ``(D, H, W)``.
        max_displacement: maximum displacement length in voxels (>= 0).
        control_points: control-grid size, an int or one per axis (>= 1; 1 gives a translation).
            Fewer points give smoother fields.
        generator: makes the field deterministic; values are drawn on the generator's device.
        device: output device (default: the generator's device, else CPU).
        dtype: output floating dtype.

    Returns:
        ``(1, 3, D, H, W)`` displacement field in voxels.
    """
    shape = _spatial_shape(shape)
    if max_displacement < 0:
        raise ValueError(f"max_displacement must be >= 0, got {max_displacement}")
    cp = (control_points,) * 3 if isinstance(control_points, int) else tuple(int(c) for c in control_points)
    if len(cp) != 3 or any(c < 1 for c in cp):
        raise ValueError(f"control_points must be a positive int or three positive ints, got {control_points}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    coarse = torch.rand((1, 3, *cp), generator=generator, device=gen_device, dtype=torch.float32) * 2 - 1
    flow = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    norm = flow.norm(dim=1).max()
    flow = flow * (max_displacement / norm.clamp_min(1e-12))
    return flow.to(device=device if device is not None else gen_device, dtype=dtype)
