"""Manhattan self-attention (MaSA) of RMT and its relative-position package.

Three registered modules:

* :class:`ManhattanRelPos` builds, for a feature size (H, W), what all blocks of a stage share:
  the rotation tables ``cos``/``sin`` of the raster index's angles and the log-decay masks;
* :class:`ManhattanSelfAttention`: full MaSA, attention over all HW tokens with the 2-D Manhattan
  decay ``gamma_n ** (|dy| + |dx|)``;
* :class:`DecomposedManhattanSelfAttention`: attention inside every row (W pass), then inside
  every column (H pass), with the 1-D decays.

Numerics follow the official code (not the paper): the decay is an additive log-mask before the
softmax, Q and K are rotated by the flattened raster index ``y * W + x`` (the official
interleaved channel pairs, held as each head's two halves here: :func:`rotate_pairs`), only the
scores are scaled by ``d ** -0.5`` (the official code scales K; Q.(sK) = s(Q.K)), and a 5x5
depth-wise conv of V (LCE) is added to the attention output before ``out_proj``.

The attention itself is two module-level functions of rotated q, k and v,
:func:`manhattan_attention` and :func:`decomposed_manhattan_attention`, which the modules (and
the fused CPU-inference copies of ``mmvit_ext.models.fused``) call.

Example::

    rel_pos = ManhattanRelPos(embed_dims=64, num_heads=4)
    attn = DecomposedManhattanSelfAttention(embed_dims=64, num_heads=4)
    x = torch.randn(2, 14, 9, 64)                       # (B, H, W, C)
    y = attn(x, rel_pos(14, 9, decomposed=True, like=x))  # (B, H, W, C)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mmvit_ext.registry import MODELS
from .attention_ops import softmax_attention


def _rotate_halves(x, cos, sin):
    """``x * cos + swap_halves(x) * sin``, the swap read through views instead of copied."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    torch.mul(x[..., half:], sin[..., :half], out=out[..., :half])
    torch.mul(x[..., :half], sin[..., half:], out=out[..., half:])
    return out.addcmul_(x, cos)


