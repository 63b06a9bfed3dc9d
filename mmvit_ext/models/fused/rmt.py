"""Fused CPU-inference copies of RMT's stem, downsamples and blocks."""
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.manhattan_attention import (decomposed_manhattan_attention, manhattan_attention,
                                          rotate_qk)
from ..layers.layer_scale import LayerScale
from .kernels import FusedConv2d, FusedLinear, FusedModule


class FusedRMTStem(FusedModule):
    """:class:`RMTStem` with its eval BatchNorms folded into the four convs and GELU fused.

    Shapes: (B, 3, H, W) -> (B, ceil(H/4), ceil(W/4), C).
    """

    def __init__(self, convs):
        super().__init__()
        self.convs = nn.ModuleList(convs)

    @classmethod
    def from_module(cls, stem):
        convs = [stem[i] for i in (0, 3, 6, 9)]
        norms = [stem[i + 1] for i in (0, 3, 6, 9)]
        if not all(isinstance(n, _BatchNorm) for n in norms):
            return None
        return cls([FusedConv2d.fold(c, n, act='gelu' if i < 3 else 'none')
                    for i, (c, n) in enumerate(zip(convs, norms))])

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = conv(x)
        return x.permute(0, 2, 3, 1)


class FusedRMTDownsample(FusedModule):
    """:class:`RMTDownsample` as one conv with the eval BatchNorm folded in.

    Shapes: (B, H, W, C_in) -> (B, ceil(H/2), ceil(W/2), C_out).
    """

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    @classmethod
    def from_module(cls, downsample):
        if not isinstance(downsample.norm, _BatchNorm):
            return None
        return cls(FusedConv2d.fold(downsample.conv, downsample.norm))

    def forward(self, x):
        return self.conv.channels_last(x)


def _scale_of(layer_scale):
    return layer_scale.weight if isinstance(layer_scale, LayerScale) else None


class FusedRMTBlock(FusedModule):
    """:class:`RMTBlock` for inference: the residual adds, GELU and layer scales fused into the
    oneDNN convs and GEMMs; the attention is the plain module's function.

    Shapes: x (B, H, W, C), rel_pos from the stage's ``ManhattanRelPos`` -> (B, H, W, C).
    """

    def __init__(self, block):
        super().__init__()
        attn, ffn = block.attn, block.ffn
        self.num_heads, self.head_dims, self.scale = attn.num_heads, attn.head_dims, attn.scale
        self.attention = (decomposed_manhattan_attention if attn.decomposed
                          else manhattan_attention)
        self.cpe = FusedConv2d.fold(block.cpe.proj)
        self.norm1 = block.norm1
        self.qk = FusedLinear(*attn.qk_weights())
        self.v = FusedLinear(attn.v_proj.weight, attn.v_proj.bias)
        self.lce = FusedConv2d.fold(attn.lce)
        self.out_proj = FusedLinear.fold(attn.out_proj.weight, attn.out_proj.bias,
                                         scale=_scale_of(block.ls1))
        self.norm2 = block.norm2
        self.fc1 = FusedLinear(ffn.fc1.weight, ffn.fc1.bias, act='gelu')
        self.ffn_dwconv = FusedConv2d.fold(ffn.dwconv.proj)
        self.fc2 = FusedLinear.fold(ffn.fc2.weight, ffn.fc2.bias, scale=_scale_of(block.ls2))

    @classmethod
    def from_module(cls, block):
        return cls(block)

    def forward(self, x, rel_pos):
        B, H, W, _ = x.shape
        rotation, masks = rel_pos
        x = self.cpe.channels_last(x, residual=x)
        y = self.norm1(x)
        q, k = rotate_qk(self.qk(y).view(B, H, W, self.num_heads, 2, self.head_dims), rotation)
        v = self.v(y)
        masks = masks if isinstance(masks, tuple) else (masks, )
        out = self.attention(q, k, v, *masks, self.scale)
        out = self.lce.channels_last(v, residual=out)
        x = self.out_proj(out, residual=x)
        hidden = self.fc1(self.norm2(x))
        hidden = self.ffn_dwconv.channels_last(hidden, residual=hidden)
        return self.fc2(hidden, residual=x)
