"""Plain reference code for LaViT, written from the design in configs/lavit/README.md.

Every linear map of the design is materialised as an explicit dense matrix:

* Theta: the (K x K) matrix ``theta.weight`` plus bias, applied over the key axis;
* Psi: one dense (N x N) matrix per head over the query axis, built from the 3x3 kernel
  (entry [q, q'] = kernel[dy + 1, dx + 1] when query q' sits at offset (dy, dx) from q inside
  the map, else 0);
* the residual attention downsampling: a dense (N' x N) average-pooling matrix over the query
  grid (2x2 windows clipped at odd borders) and an explicit sum over the heads;
* the diagonality loss: a dense (K x N) matrix averaging the queries of each key cell
  (adaptive-pooling windows ``[floor(i H / P), ceil((i + 1) H / P))``), explicit softmax.

Dense (N x N) matrices grow with the fourth power of the input side: use small inputs.
"""
import copy
import math

import torch
import torch.nn as nn

from mmvit_ext.models.layers.less_attention import LessAttention, VanillaAttention
from mmvit_ext.models.layers.residual_attention_downsample import ResidualAttentionDownsample
from mmvit_ext.models.losses.diagonality_loss import DiagonalityLoss


def softmax(logits):
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def psi_matrices(kernel, hw):
    """Dense per-head query-mixing matrices of a (h, 1, 3, 3) kernel -> (h, N, N)."""
    H, W = hw
    h = kernel.shape[0]
    mats = kernel.new_zeros(h, H * W, H * W)
    for y in range(H):
        for x in range(W):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if 0 <= y + dy < H and 0 <= x + dx < W:
                        mats[:, y * W + x, (y + dy) * W + x + dx] = kernel[:, 0, dy + 1, dx + 1]
    return mats


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
        a = self.attn
        B, N, C = x.shape
        h, d = a.num_heads, C // a.num_heads
        kv_tokens = a.kv_tokens(x, hw)
        q = a.q(x).reshape(B, N, h, d)
        k, v = a.kv(kv_tokens).reshape(B, -1, 2, h, d).unbind(2)
        logits = torch.einsum('bnhd,bkhd->bhnk', q, k) / math.sqrt(d)
        if residual_logits is not None:
            logits = logits + residual_logits
        out = torch.einsum('bhnk,bkhd->bnhd', softmax(logits), v).reshape(B, N, C)
        return a.proj(out), logits


class OracleLessAttention(nn.Module):
    """``S^l = M_Psi (S^{l-1} W_Theta^T + b_Theta)`` with dense matrices; shares weights."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def transform_logits(self, logits, hw):
        a = self.attn
        logits = torch.einsum('bhnk,jk->bhnj', logits, a.theta.weight) + a.theta.bias
        return torch.einsum('hnm,bhmk->bhnk', psi_matrices(a.psi.weight, hw), logits)

    def forward(self, x, hw, prev_logits):
        a = self.attn
        B, N, C = x.shape
        h, d = a.num_heads, C // a.num_heads
        logits = self.transform_logits(prev_logits, hw)
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
