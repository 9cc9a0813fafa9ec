"""RRL-MedSAM's network, mutual EMA and SAM-target plumbing (no nnU-Net training, no SAM weights needed)."""
import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunetv2_oneshot.rrl import RRLNet, count_parameters, mutual_ema_
from nnunetv2_oneshot.rrl.targets import (coordinate_channels, distillation_loss, embed_volume, sample_targets,
                                          stage_strides, valid_cells, with_extra_channels)

# SAM ViT-B's image encoder (the paper's reference for "~3% of SAM-B")
SAM_B_IMAGE_ENCODER_PARAMS = 89_670_912


def unet_kwargs(features=(4, 8, 16), n_conv=2):
    n = len(features)
    return dict(n_stages=n, features_per_stage=list(features), conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * n,
                strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=[n_conv] * n,
                n_conv_per_stage_decoder=[n_conv] * (n - 1), conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                nonlin_kwargs={"inplace": True})


def make_net(deep_supervision=False, auto_prompt=True, classes=3, features=(4, 8, 16)):
    torch.manual_seed(0)
    branch = lambda: PlainConvUNet(1, num_classes=classes, deep_supervision=deep_supervision,  # noqa: E731
                                   **unet_kwargs(features))
    return RRLNet(branch(), branch(), classes, auto_prompt=auto_prompt)


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_rrlnet_shapes(deep_supervision, device):
    net = make_net(deep_supervision).to(device)
    x = torch.randn(2, 1, 16, 16, 8, device=device)
    out = net.forward_all(x)
    if deep_supervision:
        assert [tuple(o.shape) for o in out["medical"]] == [(2, 3, 16, 16, 8), (2, 3, 8, 8, 4)]
        assert [tuple(o.shape) for o in out["general"]] == [(2, 3, 16, 16, 8), (2, 3, 8, 8, 4)]
    else:
        assert out["medical"].shape == out["general"].shape == (2, 3, 16, 16, 8)
    assert [tuple(s.shape) for s in out["general_skips"]] == [(2, 4, 16, 16, 8), (2, 8, 8, 8, 4), (2, 16, 4, 4, 2)]
    # forward = the medical branch's (final) prediction, what nnU-Net's loss and predictor see
    torch.testing.assert_close(net(x) if not deep_supervision else net(x)[0],
                               out["medical"] if not deep_supervision else out["medical"][0])
    net.set_deep_supervision(not deep_supervision)
    assert isinstance(net(x), list) != deep_supervision
    assert net.decoder is net.medical.decoder


def test_prompt_starts_at_zero_then_carries_the_general_mask():
    net, x = make_net(), torch.randn(1, 1, 16, 16, 8)
    before = net(x).detach()
    with torch.no_grad():
        for p in net.general.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(net(x), before)  # zero-initialised prompt convs: branches independent at init
    with torch.no_grad():
        for p in net.prompt:
            p.weight.normal_()
    assert not torch.allclose(net(x), before)
    assert make_net(auto_prompt=False).prompt is None


@pytest.mark.parametrize("detach", [True, False])
def test_prompt_detach_keeps_medical_loss_out_of_the_general_branch(detach):
    net = make_net()
    with torch.no_grad():
        for p in net.prompt:
            p.weight.normal_()
    net.detach_prompt = detach
    net(torch.randn(1, 1, 16, 16, 8)).sum().backward()
    grads = [p.grad for p in net.general.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached != detach
    assert all(p.grad is not None for p in net.prompt.parameters())


def test_mutual_ema_rule():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        for p in a.parameters():
            p.fill_(1.0)
        for p in b.parameters():
            p.fill_(3.0)
    mutual_ema_(a, b, alpha=0.9)
    # a ← 0.9·1 + 0.1·3 = 1.2, then b ← 0.9·3 + 0.1·1.2 = 2.82 (with the NEW a)
    for p in a.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.2))
    for p in b.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 2.82))
    with pytest.raises(ValueError):
        mutual_ema_(a, torch.nn.Linear(2, 3))


