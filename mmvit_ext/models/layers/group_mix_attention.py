"""Group-Mix Attention (GMA) of GroupMixFormer (Ge et al., arXiv 2311.15157).

Numerically the official ``EfficientAtt``, computed channels-last with only the official
convolution taps:

* the qkv projection runs as one GEMM per aggregator segment (rows ``[q_i | k_i | v_i]`` of
  the official weight), so every depth-wise conv reads a contiguous channels-last map: the
  3x3, 5x5 and 7x7 proxies (weights shared by q, k, v) and the 3x3 of the non-attention
  branch each convolve exactly their own channels; the identity segment has no conv;
* the proxies' point-wise convs see q, k and v rows of one ``(B*H*W*3, s)`` matrix, and one BN
  over the four segments pools q, k and v like the official ``(3B, s, H, W)`` batch;
* proxies are laid out segment-major ``(B, 4, N, 3, s)``, so the factorised attention of all
  heads is two batched matmuls over ``B*4`` (one ``s x s`` context per segment, whose two
  off-diagonal head blocks are zeroed), see :func:`group_mix_attention`;
* the conv relative position encoding runs its 3x3/5x5/7x7 head groups as three depth-wise
  convs.

Parameters keep the official shapes except the four proxy BNs, stored as one BN over the 4s
proxy channels, so converting a checkpoint is renaming plus that concatenation.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from mmvit_ext.registry import MODELS

#: Aggregator kernel sizes of the three proxy segments.
PROXY_KERNELS = (3, 5, 7)
#: Heads per depth-wise kernel in the conv relative position encoding (official, 8 heads).
CRPE_HEAD_SPLIT = {3: 2, 5: 3, 7: 3}


def check_gma_dims(embed_dims, num_heads):
    """Raise a clear error for widths the official channel split cannot handle."""
    if num_heads != sum(CRPE_HEAD_SPLIT.values()):
        raise ValueError(f'GroupMixAttention needs num_heads=8 (the conv relative position '
                         f'encoding splits heads 2/3/3 over kernels 3/5/7), got {num_heads}.')
    if embed_dims % 5 or (4 * embed_dims // 5) % num_heads:
        raise ValueError(f'GroupMixAttention embed_dims must be divisible by 5 with 4/5 of it '
                         f'divisible by num_heads={num_heads} (a multiple of 10 for 8 heads), '
                         f'got {embed_dims}.')


def depthwise(x, weight, bias=None):
    """Depth-wise conv with 'same' padding on a channels-last map: (B, H, W, c) -> same."""
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=weight.shape[-1] // 2,
                   groups=weight.shape[0])
    return out.permute(0, 2, 3, 1)


class GroupAggregator(nn.Module):
    """The aggregator shared by q, k and v: five channel segments of width ``s = C/5``.

    Segment 0: BN + Hardswish ("identity"); segments 1-3: depth-wise kxk (k = 3, 5, 7) +
    point-wise conv + BN + Hardswish (group proxies); segment 4 of q, k and v concatenated:
    depth-wise 3x3 + point-wise conv (3s -> s) + LayerNorm(eps 1e-5) + Hardswish (the
    non-attention branch).

    Args:
        embed_dims (int): Channels C of q (and of k, v).
        norm_cfg (dict): Norm of the segments 0-3 (``norm``, over their 4s channels).

    Shapes:
        segments: five (B, H, W, 3s) maps, segment i of ``[q | k | v]`` -> proxies
        (B, 4, H*W, 3, s) (segments 0-3 of q, k and v) and the branch (B, H*W, s).
    """

    def __init__(self, embed_dims, norm_cfg=dict(type='BN')):
        super().__init__()
        self.embed_dims = embed_dims
        seg = self.seg_dims = embed_dims // 5
        self.local_dw = nn.ModuleList(
            nn.Conv2d(seg, seg, k, padding=k // 2, groups=seg, bias=False) for k in PROXY_KERNELS)
        self.local_pw = nn.ModuleList(
            nn.Conv2d(seg, seg, 1, bias=False) for _ in PROXY_KERNELS)
        self.norm = build_norm_layer(norm_cfg, 4 * seg)[1]
        self.branch_dw = nn.Conv2d(3 * seg, 3 * seg, 3, padding=1, groups=3 * seg, bias=False)
        self.branch_pw = nn.Conv2d(3 * seg, seg, 1, bias=False)
        self.branch_norm = nn.LayerNorm(seg, eps=1e-5)

    def forward(self, segments):
        B, H, W, _ = segments[0].shape
        seg = self.seg_dims
        # Segments 1-3: depth-wise kxk (the same taps for q, k and v) and the point-wise conv
        # as a GEMM over the (B*H*W*3, s) rows.
        pre = [segments[0].reshape(-1, seg)] + [
            F.linear(depthwise(segments[i], self.local_dw[i - 1].weight.repeat(3, 1, 1, 1))
                     .reshape(-1, seg), self.local_pw[i - 1].weight.flatten(1))
            for i in (1, 2, 3)]
        # One BN over the 4s channels of (B*H*W*3) samples: the statistics pool q, k and v like
        # the official (3B, s, H, W) batch.
        post = F.hardswish(self.norm(torch.cat(pre, dim=1).view(-1, 4 * seg, 1, 1)))
        proxies = post.view(B, H * W, 3, 4, seg).permute(0, 3, 1, 2, 4)
        branch = depthwise(segments[4], self.branch_dw.weight).reshape(-1, 3 * seg)
        branch = F.linear(branch, self.branch_pw.weight.flatten(1))
        branch = F.hardswish(self.branch_norm(branch))
        return proxies, branch.view(B, H * W, seg)


class ConvRelPosEnc(nn.Module):
    """Conv relative position term ``q * DWConv(v)``: heads 0-1 get a 3x3, heads 2-4 a 5x5 and
    heads 5-7 a 7x7 depth-wise conv (with bias).

    Args:
        head_dims (int): Channels d per head.

    Shapes:
        v: (B, 4, N, 2d) segment-major (two heads per segment), N = H*W -> the three conv
        outputs (B, H, W, 2d), (B, H, W, 3d), (B, H, W, 3d).
    """

    def __init__(self, head_dims):
        super().__init__()
        self.head_dims = head_dims
        self.convs = nn.ModuleList(
            nn.Conv2d(heads * head_dims, heads * head_dims, k, padding=k // 2,
                      groups=heads * head_dims) for k, heads in CRPE_HEAD_SPLIT.items())

    def forward(self, v, H, W):
        B, d = v.shape[0], self.head_dims
        groups = [v[:, 0], torch.cat([v[:, 1], v[:, 2, :, :d]], dim=-1),
                  torch.cat([v[:, 2, :, d:], v[:, 3]], dim=-1)]
        return [depthwise(group.reshape(B, H, W, group.shape[-1]), conv.weight, conv.bias)
                for group, conv in zip(groups, self.convs)]


def group_mix_attention(proxies, crpe, scale, height, width):
    """Factorised attention of the proxies plus the conv relative position term.

    Per head: ``scale * q (softmax_N(k)^T v) + q * DWConv(v)``, for the two heads of each of the
    four proxy segments.

    Args:
        proxies (Tensor): (B, 4, N, 3, s) segments 0-3 of q, k and v, N = H*W.
        crpe (ConvRelPosEnc): The conv relative position encoding.
        scale (float): Scale of the attention term.
        height, width (int): H, W.

    Returns:
        Tensor: (B, N, 4s), the eight heads head-major.
    """
    B, _, N, _, seg = proxies.shape
    d = seg // 2
    q, k, v = proxies.unbind(3)                                          # (B, 4, N, s) each
    k = k.softmax(dim=2)
    # One s x s context per segment (two heads); the cross-head blocks are zeroed and the
    # scale is applied to the small context instead of the (N x s) product.
    mask = torch.block_diag(*[proxies.new_full((d, d), scale)] * 2)
    context = torch.bmm(k.reshape(B * 4, N, seg).transpose(1, 2), v.reshape(B * 4, N, seg))
    attn = torch.bmm(q.reshape(B * 4, N, seg), context * mask).view(B, 4, N, seg)
    # the three CRPE groups cover heads 0-1, 2-4 and 5-7: concatenated they are head-major
    conv = torch.cat([t.flatten(1, 2) for t in crpe(v, height, width)], dim=-1)
    return torch.addcmul(attn.transpose(1, 2).reshape(B, N, 4 * seg),
                         q.transpose(1, 2).reshape(B, N, 4 * seg), conv)


@MODELS.register_module()
class GroupMixAttention(nn.Module):
    """Group-Mix Attention, the token mixer of GroupMixFormer blocks.

    ``qkv = Linear(x)``; the shared aggregator turns each of q, k, v into four segments
    (identity, 3x3, 5x5, 7x7 group proxies; two heads each) plus a non-attention branch;
    factorised attention ``q (softmax_N(k)^T v)`` scaled by ``(C // h) ** -0.5`` (the official
    scale over the full width, applied to this term only) plus the conv relative position term
    ``q * DWConv(v)``; heads (head-major) and the branch are concatenated and projected.

    Args:
        embed_dims (int): Channels C; a multiple of 10 (C/5 segments, 4C/5 over 8 heads).
        num_heads (int): Must be 8 (the official conv relative position split). Defaults to 8.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        qk_scale (float, optional): Overrides the scale ``(C // num_heads) ** -0.5``.
        proj_drop (float): Dropout after the output projection. Defaults to 0.
        norm_cfg (dict): Norm of the aggregator's proxy segments. Defaults to BN.

    Shapes:
        x: (B, H, W, C) -> (B, H, W, C). Any H, W >= 1.
    """

    def __init__(self, embed_dims, num_heads=8, qkv_bias=True, qk_scale=None, proj_drop=0.,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        check_gma_dims(embed_dims, num_heads)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = 4 * embed_dims // 5 // num_heads
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.aggregator = GroupAggregator(embed_dims, norm_cfg)
        self.crpe = ConvRelPosEnc(self.head_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def segment_weights(self, i):
        """Weight (3s, C) and bias (3s or None) of aggregator segment i's rows
        ``[q_i | k_i | v_i]`` of the qkv projection."""
        C, seg = self.embed_dims, self.aggregator.seg_dims
        w = self.qkv.weight.view(3, 5, seg, C)[:, i].reshape(3 * seg, C)
        b = self.qkv.bias.view(3, 5, seg)[:, i].reshape(3 * seg) \
            if self.qkv.bias is not None else None
        return w, b

    def forward(self, x):
        B, H, W, C = x.shape
        proxies, branch = self.aggregator(
            [F.linear(x, *self.segment_weights(i)) for i in range(5)])
        heads = group_mix_attention(proxies, self.crpe, self.scale, H, W)
        out = self.proj(torch.cat([heads, branch], dim=-1))
        return self.proj_drop(out).view(B, H, W, C)
