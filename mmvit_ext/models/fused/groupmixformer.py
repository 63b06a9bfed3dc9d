"""Fused CPU-inference copies of GroupMixFormer's blocks and patch embeddings."""
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.group_mix_attention import depthwise, group_mix_attention
from .kernels import FusedConv2d, FusedLinear, FusedModule, bn_scale_shift, frozen


class FusedSeparableDownsample(FusedModule):
    """:class:`SeparableDownsample` with the eval BatchNorm folded into the point-wise GEMM
    and Hardswish fused.

    Shapes: (B, C_in, H, W) -> (B, C_out, H', W').
    """

    def __init__(self, dw, pw):
        super().__init__()
        self.dw, self.pw = dw, pw

    @classmethod
    def from_module(cls, downsample):
        if not isinstance(downsample.bn, _BatchNorm):
            return None
        scale, shift = bn_scale_shift(downsample.bn)
        return cls(FusedConv2d.fold(downsample.dw),
                   FusedLinear.fold(downsample.pw.weight.flatten(1), scale=scale, shift=shift,
                                    act='hardswish'))

    def forward(self, x):
        return self.pw(self.dw(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FusedGroupMixBlock(FusedModule):
    """:class:`GroupMixBlock` for inference.

    The aggregator's eval BatchNorm is folded into the qkv rows of the identity segment and into
    the proxies' point-wise GEMMs (Hardswish fused), the residual adds and GELU into the GEMMs
    and the position-encoding conv; the attention is the plain module's function.

    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, block):
        super().__init__()
        attn, agg, mlp = block.attn, block.attn.aggregator, block.mlp
        seg = self.seg_dims = agg.seg_dims
        self.scale = attn.scale
        scale, shift = bn_scale_shift(agg.norm)
        self.cpe = FusedConv2d.fold(block.cpe.proj)
        self.norm1 = block.norm1
        # segment 0 (identity): its BN (the first s channels, shared by q, k, v) folded in
        weight, bias = attn.segment_weights(0)
        identity = FusedLinear.fold(weight, bias, scale=scale[:seg].repeat(3),
                                    shift=shift[:seg].repeat(3))
        self.qkv = torch.nn.ModuleList(
            [identity] + [FusedLinear(*attn.segment_weights(i)) for i in range(1, 5)])
        # proxies 1-3: depth-wise taps repeated for q, k, v; point-wise GEMM + BN + Hardswish
        self.proxy_dw = torch.nn.ParameterList(
            frozen(conv.weight.repeat(3, 1, 1, 1)) for conv in agg.local_dw)
        self.proxy_pw = torch.nn.ModuleList(
            FusedLinear.fold(pw.weight.flatten(1), scale=scale[i * seg:(i + 1) * seg],
                             shift=shift[i * seg:(i + 1) * seg], act='hardswish')
            for i, pw in enumerate(agg.local_pw, start=1))
        self.branch_dw = frozen(agg.branch_dw.weight)
        self.branch_pw = FusedLinear(agg.branch_pw.weight.flatten(1))
        self.branch_norm = agg.branch_norm
        self.crpe = attn.crpe
        self.proj = FusedLinear(attn.proj.weight, attn.proj.bias)
        self.norm2 = block.norm2
        self.fc1 = FusedLinear(mlp.fc1.weight, mlp.fc1.bias, act='gelu')
        self.fc2 = FusedLinear(mlp.fc2.weight, mlp.fc2.bias)

    @classmethod
    def from_module(cls, block):
        if not isinstance(block.attn.aggregator.norm, _BatchNorm):
            return None
        return cls(block)

    def forward(self, x):
        x = self.cpe.channels_last(x, residual=x)
        B, H, W, C = x.shape
        N, seg = H * W, self.seg_dims
        y = self.norm1(x)
        segments = [qkv(y) for qkv in self.qkv]
        proxies = [F.hardswish(segments[0]).view(B, N, 3, seg)]
        for i, (dw, pw) in enumerate(zip(self.proxy_dw, self.proxy_pw), start=1):
            proxies.append(pw(depthwise(segments[i], dw).reshape(-1, seg)).view(B, N, 3, seg))
        branch = self.branch_pw(depthwise(segments[4], self.branch_dw).reshape(-1, 3 * seg))
        branch = F.hardswish(self.branch_norm(branch)).view(B, N, seg)
        heads = group_mix_attention(torch.stack(proxies, dim=1), self.crpe, self.scale, H, W)
        tokens = self.proj(torch.cat([heads, branch], dim=-1), residual=x.reshape(B, N, C))
        tokens = self.fc2(self.fc1(self.norm2(tokens)), residual=tokens)
        return tokens.view(B, H, W, C)
