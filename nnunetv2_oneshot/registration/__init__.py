"""Deformable registration utilities (torch only): warping, losses and a VoxelMorph-style network.

Flows are ``(B, 3, D, H, W)`` voxel displacements, channel ``i`` along spatial axis ``i`` (D, H, W),
and warping is a pull-back: ``warp(image, flow)(x) = image(x + flow(x))``.
"""

from .losses import GradientSmoothnessLoss, LocalNCCLoss, folding_fraction, jacobian_determinant
from .network import RegistrationNet
from .transform import (
    SpatialTransformer,
    compose,
    identity_grid,
    integrate_velocity,
    random_smooth_flow,
    warp,
    warp_labels,
)

__all__ = [
    "GradientSmoothnessLoss",
    "LocalNCCLoss",
    "RegistrationNet",
    "SpatialTransformer",
    "compose",
    "folding_fraction",
    "identity_grid",
    "integrate_velocity",
    "jacobian_determinant",
    "random_smooth_flow",
    "warp",
    "warp_labels",
]
