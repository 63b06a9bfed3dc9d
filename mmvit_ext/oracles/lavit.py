"""Plain reference code for LaViT, written from the design in configs/lavit/README.md.

The linear maps of the design are written out explicitly:

* Theta: the (K x K) matrix ``theta.weight`` plus bias, applied over the key axis;
* Psi: per head, each query's new logits are the sum of its 3x3 neighbours' logits, each
  weighted by the kernel entry of its offset (neighbours outside the map count as 0);
* the residual attention downsampling: a dense (N' x N) average-pooling matrix over the query
  grid (2x2 windows clipped at odd borders) and an explicit sum over the heads;
* the diagonality loss: a dense (K x N) matrix averaging the queries of each key cell
  (adaptive-pooling windows ``[floor(i H / P), ceil((i + 1) H / P))``), explicit softmax.

The dense (N' x N) pooling matrix grows with the fourth power of the input side: use small
inputs for the downsampling.
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.models.layers.less_attention import LessAttention, VanillaAttention
from mmvit_ext.models.layers.residual_attention_downsample import ResidualAttentionDownsample
from mmvit_ext.models.losses.diagonality_loss import DiagonalityLoss


def softmax(logits):
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def psi(kernel, logits, hw):
    """Psi: per head, the kernel-weighted sum of the logits of each query's 3x3 neighbours.

    Shapes: kernel (h, 1, 3, 3), logits (B, h, N, K) with N = H * W -> (B, h, N, K).
    """
    H, W = hw
    B, h, N, K = logits.shape
    # a ring of zero queries around the (H, W) query grid: the missing neighbours
    padded = F.pad(logits.reshape(B, h, H, W, K), (0, 0, 1, 1, 1, 1))
    out = torch.zeros_like(padded[:, :, 1:H + 1, 1:W + 1])
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            weight = kernel[:, 0, dy + 1, dx + 1].view(1, h, 1, 1, 1)
            out = out + weight * padded[:, :, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
    return out.reshape(B, h, N, K)


def vanilla_logits_and_values(attn, x, hw, residual_logits=None):
    """Explicit logits ``Q K^T / sqrt(d)`` (+ residual) of a VanillaAttention and its values.

    Shapes: x (B, N, C), residual_logits (B, h, N, K) -> logits (B, h, N, K), v (B, K, h, d).
    """
    B, N, C = x.shape
    h, d = attn.num_heads, C // attn.num_heads
    q = attn.q(x).reshape(B, N, h, d)
    k, v = attn.kv(attn.kv_tokens(x, hw)).reshape(B, -1, 2, h, d).unbind(2)
    logits = torch.einsum('bnhd,bkhd->bhnk', q, k) / math.sqrt(d)
    if residual_logits is not None:
        logits = logits + residual_logits
    return logits, v


def less_attention_logits(attn, prev_logits, hw):
    """``S^l = Psi(S^{l-1} W_Theta^T + b_Theta)`` of a LessAttention: (B, h, N, K) -> same."""
    logits = torch.einsum('bhnk,jk->bhnj', prev_logits, attn.theta.weight) + attn.theta.bias
    return psi(attn.psi.weight, logits, hw)


def pool2_matrix(hw, dtype):
    """Dense (ceil(H/2) * ceil(W/2), H * W) 2x2 average pooling, windows clipped at borders."""
    H, W = hw
    Ho, Wo = math.ceil(H / 2), math.ceil(W / 2)
    mat = torch.zeros(Ho * Wo, H * W, dtype=dtype)
    for i in range(Ho):
        for j in range(Wo):
            cells = [(y, x) for y in (2 * i, 2 * i + 1) for x in (2 * j, 2 * j + 1)
                     if y < H and x < W]
            for y, x in cells:
                mat[i * Wo + j, y * W + x] = 1.0 / len(cells)
    return mat


def cell_matrix(hw, pool_size, dtype):
    """Dense (P * P, H * W) matrix averaging the queries of each key cell."""
    H, W = hw
    mat = torch.zeros(pool_size ** 2, H * W, dtype=dtype)
    for i in range(pool_size):
        ys = range(math.floor(i * H / pool_size), math.ceil((i + 1) * H / pool_size))
        for j in range(pool_size):
            xs = range(math.floor(j * W / pool_size), math.ceil((j + 1) * W / pool_size))
            for y in ys:
                for x in xs:
                    mat[i * pool_size + j, y * W + x] = 1.0 / (len(ys) * len(xs))
    return mat


def oracle_diagonality_loss(attn, hw, pool_size=7):
    """Spec section 3 for one layer: attn (B, h, N, K) probabilities -> scalar."""
    pooled = torch.einsum('cn,bhnk->bhck', cell_matrix(hw, pool_size, attn.dtype), attn)
    K = pooled.shape[-1]
    sym = (pooled - pooled.transpose(-2, -1)).abs().sum(dim=(-2, -1)) / (K * K)
    diag = sum(1 - pooled[..., i, i] for i in range(K)) / K
    return sym.mean() + diag.mean()


class OracleVanillaAttention(nn.Module):
    """Explicit Q K^T / sqrt(d) (+ residual), explicit softmax; shares ``attn``'s weights."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x, hw, residual_logits=None):
        B, N, C = x.shape
        logits, v = vanilla_logits_and_values(self.attn, x, hw, residual_logits)
        out = torch.einsum('bhnk,bkhd->bnhd', softmax(logits), v).reshape(B, N, C)
        return self.attn.proj(out), logits


class OracleLessAttention(nn.Module):
    """``S^l = Psi(S^{l-1} W_Theta^T + b_Theta)`` written out; shares ``attn``'s weights."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x, hw, prev_logits):
        a = self.attn
        B, N, C = x.shape
        h, d = a.num_heads, C // a.num_heads
        logits = less_attention_logits(a, prev_logits, hw)
        v = a.v(a.kv_tokens(x, hw)).reshape(B, -1, h, d)
        out = torch.einsum('bhnk,bkhd->bnhd', softmax(logits), v).reshape(B, N, C)
        return a.proj(out), logits


class OracleResidualAttentionDownsample(nn.Module):
    """Dense pooling matrix over the queries, explicit sum over the heads; shares weights."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, logits, hw):
        mix = self.module.head_mix
        pooled = torch.einsum('mn,bhnk->bhmk', pool2_matrix(hw, logits.dtype), logits)
        return torch.stack([sum(mix.weight[o, i] * pooled[:, i] for i in range(pooled.shape[1]))
                            + mix.bias[o] for o in range(mix.out_features)], dim=1)


class OracleDiagonalityLoss(nn.Module):

    def __init__(self, loss):
        super().__init__()
        self.loss_weight, self.pool_size, self.loss_name = (loss.loss_weight, loss.pool_size,
                                                            loss.loss_name)

    def forward(self, attn_logits, hws):
        losses = [oracle_diagonality_loss(softmax(s), hw, self.pool_size)
                  for s, hw in zip(attn_logits, hws)]
        return self.loss_weight * sum(losses) / len(losses)


_ORACLES = {
    VanillaAttention: OracleVanillaAttention,
    LessAttention: OracleLessAttention,
    ResidualAttentionDownsample: OracleResidualAttentionDownsample,
    DiagonalityLoss: OracleDiagonalityLoss,
}


def oracle_model(model):
    """Deep copy of a LaViT backbone (or a model with ``.backbone``) with every attention
    layer, the residual attention downsampling and the diagonality loss replaced by the plain
    code above, sharing the copied weights."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _ORACLES:
                setattr(parent, name, _ORACLES[type(child)](child))
    return model
