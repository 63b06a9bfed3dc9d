"""ConvPosEnc (x + DWConv(x), the identity folded into the conv's centre tap) against the plain
residual, and its checkpoint keys."""
import pytest
import torch
import torch.nn as nn

from mmvit_ext.models.layers import ConvPosEnc


@pytest.mark.parametrize('kernel_size', [3, 5])
def test_matches_the_plain_residual_and_its_gradients(kernel_size):
    torch.manual_seed(0)
    cpe = ConvPosEnc(6, kernel_size)
    conv = nn.Conv2d(6, 6, kernel_size, padding=kernel_size // 2, groups=6)
    conv.load_state_dict(cpe.proj.state_dict())
    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = cpe(x)
    ref = x_ref + conv(x_ref.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(cpe.proj.weight.grad, conv.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpe.proj.bias.grad, conv.bias.grad, rtol=1e-5, atol=1e-5)


def test_checkpoint_keys_are_the_conv_alone():
    cpe = ConvPosEnc(4)
    assert sorted(cpe.state_dict()) == ['proj.bias', 'proj.weight']
    assert cpe.to(torch.float64).centre_tap.dtype == torch.float64  # follows the module
