"""Group-Mix Attention (GMA) of GroupMixFormer (Ge et al., arXiv 2311.15157).

Numerically the official ``EfficientAtt`` (see ``../shared/specs/groupmixformer.md`` section
1.5), computed channels-last with fused convolutions:

* the aggregator's depth-wise convs (identity, 3x3, 5x5, 7x7 proxies and the 3x3 conv of the
  non-attention branch, for q, k and v at once) run as ONE depth-wise 7x7 conv over the 3C
  ``qkv`` channels, the smaller kernels zero-padded and the identity segment a delta kernel;
* the three proxy point-wise convs (shared by q, k, v) run as one batched matmul on strided
  views; the four proxy BNs are one BN over the 4C/5 proxy channels whose batch statistics
  pool q, k and v exactly as the official 3B-batch does;
* the conv relative position encoding's 3x3/5x5/7x7 head groups run as one depth-wise 7x7 conv.

Parameters keep the official shapes (the fused kernels are assembled at every forward, which
costs nothing next to the convolutions), so converting a checkpoint is renaming plus the
concatenation of the four proxy BNs.
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
MAX_KERNEL = 7


def pad_kernel(weight, size=MAX_KERNEL):
    """Zero-pad a centred ``(C, 1, k, k)`` kernel to ``(C, 1, size, size)``."""
    pad = (size - weight.shape[-1]) // 2
    return F.pad(weight, (pad, pad, pad, pad))


def check_gma_dims(embed_dims, num_heads):
    """Raise a clear error for widths the official channel split cannot handle."""
    if num_heads != sum(CRPE_HEAD_SPLIT.values()):
        raise ValueError(f'GroupMixAttention needs num_heads=8 (the conv relative position '
                         f'encoding splits heads 2/3/3 over kernels 3/5/7), got {num_heads}.')
    if embed_dims % 5 or (4 * embed_dims // 5) % num_heads:
        raise ValueError(f'GroupMixAttention embed_dims must be divisible by 5 with 4/5 of it '
                         f'divisible by num_heads={num_heads} (a multiple of 10 for 8 heads), '
                         f'got {embed_dims}.')


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
        qkv: (B, H, W, 3C), channels ``[q | k | v]`` -> proxies (B, H, W, 3, 4s) (q, k, v of
        the segments 0-3, channels segment-major) and branch (B, H, W, s).
    """

    def __init__(self, embed_dims, norm_cfg=dict(type='BN')):
        super().__init__()
        self.embed_dims = embed_dims
        seg = self.seg_dims = embed_dims // 5
        # Weight holders in the official shapes; forward fuses them.
        self.local_dw = nn.ModuleList(
            nn.Conv2d(seg, seg, k, padding=k // 2, groups=seg, bias=False) for k in PROXY_KERNELS)
        self.local_pw = nn.ModuleList(
            nn.Conv2d(seg, seg, 1, bias=False) for _ in PROXY_KERNELS)
        self.norm = build_norm_layer(norm_cfg, 4 * seg)[1]
        self.branch_dw = nn.Conv2d(3 * seg, 3 * seg, 3, padding=1, groups=3 * seg, bias=False)
        self.branch_pw = nn.Conv2d(3 * seg, seg, 1, bias=False)
        self.branch_norm = nn.LayerNorm(seg, eps=1e-5)

    def fused_dw_kernel(self):
        """The (3C, 1, 7, 7) depth-wise kernel of all five segments of q, k and v."""
        seg = self.seg_dims
        weight = self.branch_dw.weight
        delta = weight.new_zeros(seg, 1, MAX_KERNEL, MAX_KERNEL)
        delta[:, :, MAX_KERNEL // 2, MAX_KERNEL // 2] = 1
        shared = [delta] + [pad_kernel(conv.weight) for conv in self.local_dw]
        return torch.cat([kernel for t in range(3) for kernel in
                          shared + [pad_kernel(weight[t * seg:(t + 1) * seg])]])

    def forward(self, qkv):
        B, H, W, _ = qkv.shape
        seg = self.seg_dims
        # A contiguous (B, H, W, 3C) permuted to NCHW is channels-last memory: no copy.
        mixed = F.conv2d(qkv.permute(0, 3, 1, 2), self.fused_dw_kernel(), padding=MAX_KERNEL // 2,
                         groups=3 * self.embed_dims).permute(0, 2, 3, 1)
        mixed = mixed.reshape(B, H, W, 3, 5, seg)
        # Point-wise convs of the proxy segments 1-3 (shared by q, k, v): one batched matmul
        # over the segments, on strided views of the conv output.
        segments = mixed.view(-1, 5, seg)
        local = torch.bmm(segments[:, 1:4].transpose(0, 1),
                          torch.stack([conv.weight.flatten(1).t() for conv in self.local_pw]))
        proxies = torch.cat([segments[:, :1], local.transpose(0, 1)], dim=1)
        # One BN over (B*H*W*3) samples: the statistics pool q, k and v like the official
        # (3B, s, H, W) batch.
        proxies = F.hardswish(self.norm(proxies.view(-1, 4 * seg, 1, 1)))
        proxies = proxies.view(B, H, W, 3, 4 * seg)
        branch = F.linear(mixed[..., 4, :].reshape(B, H, W, 3 * seg),
                          self.branch_pw.weight.flatten(1))
        branch = F.hardswish(self.branch_norm(branch))
        return proxies, branch


class ConvRelPosEnc(nn.Module):
    """Conv relative position term ``q * DWConv(v)``: heads 0-1 get a 3x3, heads 2-4 a 5x5 and
    heads 5-7 a 7x7 depth-wise conv (with bias), computed as one 7x7 depth-wise conv.

    Args:
        head_dims (int): Channels d per head.

    Shapes:
        q, v: (B, N, h*d) with N = H*W, channels head-major; H, W -> (B, N, h*d).
    """

    def __init__(self, head_dims):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(heads * head_dims, heads * head_dims, k, padding=k // 2,
                      groups=heads * head_dims) for k, heads in CRPE_HEAD_SPLIT.items())

    def forward(self, q, v, H, W):
        B, N, C = v.shape
        weight = torch.cat([pad_kernel(conv.weight) for conv in self.convs])
        bias = torch.cat([conv.bias for conv in self.convs])
        conv_v = F.conv2d(v.reshape(B, H, W, C).permute(0, 3, 1, 2), weight, bias,
                          padding=MAX_KERNEL // 2, groups=C)
        return q * conv_v.permute(0, 2, 3, 1).reshape(B, N, C)


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

    def forward(self, x):
        B, H, W, _ = x.shape
        N, hd = H * W, self.num_heads * self.head_dims
        proxies, branch = self.aggregator(self.qkv(x))
        q, k, v = (t.reshape(B, N, hd) for t in proxies.unbind(3))      # views, head-major
        k = k.softmax(dim=1)
        # Per head on strided channel slices (no transposed copies of q, k, v); the official
        # scale multiplies the small (d x d) context instead of the (N x d) product.
        heads = [slice(i * self.head_dims, (i + 1) * self.head_dims)
                 for i in range(self.num_heads)]
        attn = torch.cat([
            torch.bmm(q[..., i], torch.bmm(k[..., i].transpose(1, 2), v[..., i]) * self.scale)
            for i in heads], dim=-1)
        out = self.crpe(q, v, H, W) + attn
        out = self.proj(torch.cat([out.view(B, H, W, hd), branch], dim=-1))
        return self.proj_drop(out)
