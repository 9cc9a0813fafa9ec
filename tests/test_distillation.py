import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunetv2_oneshot.distillation import CosineHintLoss, DecoderFeatureTap


def _unet(out_channels, deep_supervision):
    return PlainConvUNet(1, 3, (4, 8, 16), torch.nn.Conv3d, 3, (1, 2, 2), (1, 1, 1), out_channels, (1, 1),
                         conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, deep_supervision=deep_supervision)


@pytest.mark.parametrize("shape", [(2, 4, 6, 6, 6), (1, 8, 3, 5, 4)])
def test_identical_features_give_zero(shape):
    f = [torch.randn(shape), torch.randn(shape)]
    assert CosineHintLoss()(f, [x.clone() for x in f]).item() == pytest.approx(0.0, abs=1e-6)


def test_opposite_features_give_two_per_level():
    f = [torch.randn(2, 3, 4, 4, 4)]
    assert CosineHintLoss()(f, [-f[0]]).item() == pytest.approx(2.0, abs=1e-5)


def test_scale_invariant_and_bounded():
    s, t = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    a = CosineHintLoss()([s], [t]).item()
    assert CosineHintLoss()([3 * s], [0.5 * t]).item() == pytest.approx(a, abs=1e-5)
    assert 0 <= a <= 2


def test_hint_gradient_reaches_student_not_teacher(device):
    student, teacher = _unet(3, True).to(device), _unet(1, False).to(device)
    s_tap, t_tap = DecoderFeatureTap(student), DecoderFeatureTap(teacher)
    x = torch.randn(2, 1, 8, 12, 12, device=device)
    student(x)
    teacher(x)
    CosineHintLoss()(s_tap.features, t_tap.features).backward()
    s_grads = [p.grad for p in student.decoder.stages.parameters()]
    assert all(g is not None for g in s_grads) and any(g.abs().sum() > 0 for g in s_grads)
    assert all(p.grad is None for p in teacher.parameters())


def test_tap_records_last_two_decoder_levels_half_and_full_resolution():
    net = _unet(3, True)
    tap = DecoderFeatureTap(net, (-2, -1))
    net(torch.randn(1, 1, 8, 12, 12))
    half, full = tap.features
    assert full.shape == (1, 4, 8, 12, 12)  # full resolution, before the head
    assert half.shape == (1, 8, 4, 6, 6)    # one stride-2 stage up: half of every axis
    tap.remove()
    net(torch.randn(1, 1, 8, 12, 12))
    assert tap.features[1] is full  # no longer updated


@pytest.mark.parametrize("s, t", [([torch.zeros(1, 2, 3, 3, 3)], [torch.zeros(1, 2, 3, 3, 4)]),
                                  ([torch.zeros(1, 2, 3, 3, 3)], []),
                                  ([], [])])
def test_bad_inputs_raise(s, t):
    with pytest.raises(ValueError):
        CosineHintLoss()(s, t)


def test_tap_needs_a_decoder():
    with pytest.raises(ValueError):
        DecoderFeatureTap(torch.nn.Conv3d(1, 1, 3))
