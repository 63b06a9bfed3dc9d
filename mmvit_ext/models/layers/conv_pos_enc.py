"""Residual depth-wise convolution on channels-last maps (conditional position encoding)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.registry import MODELS


@MODELS.register_module()
class ConvPosEnc(nn.Module):
    """``x + DWConv_k(x)``: the conv position encoding of RMT, GroupMixFormer and Pale, also
    the inner-residual depth-wise conv of RMT's FFN.

    Args:
        dims (int): Channels C.
        kernel_size (int): Odd kernel size; padding keeps the size. Defaults to 3.

    Shapes:
        x: (B, H, W, C) -> (B, H, W, C).

    The permutes are views: the NCHW view of a contiguous NHWC tensor is channels-last memory,
    which the CPU/GPU conv kernels take without a copy, and the output permutes back for free.
    """

    def __init__(self, dims, kernel_size=3):
        super().__init__()
        self.proj = nn.Conv2d(dims, dims, kernel_size, padding=kernel_size // 2, groups=dims)
        centre_tap = torch.zeros_like(self.proj.weight)
        centre_tap[..., kernel_size // 2, kernel_size // 2] = 1
        self.register_buffer('centre_tap', centre_tap, persistent=False)

    def forward(self, x):
        # The residual is the conv's centre tap plus 1: the same sum without a pass over x
        # forward and another over its gradient, which are memory-bound; the gradient of the
        # weight is that of the conv alone.
        out = F.conv2d(x.permute(0, 3, 1, 2), self.proj.weight + self.centre_tap,
                       self.proj.bias, padding=self.proj.padding, groups=self.proj.groups)
        return out.permute(0, 2, 3, 1)
