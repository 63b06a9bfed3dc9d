"""Plain reference of Pale-shaped self-attention (the design of configs/pale/README.md).

Full attention over all H*W tokens, with a materialised boolean mask that allows a pair of
tokens iff they share a row group (row-branch channels) or a column group (column-branch
channels), explicit scores and an explicit softmax. Groups follow the design's [choice] for
any size: pale size clamped to the side, ``n = ceil(side / s)`` groups, group = index modulo
``n``. No padding is needed here: padded keys of the parallel form are exactly the tokens
that do not exist.
"""
import copy
import math

import torch
import torch.nn as nn

from mmvit_ext.models.layers.pale_attention import PaleShapedAttention


def interlaced_group_mask(size, pale_size, device=None):
    """(size, size) bool: indices i, j share an interlaced group of the axis."""
    s = min(pale_size, size)
    n = math.ceil(size / s)
    idx = torch.arange(size, device=device)
    return (idx[:, None] % n) == (idx[None, :] % n)


def allowed_pairs(H, W, pale_size, device=None):
    """Token pairs each branch attends: same row group (row branch), same column group
    (column branch). Returns ``row``, ``column``: (H*W, H*W) bool each, tokens row-major."""
    ys = torch.arange(H, device=device).repeat_interleave(W)  # token -> row
    xs = torch.arange(W, device=device).repeat(H)  # token -> column
    return (interlaced_group_mask(H, pale_size[0], device)[ys][:, ys],
            interlaced_group_mask(W, pale_size[1], device)[xs][:, xs])


def branch_tokens(t, num_heads):
    """The row-branch (first C/2 channels) and column-branch heads of a map.

    Shapes: t (B, C, H, W) -> row, column: (B, num_heads / 2, H*W, C / num_heads) each.
    """
    B, C, H, W = t.shape
    t = t.flatten(2).transpose(1, 2).reshape(B, H * W, 2, num_heads // 2, C // num_heads)
    return t[:, :, 0].transpose(1, 2), t[:, :, 1].transpose(1, 2)


def masked_attention_weights(q, k, allowed):
    """Softmax of ``q k^T / sqrt(d)`` over the allowed keys, 0 elsewhere.

    Shapes: q (B, heads, Lq, d), k (B, heads, L, d), allowed (Lq, L) bool -> (B, heads, Lq, L).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float('-inf'))
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return weights / weights.sum(dim=-1, keepdim=True)


def masked_attention(q, k, v, allowed):
    """q, k, v: (B, heads, L, d); allowed: (L, L) bool -> (B, heads, L, d)."""
    return masked_attention_weights(q, k, allowed) @ v


class OraclePaleShapedAttention(nn.Module):
    """Same weights as a :class:`PaleShapedAttention`, plain masked full attention."""

    def __init__(self, attn):
        super().__init__()
        self.q, self.k, self.v, self.proj = attn.q, attn.k, attn.v, attn.proj
        self.num_heads, self.pale_size = attn.num_heads, attn.pale_size

    def forward(self, x):
        B, H, W, C = x.shape
        nchw = x.permute(0, 3, 1, 2)
        (q_r, q_c), (k_r, k_c), (v_r, v_c) = (branch_tokens(m(nchw), self.num_heads)
                                              for m in (self.q, self.k, self.v))
        row_allowed, col_allowed = allowed_pairs(H, W, self.pale_size, x.device)
        row = masked_attention(q_r, k_r, v_r, row_allowed)
        col = masked_attention(q_c, k_c, v_c, col_allowed)
        out = torch.cat([row, col], dim=1).transpose(1, 2).reshape(B, H, W, C)
        return self.proj(out)


def oracle_model(model):
    """Deep copy of ``model`` with every PaleShapedAttention replaced by the oracle."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, PaleShapedAttention):
            parent_name, _, attr = name.rpartition('.')
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, OraclePaleShapedAttention(module))
    if isinstance(model, PaleShapedAttention):
        return OraclePaleShapedAttention(model)
    return model
