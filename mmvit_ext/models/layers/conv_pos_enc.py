"""Residual depth-wise convolution on channels-last maps (conditional position encoding)."""
import torch.nn as nn

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

    def forward(self, x):
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