def test_mutual_ema_with_alpha_one_changes_nothing():
    net = make_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mutual_ema_(net.general.encoder, net.medical.encoder, alpha=1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("cap,within", [(96, True), (None, False)])
def test_general_encoder_parameter_budget(cap, within):
    """nnU-Net's default 3d_fullres plan (6 stages, 32..320 features): the trainer's feature cap is what keeps
    the general encoder within ~3% of SAM-B's image encoder, as in the paper."""
    features = [32, 64, 128, 256, 320, 320]
    if cap:
        features = [min(f, cap) for f in features]
    enc = PlainConvUNet(1, num_classes=4, **unet_kwargs(features)).encoder
    assert (count_parameters(enc) <= 0.03 * SAM_B_IMAGE_ENCODER_PARAMS) == within


def test_trainer_cap_is_96():
    from nnunetv2_oneshot.trainers.rrl import RRLMedSAMTrainer
    assert RRLMedSAMTrainer.max_features == 96 and RRLMedSAMTrainer.auto_prompt


@pytest.mark.parametrize("stride", [(4, 4, 4), (2, 4, 4)])
def test_sample_targets_at_identity_coordinates_returns_the_grid(stride):
    g = (3, 4, 5)
    emb = torch.randn(2, 6, *g)
    coords = torch.from_numpy(coordinate_channels([n * s for n, s in zip(g, stride)]))[None].repeat(2, 1, 1, 1, 1)
    torch.testing.assert_close(sample_targets(emb, coords, stride), emb, atol=1e-5, rtol=1e-5)
    # coordinates shifted by one cell along depth read the next cell
    shifted = coords.clone()
    shifted[:, 0] += stride[0]
    torch.testing.assert_close(sample_targets(emb, shifted, stride)[:, :, :-1], emb[:, :, 1:], atol=1e-5, rtol=1e-5)
    # outside the volume: zeros, and valid_cells masks the padded cells
    valid = torch.ones(2, 1, *coords.shape[2:])
    valid[..., :stride[2]] = 0
    v = valid_cells(valid, stride)
    assert v.shape == (2, 1, *g) and not v[..., 0].any() and v[..., 1:].all()


def test_distillation_loss_ignores_invalid_cells():
    f, t = torch.zeros(1, 2, 2, 2, 2), torch.ones(1, 2, 2, 2, 2)
    valid = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    valid[..., 0] = True
    t[..., 1] = 100.0  # huge error only in invalid cells
    assert distillation_loss(f, t, valid).item() == pytest.approx(1.0)


@pytest.mark.parametrize("every", [1, 2])
def test_embed_volume_picks_slices_and_interpolates(every):
    d, h, w, s = 16, 12, 8, (4, 4, 4)
    volume = np.broadcast_to(np.arange(d, dtype=np.float32)[:, None, None], (d, h, w)).copy()
    seen = []

    def encoder(x):  # (N, 3, 256, 256) -> (N, 2, 64, 64): records which slices it saw (their mean intensity)
        seen.extend(x.mean((1, 2, 3)).tolist())
        return x[:, :2, ::4, ::4] * 2

    emb = embed_volume(encoder, volume, s, every=every, batch_size=3)
    assert emb.shape == (2, 4, 3, 2) and emb.dtype == np.float16
    # target depth i is slice i*4+2 (normalised by the 0.5/99.5 percentiles)
    lo, hi = np.percentile(volume, (0.5, 99.5))
    expect = np.clip((np.arange(4) * 4 + 2 - lo) / (hi - lo), 0, 1) * 2
    np.testing.assert_allclose(emb[0, :, 0, 0].astype(np.float32), expect, atol=2e-3)
    assert len(seen) == (4 if every == 1 else 3)  # depths 0, 2, 3 when every 2nd (the last always)


def test_stage_strides():
    assert stage_strides([[1, 1, 1], [1, 2, 2], [2, 2, 2]], 2) == (2, 4, 4)


@pytest.mark.parametrize("dummy_2d", [False, True])  # True: nnU-Net's 2D augmentation of anisotropic 3D data
def test_extra_channels_move_with_the_image_and_skip_intensity_transforms(dummy_2d):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
    patch = (16, 16, 16)
    transforms = nnUNetTrainer.get_training_transforms(
        patch, (-0.5, 0.5), None, None, dummy_2d, use_mask_for_norm=[False], foreground_labels=[1])
    wrapped = with_extra_channels(transforms, 1, (SpatialTransform, Convert2DTo3DTransform))  # as the trainer
    torch.manual_seed(0)
    np.random.seed(0)
    hits = 0
    z = torch.arange(patch[0], dtype=torch.float32)[:, None, None].expand(patch) / patch[0]
    ramp = (z + torch.arange(patch[1])[None, :, None] / patch[1]) / 2  # in [0, 1)
    for _ in range(8):
        image = torch.rand(1, *patch) + 5
        # extra channels: a constant 1 and a ramp; the segmentation is the ramp thresholded
        extra = torch.stack([torch.ones(patch), ramp])
        seg = (ramp > 0.5).to(torch.int16)[None]
        out = wrapped(image=torch.cat([image, extra]), segmentation=seg)
        assert out["image"].shape == (3, *patch)
        ones, r = out["image"][1], out["image"][2]
        # interpolation and padding can only give values in [0, 1]; noise/brightness/gamma would leave it
        assert ones.min() >= -1e-5 and ones.max() <= 1 + 1e-5
        # same spatial transform as the segmentation: thresholding the moved ramp gives the moved label
        # (away from the threshold, where nearest and linear interpolation may differ by a voxel)
        inside = (ones > 0.999) & ((r - 0.5).abs() > 0.06)
        agree = ((r > 0.5) == (out["segmentation"][0] > 0))[inside].float().mean()
        assert agree > 0.995, float(agree)
        hits += bool((out["image"][0] != image[0]).any())
    assert hits > 0  # the image itself WAS augmented


def test_one_forward_for_synthetic_and_real_equals_two():
    from nnunetv2_oneshot.trainers.rrl import _split_batch
    net = make_net(deep_supervision=True)
    with torch.no_grad():
        for p in net.prompt:
            p.weight.normal_()
    a, b = torch.randn(2, 1, 16, 16, 8), torch.randn(2, 1, 16, 16, 8)
    joint = _split_batch(net.forward_all(torch.cat([a, b])), 2)
    for alone, together in zip((net.forward_all(a), net.forward_all(b)), joint):
        assert alone.keys() == together.keys()
        for k in alone:
            for x, y in zip(alone[k], together[k]):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
