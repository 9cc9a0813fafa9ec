"""Which scan to label: rank unlabelled scans by how central each is among the others, reading images only.

A one-shot user labels ONE scan; every synthetic pair and every propagated label is that scan deformed, so an
atlas close to the rest of the population asks the least of the registration. Centrality here is the image
similarity of a scan to the mean of all the OTHER scans after affine alignment:

1. every image is shrunk (``shrink``, default 3: 6 mm for 2 mm brains) and scaled to mean 1 inside its
   foreground (non-zero voxels), so that scanner gain does not count;
2. a template is built by affine registration (Mattes mutual information, :mod:`.classical`) of every image
   onto the current template and averaging; the first template is the image of median foreground volume
   (a label-free, deterministic start), ``rounds`` rounds refine it;
3. the score of an image is the normalised cross-correlation between it and the leave-one-out mean of the
   others, on the template grid after the last round's alignment.

Cost: ``rounds`` x N affine registrations of shrunk images on one thread (deterministic; well under a second
each for 6 mm brains), not the N^2 of all pairs. No label is read: the IXI benchmark chooses its atlas this way.
"""
from __future__ import annotations

from typing import Callable, List, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_oneshot.registration.classical import _affine

__all__ = ["rank_atlas_candidates"]


def _prepare(image: sitk.Image, shrink: int) -> sitk.Image:
    img = sitk.Cast(image, sitk.sitkFloat32)
    factors = [max(1, min(int(shrink), n // 16)) for n in img.GetSize()]
    if max(factors) > 1:
        img = sitk.BinShrink(img, factors)
    a = sitk.GetArrayViewFromImage(img)
    fg = a[a > 0]
    if fg.size == 0:
        raise ValueError("an image has no voxel above 0: nothing to align")
    return sitk.Cast(img / float(fg.mean()), sitk.sitkFloat32)  # division by a double gives a double image


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def rank_atlas_candidates(images: Mapping[str, sitk.Image], shrink: int = 3, rounds: int = 2,
                          iterations: int = 100, seed: int = 0,
                          progress: Optional[Callable[[str], None]] = None) -> List[Tuple[str, float]]:
    """``[(case, score)]``, most central first (ties by case name); score = NCC in [-1, 1] to the mean of the
    others after affine alignment (see the module docstring).

    Args:
        images: case -> 3D scalar image (its own geometry; at least 3 images). Background should be 0
            (skull-stripped or masked images); nothing else is assumed about intensities.
        shrink: integer down-sampling before registration (cost and robustness; centrality is coarse).
        rounds: template refinements (1: all images aligned to the median-volume image).
        iterations: optimiser iterations per affine registration.
        seed: seed of the metric's random sampling (the ranking is deterministic for a seed).
    """
    if len(images) < 3:
        raise ValueError(f"ranking needs at least 3 images, got {len(images)}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    # ITK on one thread: the same ranking on every run and machine (the IXI split's atlas depends on it). With
    # several threads the metric's and filters' sums come in varying order: scores moved by ~5e-4 between two
    # runs, more than the 1e-4 between the top two scans of IXI
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _rank(images, shrink, rounds, iterations, seed, progress)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _rank(images, shrink, rounds, iterations, seed, progress) -> List[Tuple[str, float]]:
    names = sorted(images)
    small = {c: _prepare(images[c], shrink) for c in names}
    volume = {c: int((sitk.GetArrayViewFromImage(small[c]) > 0).sum()) * float(np.prod(small[c].GetSpacing()))
              for c in names}
    by_volume = sorted(names, key=lambda c: (volume[c], c))
    template = small[by_volume[(len(names) - 1) // 2]]
    aligned = {}
    for r in range(rounds):
        for i, c in enumerate(names):
            t = _affine(template, small[c], iterations, seed)
            aligned[c] = sitk.GetArrayFromImage(sitk.Resample(small[c], template, t, sitk.sitkLinear, 0.0))
            if progress and ((i + 1) % 10 == 0 or i + 1 == len(names)):
                progress(f"round {r + 1}/{rounds}: {i + 1}/{len(names)} images aligned")
        mean = np.mean([aligned[c] for c in names], 0).astype(np.float32)
        grid = template
        template = sitk.GetImageFromArray(mean)
        template.CopyInformation(grid)
    total = np.sum([aligned[c] for c in names], 0)
    support = total > 0
    scores = {c: _ncc(aligned[c], (total - aligned[c]) / (len(names) - 1), support) for c in names}
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
