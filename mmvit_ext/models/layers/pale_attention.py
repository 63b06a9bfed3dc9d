"""Pale-shaped self-attention (PS-Attention) of the Pale Transformer (Wu et al., AAAI 2022)."""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.registry import MODELS
from .attention_ops import softmax_attention


def pale_pair(value, name):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f'{name} must be a positive int or a pair (rows, columns) of positive '
                         f'ints, got {value}.')
    return value


def pale_groups(side, pale_size):
    """Grouping of one axis of length ``side``: ``(s, n)`` with the pale size ``s`` clamped to
    the side and ``n = ceil(side / s)`` interlaced groups; group ``g`` holds the indices
    ``{g, g + n, g + 2n, ...} < side`` (indices equal modulo ``n``)."""
    s = min(pale_size, side)
    return s, math.ceil(side / s)


def separable_conv_bn(dims):
    """Depth-wise 3x3 (bias) -> BatchNorm -> point-wise 1x1 (bias), on NCHW maps."""
    return nn.Sequential(OrderedDict(
        dw=nn.Conv2d(dims, dims, 3, padding=1, groups=dims),
        bn=nn.BatchNorm2d(dims),
        pw=nn.Conv2d(dims, dims, 1)))


@MODELS.register_module()
class PaleShapedAttention(nn.Module):
    """Pale-shaped self-attention, in the paper's parallel form.

    ``q``, ``k`` and ``v`` each come from a separable convolution (depth-wise 3x3 -> BN ->
    point-wise 1x1). The first ``C/2`` channels (``num_heads/2`` heads) form the *row branch*,
    the last ``C/2`` channels the *column branch*. With ``n_r = ceil(H / s_r)`` the row branch
    splits the rows into ``n_r`` interlaced groups, group ``g`` = rows ``{y : y mod n_r == g}``,
    and every token attends to all tokens of its group (``s_r`` rows, full width); the column
    branch does the same with ``n_c = ceil(W / s_c)`` groups of interlaced columns. Both halves
    are concatenated and projected by ``Linear(C, C)``.

    Sizes (any ``H``, ``W``):

    * ``s_r`` larger than ``H`` is clamped to ``H`` (one group: global along the columns of the
      row branch); likewise ``s_c`` and ``W``.
    * If ``H`` is not a multiple of ``s_r``, ``q``/``k``/``v`` of the row branch are zero-padded
      at the bottom to ``H' = n_r * s_r`` rows; the padded keys are masked out (they take no
      part in any softmax) and the padded queries' outputs are dropped. The groups are
      therefore residues modulo ``n_r = H' / s_r`` of the *padded* size; each group has at
      least one real row. The convolutions see the unpadded map. Columns likewise.

    The groups are gathered and scattered with reshapes and permutes only: writing a row index
    as ``y = j * n_r + g`` (``j < s_r``), the padded height factors as ``(s_r, n_r)`` and ``g``
    moves next to the batch. Attention itself runs through :func:`softmax_attention`.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads h, even (h/2 per branch); head dim ``C / h``.
        pale_size (int | tuple[int, int]): ``(s_r, s_c)``, rows and columns per pale.
        attn_drop (float): Dropout on the attention weights (training only).
        proj_drop (float): Dropout after the output projection.

    Shapes:
        x: (B, H, W, C) channels-last -> (B, H, W, C).
    """

    def __init__(self, embed_dims, num_heads, pale_size=7, attn_drop=0., proj_drop=0.):
        super().__init__()
        if num_heads < 2 or num_heads % 2 or embed_dims % num_heads:
            raise ValueError(f'PaleShapedAttention needs an even num_heads that divides '
                             f'embed_dims (half the heads per branch); got embed_dims='
                             f'{embed_dims}, num_heads={num_heads}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.pale_size = pale_pair(pale_size, 'pale_size')
        self.attn_drop = attn_drop
        self.q = separable_conv_bn(embed_dims)
        self.k = separable_conv_bn(embed_dims)
        self.v = separable_conv_bn(embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self):
        return f'num_heads={self.num_heads}, pale_size={self.pale_size}'

    def qkv(self, x):
        """(B, H, W, C) -> three (B, H, W, C) maps (channels-last views of NCHW convs)."""
        x = x.permute(0, 3, 1, 2)
        return tuple(branch(x).permute(0, 2, 3, 1) for branch in (self.q, self.k, self.v))

    def forward(self, x):
        if x.dim() != 4 or x.shape[-1] != self.embed_dims:
            raise ValueError(f'PaleShapedAttention expects a channels-last (B, H, W, '
                             f'{self.embed_dims}) map, got shape {tuple(x.shape)}.')
        q, k, v = self.qkv(x)
        half = self.embed_dims // 2
        row = self._row_attention(q[..., :half], k[..., :half], v[..., :half])
        # The column branch is the row branch on the transposed map.
        col = self._row_attention(*(t[..., half:].transpose(1, 2) for t in (q, k, v)),
                                  pale_size=self.pale_size[1]).transpose(1, 2)
        return self.proj_drop(self.proj(torch.cat([row, col], dim=-1)))

    def _row_attention(self, q, k, v, pale_size=None):
        """Attention inside interlaced row groups. q, k, v: (B, H, W, C/2) -> (B, H, W, C/2)."""
        B, H, W, _ = q.shape
        heads, d = self.num_heads // 2, self.head_dims
        s, n = pale_groups(H, self.pale_size[0] if pale_size is None else pale_size)
        padded = s * n
        mask = None
        if padded != H:
            q, k, v = (F.pad(t, (0, 0, 0, 0, 0, padded - H)) for t in (q, k, v))
            # Key (j, x) of group g is row j * n + g: real iff that row is < H.
            rows = torch.arange(padded, device=q.device).view(s, n).t()  # (n, s): group, j
            mask = (rows < H)[:, :, None].expand(n, s, W).reshape(1, n, 1, 1, s * W)
            mask = mask.expand(B, n, 1, 1, s * W).reshape(B * n, 1, 1, s * W)

        def gather(t):  # (B, s*n, W, C/2) -> (B*n, heads, s*W, d)
            t = t.reshape(B, s, n, W, heads, d).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(B * n, heads, s * W, d)

        out = softmax_attention(gather(q), gather(k), gather(v), mask,
                                dropout_p=self.attn_drop if self.training else 0.)
        # Scatter: (B*n, heads, s*W, d) -> (B, s, n, W, heads, d) -> (B, H', W, C/2).
        out = out.view(B, n, heads, s, W, d).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(B, padded, W, heads * d)[:, :H]