class _PairRotation(torch.autograd.Function):
    """:func:`_rotate_halves` with its exact gradient: the transpose of a rotation is the
    rotation by the opposite angles, so backward is the same three kernels with ``-sin`` and
    nothing of ``x`` is kept for it (autograd's own graph of the product, the swap and the sum
    takes about twice as long)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate_halves(x, cos, sin)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate_halves(grad, cos, -sin), None, None


def rotate_pairs(x, cos, sin):
    """Rotate every channel pair of ``x`` by its angle ``a``: ``(x0, x1) -> (x0 cos a - x1 sin a,
    x1 cos a + x0 sin a)``, the official ``x * cos + rotate_every_two(x) * sin``.

    The official pairs are the interleaved channels ``(2j, 2j + 1)`` of a head; here a head's
    channels come in halves, pair ``j`` being ``(x[j], x[j + d/2])`` (the q/k projection rows
    are ordered so, see :meth:`_ManhattanAttentionBase.qk_weights`; the scores ``q . k`` do not
    depend on the channel order). The partner of every channel is then the other half, which
    the kernels read as a view, where swapping interleaved pairs is a strided copy.

    ``cos``: ``(cos a, cos a)``, ``sin``: ``(-sin a, sin a)`` per half (the tables of
    :class:`ManhattanRelPos`), broadcastable to ``x``, which has the output's shape. The tables
    are constants (no gradient flows to them). The result has ``x``'s dtype.
    """
    if cos.requires_grad or sin.requires_grad:
        raise ValueError('rotate_pairs: the cos/sin tables must not require grad; the rotation '
                         'is differentiated with respect to x only. Build them under '
                         'torch.no_grad() or pass .detach()ed tables.')
    return _PairRotation.apply(x, cos, sin)


@MODELS.register_module()
class ManhattanRelPos(nn.Module):
    """Relative-position package of one RMT stage: per-head decay, raster rotation tables.

    Per head ``n`` the decay rate is ``gamma_n = 1 - 2 ** -(initial_value + heads_range * n / N)``
    (``decay = log(gamma)`` is stored); the rotation frequencies of the ``d / 2`` channel pairs
    are ``10000 ** -(i / (d / 2 - 1))`` (end points 1 and 1e-4 included), each used twice.

    ``decay`` and ``angle`` are derived constants (non-persistent buffers). In eager mode the
    tables of the last (H, W, device, dtype) are cached, so a stage of blocks, and the next
    forward at the same size, reuse them; a new size replaces the cache (memory stays bounded for
    det/seg inputs). While compiling, exporting or tracing they are built from the (symbolic)
    sizes on every call: a cache lookup would compare the traced sizes with the last eager ones
    and bake that size into the program.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads N; head dim ``d = C / N`` must be even.
        initial_value (float): Decay exponent of head 0. Defaults to 2.
        heads_range (float): Spread of the exponents over the heads. Defaults to 4.

    Call ``rel_pos(H, W, decomposed, like)`` (``like``: a tensor giving device and dtype) returns
    ``((cos, sin), masks)``, all in ``like``'s dtype, with ``cos``, ``sin``: (H, W, 1, d), for
    the angle ``a_j = (y * W + x) * freq_j`` of pair ``j`` (channels ``j`` and ``j + d/2``, see
    :func:`rotate_pairs`; computed in fp32 as officially) ``cos a_j`` at both channels and
    ``-sin a_j``, ``sin a_j``, and ``masks``:

    * ``decomposed=True``: ``(mask_w, mask_h)`` with ``mask_w``: (1, N, W, W),
      ``mask_w[0, n, x, x'] = decay[n] * |x - x'|``, and ``mask_h``: (1, N, H, H),
      ``mask_h[0, n, y, y'] = decay[n] * |y - y'|``;
    * ``decomposed=False``: ``mask``: (1, N, HW, HW), ``decay[n] * (|dy| + |dx|)`` (row-major
      tokens).

    The masks are 4-D because that is what the fused CPU kernel of
    ``scaled_dot_product_attention`` takes (a 3-D mask sends it to the unfused math path).
    """

    def __init__(self, embed_dims, num_heads, initial_value=2., heads_range=4.):
        super().__init__()
        if embed_dims % num_heads or (embed_dims // num_heads) % 2:
            raise ValueError(f'ManhattanRelPos: embed_dims {embed_dims} must split into '
                             f'{num_heads} heads of even size.')
        self.num_heads = num_heads
        head_dims = embed_dims // num_heads
        exponents = initial_value + heads_range * torch.arange(num_heads, dtype=torch.float) \
            / num_heads
        self.register_buffer('decay', torch.log(1 - 2**(-exponents)), persistent=False)
        freqs = 1.0 / (10000**torch.linspace(0, 1, head_dims // 2))
        self.register_buffer('angle', freqs.repeat_interleave(2), persistent=False)
        self._cache_key = None
        self._cache = None

    def forward(self, height, width, decomposed, like):
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return self._build(height, width, decomposed, like.device, like.dtype)
        key = (height, width, bool(decomposed), like.device, like.dtype)
        if key != self._cache_key:
            self._cache = self._build(height, width, decomposed, like.device, like.dtype)
            self._cache_key = key
        return self._cache

    @torch.no_grad()
    def _build(self, height, width, decomposed, device, dtype):
        decay = self.decay.to(device)
        angle = self.angle.to(device)
        index = torch.arange(height * width, device=device, dtype=angle.dtype)
        phase = (index[:, None] * angle[0::2]).reshape(height, width, 1, -1)
        cos, sin = phase.cos(), phase.sin()
        rotation = (torch.cat((cos, cos), -1).to(dtype), torch.cat((-sin, sin), -1).to(dtype))
        ys = torch.arange(height, device=device, dtype=decay.dtype)
        xs = torch.arange(width, device=device, dtype=decay.dtype)
        dist_h = (ys[:, None] - ys[None]).abs()
        dist_w = (xs[:, None] - xs[None]).abs()
        if decomposed:
            mask_w = decay[:, None, None] * dist_w
            mask_h = decay[:, None, None] * dist_h
            masks = (mask_w[None].to(dtype), mask_h[None].to(dtype))
        else:
            dist = (dist_h[:, None, :, None] + dist_w[None, :, None, :]).reshape(
                height * width, height * width)
            masks = (decay[:, None, None] * dist)[None].to(dtype)
        return rotation, masks

    def extra_repr(self):
        return f'num_heads={self.num_heads}, head_dims={self.angle.numel()}'


def rotate_qk(qk, rotation):
    """Rotate q and k packed as (B, H, W, N, 2, d) by ``rotation = (cos, sin)`` (H, W, 1, d each)
    -> q, k as (B, H, W, N, d) views."""
    cos, sin = (t.unsqueeze(-2) for t in rotation)
    return rotate_pairs(qk, cos, sin).unbind(-2)


def manhattan_attention(q, k, v, mask, scale):
    """Full MaSA: ``softmax(q k^T * scale + mask) v`` over all H*W tokens.

    Shapes: q, k (B, H, W, N, d) rotated; v (B, H, W, C = N*d); mask (1, N, HW, HW)
    -> (B, H, W, C).
    """
    B, H, W, N, d = q.shape
    # (B, L, N, d) -> (B, N, L, d) are strided views; both attention kernels take them as they
    # are.
    q, k, v = (t.reshape(B, H * W, N, d).transpose(1, 2) for t in (q, k, v))
    out = softmax_attention(q, k, v, mask, scale)
    return out.transpose(1, 2).reshape(B, H, W, N * d)


def decomposed_manhattan_attention(q, k, v, mask_w, mask_h, scale):
    """Decomposed MaSA: attention inside every row (W pass, decay ``mask_w``) whose output is
    attended inside every column (H pass, decay ``mask_h``) with the same q and k.

    Shapes: q, k (B, H, W, N, d) rotated; v (B, H, W, C = N*d); mask_w (1, N, W, W); mask_h
    (1, N, H, H) -> (B, H, W, C).
    """
    B, H, W, N, d = q.shape
    # W pass: (B, H, W, N, d) viewed as (B*H, N, W, d) without a copy.
    q_w, k_w, v_w = (t.view(B, H, W, N, d).permute(0, 1, 3, 2, 4).flatten(0, 1)
                     for t in (q, k, v))
    v1 = softmax_attention(q_w, k_w, v_w, mask_w, scale)
    # H pass: (B*W, N, H, d), so that the (1, N, H, H) mask broadcasts over the columns (a
    # mask repeated over them would take ~200 MB at stage 1 of an 800x1333 image).
    q_h, k_h = (t.permute(0, 2, 3, 1, 4).reshape(B * W, N, H, d) for t in (q, k))
    v1 = v1.view(B, H, N, W, d).permute(0, 3, 2, 1, 4).reshape(B * W, N, H, d)
    out = softmax_attention(q_h, k_h, v1, mask_h, scale)
    return out.view(B, W, N, H, d).permute(0, 3, 1, 2, 4).reshape(B, H, W, N * d)


class _ManhattanAttentionBase(nn.Module):
    """Projections, rotation, LCE and output projection shared by the full and the decomposed
    MaSA; subclasses name the attention function."""

    decomposed = None

    def __init__(self, embed_dims, num_heads, lce_kernel_size=5):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'{type(self).__name__}: embed_dims {embed_dims} is not divisible '
                             f'by num_heads {num_heads}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = self.head_dims**-0.5
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        # LCE: local context enhancement, depth-wise conv on V, added to the attention output.
        self.lce = nn.Conv2d(embed_dims, embed_dims, lce_kernel_size,
                             padding=lce_kernel_size // 2, groups=embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)

    def qk_weights(self):
        """q_proj and k_proj as one Linear whose outputs are ordered (N, 2, d) per token: one
        GEMM and one rotation for both, and q, k stay viewable (not copied) into the W-pass and
        H-pass layouts. Each head's d channels come as the even ones, then the odd ones: the
        official rotation pairs (2j, 2j + 1) become (j, j + d/2), see :func:`rotate_pairs`."""
        N, d = self.num_heads, self.head_dims

        def halves(t):  # (C, ...) -> (N, d, ...), per head the even channels, then the odd
            return t.unflatten(0, (N, d // 2, 2)).transpose(1, 2).flatten(1, 2)

        weight = torch.stack((halves(self.q_proj.weight), halves(self.k_proj.weight)),
                             dim=1).flatten(0, 2)
        bias = torch.stack((halves(self.q_proj.bias), halves(self.k_proj.bias)),
                           dim=1).flatten()
        return weight, bias

    def attention(self, q, k, v, masks):
        raise NotImplementedError

    def forward(self, x, rel_pos):
        B, H, W, C = x.shape
        rotation, masks = rel_pos
        qk = F.linear(x, *self.qk_weights()).view(B, H, W, self.num_heads, 2, self.head_dims)
        q, k = rotate_qk(qk, rotation)
        v = self.v_proj(x)
        out = self.attention(q, k, v, masks)
        # the conv takes the channels-last memory of v as it is
        out = out + self.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.out_proj(out)

    def extra_repr(self):
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}'


@MODELS.register_module()
class ManhattanSelfAttention(_ManhattanAttentionBase):
    """Full Manhattan self-attention (RMT stage 4, and stage 3 of RMT-T).

    ``out_proj(softmax(q~ k~^T / sqrt(d) + decay_n * (|dy| + |dx|)) v + LCE(v))`` with q~, k~
    the rotated queries and keys, computed by :func:`softmax_attention` with the log-decay as
    additive mask.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads N.
        lce_kernel_size (int): Kernel of the depth-wise conv on V. Defaults to 5.

    Shapes:
        x: (B, H, W, C); rel_pos: ``ManhattanRelPos(...)(H, W, decomposed=False, like=x)``
        -> (B, H, W, C).
    """

    decomposed = False

    def attention(self, q, k, v, masks):
        return manhattan_attention(q, k, v, masks, self.scale)


@MODELS.register_module()
class DecomposedManhattanSelfAttention(_ManhattanAttentionBase):
    """Decomposed Manhattan self-attention (RMT stages 1-3): W pass, then H pass.

    W pass: inside every row, ``v1 = softmax(q~ k~^T / sqrt(d) + decay_n |dx|) v``;
    H pass: inside every column, with the same rotated q~, k~,
    ``o = softmax(q~ k~^T / sqrt(d) + decay_n |dy|) v1``; then ``out_proj(o + LCE(v))``.
    Cost per head ~ HW(H + W)d instead of (HW)^2 d.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads N.
        lce_kernel_size (int): Kernel of the depth-wise conv on V. Defaults to 5.

    Shapes:
        x: (B, H, W, C); rel_pos: ``ManhattanRelPos(...)(H, W, decomposed=True, like=x)``
        -> (B, H, W, C).
    """

    decomposed = True

    def attention(self, q, k, v, masks):
        return decomposed_manhattan_attention(q, k, v, *masks, self.scale)
