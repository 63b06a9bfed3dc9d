"""LaViT attention layers: vanilla attention that returns its logits, and less-attention.

Both attend from the ``N = H * W`` tokens of a stage to ``K = pool_size ** 2`` keys/values
taken from the tokens average-pooled to a fixed ``pool_size x pool_size`` grid (PVTv2 "linear
SRA": adaptive avg-pool -> 1x1 conv -> LayerNorm -> GELU). The attention logits therefore have
shape ``(B, heads, N, K)`` at any input resolution, which is what lets a less-attention layer
reuse the logits of the layer before it.

A ``VanillaAttention`` layer computes ``S = Q K^T / sqrt(d)`` (plus, optionally, a residual
from the previous stage); a ``LessAttention`` layer has no Q/K projection and computes
``S^l = Psi(Theta(S^{l-1}))``. Both return ``(output, S)`` so that the next layer can use ``S``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.registry import MODELS


def adaptive_avg_pool_tokens(x, hw, pool_size):
    """``F.adaptive_avg_pool2d`` of the (H, W) map of row-major tokens to ``pool_size x
    pool_size``: output ``(i, j)`` averages the window ``[floor(i H / P), ceil((i + 1) H / P))
    x [floor(j W / P), ceil((j + 1) W / P))``.

    Rows, then columns, each a product with a (P, side) window-averaging matrix built from the
    sizes with tensor ops, so a traced or exported program recomputes the windows for its
    input size (a pooling kernel would be frozen at the traced size).

    Shapes: x (..., H * W, C), hw (H, W) -> (..., P * P, C).
    """
    def windows(size):  # (P, size): 1 / |window| inside output i's window, else 0
        i = torch.arange(pool_size, device=x.device)[:, None]
        start = i * size // pool_size
        end = ((i + 1) * size + pool_size - 1) // pool_size
        pos = torch.arange(size, device=x.device)
        return (((pos >= start) & (pos < end)) / (end - start)).to(x.dtype)

    height, width = hw
    x = windows(height) @ x.unflatten(-2, (height, width)).flatten(-2)  # (..., P, W * C)
    x = windows(width) @ x.unflatten(-1, (width, -1))                     # (..., P, P, C)
    return x.flatten(-3, -2)


class PooledKeyValueTokens(nn.Module):
    """The key/value tokens of linear spatial-reduction attention (PVTv2-li).

    Args:
        embed_dims (int): Channels C.
        pool_size (int): Side of the key grid; ``K = pool_size ** 2`` keys.

    Shapes:
        x: (B, N, C) tokens of an H x W map (row-major), hw: (H, W) -> (B, K, C).
    """

    def __init__(self, embed_dims, pool_size=7):
        super().__init__()
        self.pool_size = pool_size
        self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=1)
        self.norm = nn.LayerNorm(embed_dims)
        self.act = nn.GELU()

    def forward(self, x, hw):
        pooled = adaptive_avg_pool_tokens(x, hw, self.pool_size)  # (B, K, C)
        # the 1x1 conv on the pooled tokens is a Linear over their channels
        x = F.linear(pooled, self.sr.weight.flatten(1), self.sr.bias)
        return self.act(self.norm(x))


def _check_tokens(x, hw, embed_dims):
    if x.dim() != 3 or x.shape[1] != hw[0] * hw[1] or x.shape[2] != embed_dims:
        raise ValueError(f'Expected tokens of shape (B, H*W={hw[0] * hw[1]}, C={embed_dims}) '
                         f'for hw={tuple(hw)}, got {tuple(x.shape)}.')


def _init_pooled_attention(module, embed_dims, num_heads, pool_size):
    """What VA and LA layers share: sizes and the pooled key/value tokens."""
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}.')
    module.embed_dims = embed_dims
    module.num_heads = num_heads
    module.num_keys = pool_size ** 2
    module.kv_tokens = PooledKeyValueTokens(embed_dims, pool_size)


@MODELS.register_module()
class VanillaAttention(nn.Module):
    """Multi-head linear-SRA attention that also returns its pre-softmax logits ("VA" layer).

    ``S = (x W_q)(kv W_k)^T / sqrt(d) [+ residual_logits]``, output ``proj(softmax(S) V)``.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads h; ``C`` must be divisible by ``h``.
        pool_size (int): Key grid side; ``K = pool_size ** 2`` keys.

    Shapes:
        x: (B, N, C) with N = H * W; hw: (H, W);
        residual_logits (optional): (B, h, N, K), added to the logits (LaViT's residual
        attention from the previous stage, see ``ResidualAttentionDownsample``).
        Returns ``(out (B, N, C), logits (B, h, N, K))``.
    """

    def __init__(self, embed_dims, num_heads, pool_size=7):
        super().__init__()
        _init_pooled_attention(self, embed_dims, num_heads, pool_size)
        self.scale = (embed_dims // num_heads) ** -0.5
        self.q = nn.Linear(embed_dims, embed_dims)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x, hw, residual_logits=None):
        _check_tokens(x, hw, self.embed_dims)
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)
        kv = self.kv(self.kv_tokens(x, hw)).reshape(B, self.num_keys, 2, h, C // h)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if residual_logits is not None:
            logits = logits + residual_logits
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), logits


@MODELS.register_module()
class LessAttention(nn.Module):
    """LaViT "less-attention" (LA) layer: no Q/K, logits transformed from the previous layer's.

    ``S^l = Psi(Theta(S^{l-1}))``, output ``proj(softmax(S^l) V)`` with V from the pooled
    key/value tokens of the current input.

    * ``theta``: ``Linear(K, K)`` over the key axis, shared by the heads.
    * ``psi``: a depth-wise 3x3 convolution over the query grid (the N queries seen as the
      H x W map, zero padding), one kernel per head shared by all K keys, no bias (a bias
      constant over the keys would cancel in the softmax). Its weight is stored as a
      ``Conv2d(h, h, 3, groups=h)`` weight of shape (h, 1, 3, 3).

    Both are initialised to the identity, so an untrained LA layer reuses the previous
    attention unchanged (``init_weights``).

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads h (must equal the heads of the layer producing the logits).
        pool_size (int): Key grid side; ``K = pool_size ** 2`` keys.

    Shapes:
        x: (B, N, C) with N = H * W; hw: (H, W); prev_logits: (B, h, N, K).
        Returns ``(out (B, N, C), logits (B, h, N, K))``.
    """

    def __init__(self, embed_dims, num_heads, pool_size=7):
        super().__init__()
        _init_pooled_attention(self, embed_dims, num_heads, pool_size)
        self.v = nn.Linear(embed_dims, embed_dims)
        self.theta = nn.Linear(self.num_keys, self.num_keys)
        self.psi = nn.Conv2d(num_heads, num_heads, 3, padding=1, groups=num_heads, bias=False)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """Set Theta and Psi to the identity map (also after the backbone's generic init)."""
        self.theta.weight.copy_(torch.eye(self.num_keys))
        self.theta.bias.zero_()
        self.psi.weight.zero_()
        self.psi.weight[:, :, 1, 1] = 1.0

    def transform_logits(self, logits, hw):
        """``Psi(Theta(logits))``: (B, h, N, K) -> (B, h, N, K)."""
        B, h, N, K = logits.shape
        if h != self.num_heads or K != self.num_keys or N != hw[0] * hw[1]:
            raise ValueError(f'prev_logits must be (B, {self.num_heads}, H*W={hw[0] * hw[1]}, '
                             f'{self.num_keys}), got {tuple(logits.shape)}.')
        logits = self.theta(logits)
        # Viewing (B, h, N, K) as (B, h, H, W*K), a 3x3 kernel dilated by K along the width
        # touches the same key at the neighbouring query columns: a per-head 3x3 conv over the
        # query grid applied to every key, without any transpose copy.
        logits = F.conv2d(logits.reshape(B, h, hw[0], hw[1] * K), self.psi.weight,
                          padding=(1, K), dilation=(1, K), groups=h)
        return logits.reshape(B, h, N, K)

    def forward(self, x, hw, prev_logits):
        _check_tokens(x, hw, self.embed_dims)
        B, N, C = x.shape
        h = self.num_heads
        logits = self.transform_logits(prev_logits, hw)
        v = self.v(self.kv_tokens(x, hw)).reshape(B, self.num_keys, h, C // h).transpose(1, 2)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), logits
