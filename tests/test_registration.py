"""Tests for nnunetv2_oneshot.registration (CPU, small volumes)."""

import numpy as np
import pytest
import torch

from nnunetv2_oneshot.registration import (
    GradientSmoothnessLoss,
    LocalNCCLoss,
    RegistrationNet,
    SpatialTransformer,
    compose,
    folding_fraction,
    identity_grid,
    integrate_velocity,
    jacobian_determinant,
    random_smooth_flow,
    warp,
    warp_labels,
)

SHAPES = [(8, 8, 8), (7, 10, 9), (16, 5, 12)]


def blob(shape, center, sigma=4.0):
    """(1, 1, D, H, W) Gaussian blob, values in (0, 1]."""
    g = identity_grid(shape)[0]
    c = torch.tensor(center, dtype=torch.float32).view(3, 1, 1, 1)
    return torch.exp(-((g - c) ** 2).sum(0) / (2 * sigma**2))[None, None]


def smooth_texture(shape, seed=0, batch=1, channels=1):
    """Smoothed noise, z-scored like nnU-Net's preprocessed data: locally textured everywhere, so local NCC
    is defined at every voxel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, channels, *shape), generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    return (x - x.mean()) / x.std()


def labels_volume(shape, seed=0):
    """(1, 1, D, H, W) int64 label map with non-contiguous values {0, 2, 5} in large smooth regions."""
    f = random_smooth_flow(shape, 1.0, 3, torch.Generator().manual_seed(seed))[0, 0]
    lab = torch.zeros(shape, dtype=torch.int64)
    lab[f > 0.2] = 2
    lab[f < -0.2] = 5
    return lab[None, None]


# ---------------------------------------------------------------------------------------- warping
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_zero_flow_is_identity(shape, mode, device):
    img = torch.rand(2, 3, *shape, device=device)
    flow = torch.zeros(2, 3, *shape, device=device)
    torch.testing.assert_close(warp(img, flow, mode=mode), img, atol=1e-5, rtol=0)
    torch.testing.assert_close(SpatialTransformer(mode)(img, flow), img, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.int32])
def test_warp_labels_zero_flow_identity(shape, mode, dtype, device):
    lab = labels_volume(shape).to(device, dtype)
    out = warp_labels(lab, torch.zeros(1, 3, *shape, device=device), mode=mode)
    assert out.dtype == dtype
    assert torch.equal(out, lab)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [2, -3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_constant_flow_equals_roll(axis, shift, mode, device):
    shape = (16, 18, 20)
    img = blob(shape, (7.5, 8.5, 9.5), sigma=3.0).to(device)
    flow = torch.zeros(1, 3, *shape, device=device)
    flow[:, axis] = shift
    out = warp(img, flow, mode=mode)
    # warp(img, s)(x) = img(x + s) = roll(img, -s)(x) away from the wrapped border
    expected = torch.roll(img, shifts=-shift, dims=2 + axis)
    interior = (slice(None), slice(None)) + (slice(3, -3),) * 3
    torch.testing.assert_close(out[interior], expected[interior], atol=1e-5, rtol=0)
    assert not torch.allclose(out, img, atol=1e-3)


def test_spatial_transformer_cache_follows_shape_and_is_not_persistent():
    st = SpatialTransformer()
    for shape in [(6, 7, 8), (9, 5, 4), (6, 7, 8)]:
        img = torch.rand(1, 2, *shape)
        flow = random_smooth_flow(shape, 1.5, 3, torch.Generator().manual_seed(1))
        torch.testing.assert_close(st(img, flow), warp(img, flow))
    assert st.state_dict() == {}
    # batch broadcasting: one flow for many images and vice versa
    img = torch.rand(3, 1, 6, 7, 8)
    flow = random_smooth_flow((6, 7, 8), 1.5, 3, torch.Generator().manual_seed(2))
    assert warp(img, flow).shape == (3, 1, 6, 7, 8)
    assert warp(img[:1], flow.expand(3, -1, -1, -1, -1)).shape == (3, 1, 6, 7, 8)


@pytest.mark.parametrize("num_classes", [None, 6])
@pytest.mark.parametrize("chunk_size", [1, 16])
def test_warp_labels_preserves_label_set(num_classes, chunk_size, device):
    shape = (16, 16, 16)
    lab = labels_volume(shape).to(device, torch.int32)
    flow = random_smooth_flow(shape, 2.0, 3, torch.Generator().manual_seed(3)).to(device)
    out = warp_labels(lab, flow, num_classes=num_classes, chunk_size=chunk_size)
    assert out.dtype == torch.int32 and out.shape == lab.shape
    assert set(out.unique().tolist()) == set(lab.unique().tolist())
    # one-hot + argmax agrees with nearest-neighbour warping on most voxels, but is not identical
    near = warp_labels(lab, flow, mode="nearest")
    agree = (out == near).float().mean()
    assert agree > 0.9
    assert not torch.equal(out, lab)


def test_warp_labels_matches_integer_translation():
    shape = (12, 12, 12)
    lab = labels_volume(shape)
    flow = torch.zeros(1, 3, *shape)
    flow[:, 1] = 2
    out = warp_labels(lab, flow)
    expected = torch.roll(lab, shifts=-2, dims=3)
    assert torch.equal(out[..., :-2, :], expected[..., :-2, :])


@pytest.mark.parametrize(
    "fn",
    [
        lambda: warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 2, 8, 8, 8)),
        lambda: warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 7)),
        lambda: warp(torch.rand(1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8)),
        lambda: warp(torch.rand(2, 1, 8, 8, 8), torch.zeros(3, 3, 8, 8, 8)),
        lambda: warp(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8), mode="bicubic"),
        lambda: warp_labels(torch.zeros(1, 2, 8, 8, 8, dtype=torch.long), torch.zeros(1, 3, 8, 8, 8)),
        lambda: warp_labels(torch.full((1, 1, 8, 8, 8), 4), torch.zeros(1, 3, 8, 8, 8), num_classes=3),
        lambda: integrate_velocity(torch.zeros(1, 2, 8, 8, 8)),
        lambda: compose(torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 8, 8, 9)),
        lambda: jacobian_determinant(torch.zeros(1, 2, 8, 8, 8)),
        lambda: random_smooth_flow((8, 8), 2.0),
        lambda: LocalNCCLoss()(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 9)),
        lambda: LocalNCCLoss(window=4),
        lambda: GradientSmoothnessLoss()(torch.zeros(3, 8, 8, 8)),
    ],
)
def test_bad_shapes_raise(fn):
    with pytest.raises(ValueError):
        fn()


def test_warp_rejects_integer_image():
    with pytest.raises(TypeError):
        warp(torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), torch.zeros(1, 3, 4, 4, 4))


# ------------------------------------------------------------------------ integration / compose
def test_integrate_velocity_zero_and_constant():
    shape = (10, 11, 12)
    zero = torch.zeros(2, 3, *shape)
    assert torch.equal(integrate_velocity(zero, 7), zero)
    v = torch.tensor([0.7, -0.3, 1.2]).view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()
    torch.testing.assert_close(integrate_velocity(v, 7), v, atol=1e-5, rtol=0)
    assert integrate_velocity(v, 0) is v


def test_integrate_velocity_removes_folding():
    v = random_smooth_flow((24, 24, 24), 8.0, 4, torch.Generator().manual_seed(1))
    assert folding_fraction(v) > 0
    assert folding_fraction(integrate_velocity(v, 7)) == 0.0


def test_compose_matches_sequential_warps():
    shape = (24, 24, 24)
    g = torch.Generator().manual_seed(0)
    a = random_smooth_flow(shape, 3.0, 4, g)
    b = random_smooth_flow(shape, 3.0, 4, g)
    img = blob(shape, (11.5,) * 3, 5.0) + 0.5 * blob(shape, (6, 14, 9), 3.0)
    ref = warp(warp(img, a), b)
    interior = (slice(None), slice(None)) + (slice(4, -4),) * 3
    err = (ref - warp(img, compose(a, b)))[interior].abs().max()
    naive = (ref - warp(img, a + b))[interior].abs().max()
    assert err < 0.05
    assert err < 0.6 * naive


def test_random_smooth_flow_deterministic_and_scaled():
    f1 = random_smooth_flow((12, 14, 16), 2.5, (3, 4, 5), torch.Generator().manual_seed(7))
    f2 = random_smooth_flow((12, 14, 16), 2.5, (3, 4, 5), torch.Generator().manual_seed(7))
    f3 = random_smooth_flow((12, 14, 16), 2.5, (3, 4, 5), torch.Generator().manual_seed(8))
    assert f1.shape == (1, 3, 12, 14, 16) and f1.dtype == torch.float32
    assert torch.equal(f1, f2) and not torch.equal(f1, f3)
    assert abs(f1.norm(dim=1).max().item() - 2.5) < 1e-4
    assert GradientSmoothnessLoss()(f1) < GradientSmoothnessLoss()(torch.randn_like(f1))


# ----------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("channels", [1, 2])
def test_local_ncc_self_minimum_and_ordering(channels, device):
    shape = (16, 16, 16)
    img = smooth_texture(shape, seed=0, batch=2, channels=channels).to(device)
    ncc = LocalNCCLoss(window=5)
    self_loss = ncc(img, img)
    assert self_loss.ndim == 0
    assert self_loss.item() == pytest.approx(-1.0, abs=2e-3)
    shifted = torch.roll(img, shifts=2, dims=3)
    noisy = img + 0.5 * torch.randn(img.shape, generator=torch.Generator().manual_seed(1)).to(device)
    assert ncc(img, shifted) > self_loss + 0.1
    assert ncc(img, noisy) > self_loss + 0.05


@pytest.mark.parametrize("a,b", [(2.0, 0.5), (0.5, -1.0), (-3.0, 2.0)])
def test_local_ncc_affine_intensity_invariance(a, b):
    img = smooth_texture((16, 16, 16), seed=2)
    other = smooth_texture((16, 16, 16), seed=3)
    ncc = LocalNCCLoss(window=7)
    torch.testing.assert_close(ncc(a * img + b, img), ncc(img, img), atol=2e-3, rtol=0)
    torch.testing.assert_close(ncc(a * other + b, img), ncc(other, img), atol=2e-3, rtol=0)


@pytest.mark.parametrize("scale,expected", [(1.0, -1.0), (1e-3, 0.0)])
def test_local_ncc_near_flat_windows_count_little(scale, expected):
    # eps acts on window means: a window whose local std is ~1e-3 (z-score units) adds ~nothing, even when
    # the two images agree exactly
    img = scale * smooth_texture((16, 16, 16), seed=4)
    assert LocalNCCLoss(window=5)(img, img).item() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("eps,max_over_q999", [(1e-5, (0, 20)), (1e-5 / 9 ** 6, (1e3, float("inf")))])
def test_local_ncc_flow_gradient_on_clipped_ct(eps, max_over_q999):
    # the real chest CT (slicerio), normalised like nnU-Net's CTNormalization, which clips air to one value
    # (half the volume flat). With VoxelMorph's eps (on window sums, here 9^6 times smaller on means) one voxel
    # at the edge of a flat region got ~1e5 times the gradient of the rest, and the registration net diverged
    # on every seed; with eps on window means no voxel stands out
    from scipy import ndimage as ndi
    from nnunetv2_oneshot.datasets.ct import load_source
    ct, seg, _, _ = load_source()
    ct, seg = ndi.zoom(ct, (0.5, 0.5, 1), order=1)[None, None], ndi.zoom(seg, (0.5, 0.5, 1), order=0)

    def normalise(x):
        fg = x[0, 0][seg > 0]
        lo, hi = np.percentile(fg, [0.5, 99.5])
        return torch.from_numpy(((np.clip(x, lo, hi) - fg.mean()) / fg.std()).astype(np.float32))

    moving = normalise(ct)
    fixed = normalise(np.roll(ct, 1, axis=3) + np.random.default_rng(0).normal(0, 10, ct.shape))
    assert (moving == moving.min()).float().mean() > 0.4
    flow = torch.zeros(1, 3, *moving.shape[2:], requires_grad=True)
    LocalNCCLoss(9, eps=eps)(warp(moving, flow), fixed).backward()
    g = flow.grad.norm(dim=1).flatten()
    ratio = (g.max() / torch.quantile(g, 0.999)).item()
    assert max_over_q999[0] < ratio < max_over_q999[1]


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_gradient_smoothness(penalty):
    loss = GradientSmoothnessLoss(penalty)
    const = torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1, 1).expand(2, 3, 8, 9, 10)
    assert loss(const).item() == 0.0
    rand = torch.randn(2, 3, 8, 9, 10, requires_grad=True)
    value = loss(rand)
    assert value.item() > 0
    value.backward()
    assert rand.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ jacobians
def test_jacobian_of_zero_flow_is_one():
    det = jacobian_determinant(torch.zeros(2, 3, 7, 8, 9))
    assert det.shape == (2, 7, 8, 9)
    torch.testing.assert_close(det, torch.ones_like(det))
    assert folding_fraction(torch.zeros(1, 3, 7, 8, 9)) == 0.0


@pytest.mark.parametrize(
    "matrix",
    [
        [[0.5, 0, 0], [0, 0, 0], [0, 0, 0]],  # stretch along D: det 1.5
        [[0, 0, 0], [0, -0.5, 0], [0, 0, 0]],  # compress along H: det 0.5
        [[0.1, 0.2, 0], [0, 0, 0.3], [-0.1, 0, 0.2]],  # shear + scale
    ],
)
def test_jacobian_of_linear_field(matrix):
    A = torch.tensor(matrix)
    grid = identity_grid((9, 10, 11))[0]  # (3, D, H, W)
    flow = torch.einsum("ij,jdhw->idhw", A, grid)[None]
    det = jacobian_determinant(flow)
    expected = torch.linalg.det(torch.eye(3) + A).item()
    torch.testing.assert_close(det[:, 1:-1, 1:-1, 1:-1], torch.full_like(det[:, 1:-1, 1:-1, 1:-1], expected))


def test_folding_fraction_detects_flip():
    grid = identity_grid((8, 8, 8))
    flow = torch.zeros(1, 3, 8, 8, 8)
    flow[:, 0] = -2 * grid[:, 0]  # x_d -> -x_d flips the D axis, det = -1
    frac = folding_fraction(flow)
    assert isinstance(frac, float) and 0 < frac <= 1
    assert frac == 1.0


# ---------------------------------------------------------------------------------------- network
CPU_NET = dict(encoder_channels=(16, 32, 32, 32), decoder_channels=(32, 32, 32, 16))


@pytest.mark.parametrize("shape", [(28, 33, 30), (16, 16, 16), (5, 9, 17)])
@pytest.mark.parametrize("integrate_steps", [0, 3])
def test_registration_net_output_shape_any_size(shape, integrate_steps):
    net = RegistrationNet(**CPU_NET, integrate_steps=integrate_steps)
    moving, fixed = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    flow = net(moving, fixed)
    assert flow.shape == (2, 3, *shape)
    assert flow.abs().max() < 1e-2  # head init N(0, 1e-5): starts at ~identity


@pytest.mark.parametrize(
    "moving_shape,fixed_shape",
    [((1, 1, 16, 16, 16), (1, 1, 16, 16, 15)), ((1, 2, 16, 16, 16), (1, 2, 16, 16, 16)), ((1, 16, 16, 16), (1, 16, 16, 16))],
)
def test_registration_net_rejects_bad_shapes(moving_shape, fixed_shape):
    net = RegistrationNet(in_channels=1, encoder_channels=(4, 8), decoder_channels=(8, 4))
    with pytest.raises(ValueError):
        net(torch.rand(moving_shape), torch.rand(fixed_shape))


def test_registration_net_bad_config_raises():
    with pytest.raises(ValueError):
        RegistrationNet(encoder_channels=(8, 8), decoder_channels=(8,))


@pytest.mark.parametrize("integrate_steps", [0, 4])
def test_registration_net_gradients_reach_all_parameters(integrate_steps, device):
    shape = (16, 16, 16)
    net = RegistrationNet(**CPU_NET, integrate_steps=integrate_steps).to(device)
    fixed = (blob(shape, (7.5, 7.5, 7.5), 3.0) + 0.1 * smooth_texture(shape)).to(device)
    moving = (blob(shape, (9.5, 7.5, 6.5), 3.0) + 0.1 * smooth_texture(shape, seed=1)).to(device)
    flow = net(moving, fixed)
    loss = LocalNCCLoss(5)(warp(moving, flow), fixed) + 0.1 * GradientSmoothnessLoss()(flow)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- recover a translation
@pytest.mark.parametrize("axis", [0, 2])
def test_free_flow_recovers_translation(axis):
    n = 24
    shift = [0.0, 0.0, 0.0]
    shift[axis] = 2.0
    center = [11.5] * 3
    fixed = blob((n,) * 3, center)
    moving = blob((n,) * 3, [c + s for c, s in zip(center, shift)])  # warp(moving, shift) == fixed
    flow = torch.zeros(1, 3, n, n, n, requires_grad=True)
    opt = torch.optim.Adam([flow], lr=0.1)
    ncc, smooth = LocalNCCLoss(9), GradientSmoothnessLoss()
    before = ncc(moving, fixed).item()
    for _ in range(120):
        opt.zero_grad()
        loss = ncc(warp(moving, flow), fixed) + 0.5 * smooth(flow)
        loss.backward()
        opt.step()
    after = ncc(warp(moving, flow), fixed).item()
    assert after < before - 0.03
    mask = fixed[0, 0] > 0.3
    recovered = torch.stack([flow.detach()[0, i][mask].mean() for i in range(3)])
    assert (recovered - torch.tensor(shift)).abs().max() < 0.5


def test_tiny_net_training_improves_similarity():
    torch.manual_seed(0)
    shape = (16, 16, 16)
    fixed = blob(shape, (7.5, 7.5, 7.5), 3.0)
    moving = blob(shape, (9.0, 7.5, 7.5), 3.0)
    net = RegistrationNet(encoder_channels=(8, 16), decoder_channels=(16, 8))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    ncc, smooth = LocalNCCLoss(7), GradientSmoothnessLoss()
    before = ncc(moving, fixed).item()
    for _ in range(60):
        opt.zero_grad()
        flow = net(moving, fixed)
        loss = ncc(warp(moving, flow), fixed) + 0.1 * smooth(flow)
        loss.backward()
        opt.step()
    with torch.no_grad():
        flow = net(moving, fixed)
        after = ncc(warp(moving, flow), fixed).item()
    assert after < before - 0.02
    mask = fixed[0, 0] > 0.3
    assert flow[0, 0][mask].mean() > 0.5  # moves the right way along D
