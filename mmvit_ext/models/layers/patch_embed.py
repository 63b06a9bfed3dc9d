"""Strided-conv patch embedding with a LayerNorm: the stem and stage transitions of Pale
Transformer and LaViT (PVTv2's overlapping patch embedding)."""
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from mmvit_ext.registry import MODELS


@MODELS.register_module()
class ConvPatchEmbed(nn.Module):
    """``LN(Conv_k,s(x))`` with padding ``k // 2``, output channels-last.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels C.
        kernel_size (int): Kernel k (7 for a stride-4 stem, 3 for stride-2 merges).
        stride (int): Stride s.
        norm_cfg (dict): Norm over the channels of every token. Defaults to LN, eps 1e-6.

    Shapes:
        x: (B, C_in, H, W) -> (B, H', W', C) with H' = floor((H - 1) / s) + 1 for odd k with
        padding k // 2 (= ceil(H / s)). A channels-last map may be passed as
        ``x.permute(0, 3, 1, 2)``: that view is channels-last memory and costs no copy.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 norm_cfg=dict(type='LN', eps=1e-6)):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))
