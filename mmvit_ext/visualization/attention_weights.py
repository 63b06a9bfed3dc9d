"""The attention weights of every attention type of this package, by the plain formula.

The production modules never form their weights (they run fused
``scaled_dot_product_attention`` or factorised products); these functions compute them
explicitly, with dense scores and an explicit softmax, from a module's input and its own
parameters, independently of the module's fast code path. Each family's ``<family>_weights``
(named in its registration, ``AttentionRecording.weights``) computes them for the inputs that
:mod:`.recorder` records during a normal forward.

Shape conventions: ``B`` batch, tokens row-major (``L = H * W``); ``query=(y, x)`` restricts
the queries to one token (``Lq = 1``), otherwise ``Lq = L``. All functions expect eval-mode
modules (their norms use running statistics).
"""
import math

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


def _query_rows(t, query):
    """Tokens ``t`` (B, H, W, ...) -> (B, Lq, ...) with ``Lq = 1`` for ``query=(y, x)``."""
    if query is None:
        return t.flatten(1, 2)
    y, x = query
    return t[:, y, x][:, None]


def manhattan_distance(hw, device=None):
    """(L, L) Manhattan distances ``|dy| + |dx|`` between the tokens of an (H, W) grid."""
    H, W = hw
    ys, xs = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device),
                            indexing='ij')
    grid = torch.stack([ys.flatten(), xs.flatten()], dim=-1)
    return (grid[:, None] - grid[None]).abs().sum(-1)


# -- RMT: Manhattan self-attention --------------------------------------------------------------
def rmt_rotated_qk(attn, rel_pos, x):
    """Rotated queries and keys of an RMT attention module for its input ``x`` (B, H, W, C).

    ``q = x W_q^T + b_q`` (same for k) per head, each channel pair rotated by the angle
    ``(y * W + x) * freq_j`` of its raster index (``rel_pos``: the stage's
    ``ManhattanRelPos``). Returns q, k: (B, H, W, N, d).
    """
    B, H, W, _ = x.shape
    N, d = attn.num_heads, attn.head_dims
    q, k = (F.linear(x, p.weight, p.bias).reshape(B, H, W, N, d)
            for p in (attn.q_proj, attn.k_proj))
    freqs = rel_pos.angle[0::2].to(x)                                   # (d / 2)
    index = torch.arange(H * W, device=x.device, dtype=x.dtype).reshape(H, W, 1, 1)
    cos, sin = torch.cos(index * freqs), torch.sin(index * freqs)       # (H, W, 1, d / 2)

    def rotate(t):
        even, odd = t[..., 0::2], t[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)

    return rotate(q), rotate(k)


def manhattan_prior(decay, hw, query):
    """RMT's spatial prior around ``query``: ``gamma_n ** (|dy| + |dx|)`` per head.

    Args:
        decay (Tensor): (N,) ``log(gamma_n)`` (``ManhattanRelPos.decay``).
        hw (tuple): (H, W). query (tuple): (y, x).

    Returns:
        Tensor: (N, H, W), 1 at the query.
    """
    H, W = hw
    dist = manhattan_distance(hw, decay.device)[query[0] * W + query[1]].view(H, W)
    return torch.exp(decay[:, None, None] * dist)


def manhattan_attention_weights(q, k, decay, scale, query=None, with_prior=True):
    """Full MaSA weights ``softmax(q k^T * scale + log(gamma_n) * (|dy| + |dx|))``.

    ``with_prior=False`` drops the decay: plain softmax attention of the same q and k (the
    baseline the prior is compared with).

    Args:
        q, k (Tensor): (B, H, W, N, d), rotated (:func:`rmt_rotated_qk`).
        decay (Tensor): (N,) log-decays. scale (float): ``d ** -0.5``.

    Returns:
        Tensor: (B, N, Lq, L), rows sum to 1.
    """
    B, H, W, N, _ = q.shape
    scores = torch.einsum('bqnd,bknd->bnqk', _query_rows(q, query), k.flatten(1, 2)) * scale
    if with_prior:
        dist = manhattan_distance((H, W), q.device).to(q.dtype)
        if query is not None:
            dist = dist[query[0] * W + query[1]][None]
        scores = scores + decay.to(q.dtype)[:, None, None] * dist
    return scores.softmax(dim=-1)


def decomposed_manhattan_attention_weights(q, k, decay, scale):
    """Weights of the two passes of decomposed MaSA.

    W pass, inside every row: ``softmax(q k^T * scale + log(gamma_n) |dx|)``; H pass, inside
    every column, with the same q and k: ``softmax(q k^T * scale + log(gamma_n) |dy|)``.

    Args:
        q, k (Tensor): (B, H, W, N, d), rotated. decay (Tensor): (N,). scale (float).

    Returns:
        tuple[Tensor]: ``w_pass`` (B, H, N, W, W) (row y: query column x over key column x')
        and ``h_pass`` (B, W, N, H, H) (column x: query row y over key row y').
    """
    _, H, W, _, _ = q.shape
    decay = decay.to(q.dtype)[:, None, None]
    dist_w = (torch.arange(W, device=q.device)[:, None] - torch.arange(W, device=q.device)).abs()
    dist_h = (torch.arange(H, device=q.device)[:, None] - torch.arange(H, device=q.device)).abs()
    w_pass = torch.einsum('byqnd,byknd->bynqk', q, k) * scale + decay * dist_w.to(q.dtype)
    h_pass = torch.einsum('bqxnd,bkxnd->bxnqk', q, k) * scale + decay * dist_h.to(q.dtype)
    return w_pass.softmax(dim=-1), h_pass.softmax(dim=-1)


def decomposed_effective_weights(w_pass, h_pass, query):
    """Weight of every token in the output of ``query`` after both passes.

    The H pass of query (y, x) mixes the W-pass outputs of column x, each of which mixes its
    row: token (y', x') gets ``h_pass[x][y, y'] * w_pass[y'][x, x']``.

    Returns:
        Tensor: (B, N, H, W), sums to 1 per head.
    """
    y, x = query
    h_row = h_pass[:, x, :, y]                                   # (B, N, H): over y'
    w_rows = w_pass[:, :, :, x]                                  # (B, H, N, W): row y', over x'
    return h_row[..., None] * w_rows.transpose(1, 2)


def rmt_weights(record, query=None):
    """The weights of an RMT record (``AttentionRecord.weights``): ``plain`` (B, N, Lq, L), the
    same q, k without the decay; ``rmt_full``: ``attention`` (B, N, Lq, L) MaSA;
    ``rmt_decomposed``: ``w_pass`` (B, H, N, W, W), ``h_pass`` (B, W, N, H, H) and, with
    ``query``, ``effective`` (B, N, H, W); with ``query`` also ``prior`` (N, H, W)."""
    m = record.module
    q, k = rmt_rotated_qk(m, record.rel_pos, record.inputs['x'])
    decay = record.rel_pos.decay.to(q)
    out = dict(plain=manhattan_attention_weights(q, k, decay, m.scale, query, with_prior=False))
    if query is not None:
        out['prior'] = manhattan_prior(decay, record.hw, query)
    if record.kind == 'rmt_full':
        out['attention'] = manhattan_attention_weights(q, k, decay, m.scale, query)
    else:
        out['w_pass'], out['h_pass'] = decomposed_manhattan_attention_weights(q, k, decay, m.scale)
        if query is not None:
            out['effective'] = decomposed_effective_weights(out['w_pass'], out['h_pass'], query)
    return out


# -- Pale-shaped attention ----------------------------------------------------------------------
def interlaced_group_mask(side, pale_size, device=None):
    """(side, side) bool: indices in the same interlaced group, i.e. equal modulo
    ``ceil(side / min(pale_size, side))``."""
    groups = math.ceil(side / min(pale_size, side))
    index = torch.arange(side, device=device)
    return index[:, None] % groups == index[None] % groups


def pale_qk(attn, x):
    """q and k maps (B, H, W, C) of a PaleShapedAttention for its input ``x`` (B, H, W, C)."""
    nchw = x.permute(0, 3, 1, 2)
    return tuple(branch(nchw).permute(0, 2, 3, 1) for branch in (attn.q, attn.k))


def pale_attention_weights(q, k, num_heads, pale_size, query=None):
    """PS-Attention weights as masked full attention.

    The first C/2 channels (``num_heads / 2`` heads) attend inside the query's interlaced row
    group, the last C/2 inside its column group: ``softmax(q k^T / sqrt(d))`` over the allowed
    tokens, 0 elsewhere.

    Args:
        q, k (Tensor): (B, H, W, C) (:func:`pale_qk`). num_heads (int): all heads.
        pale_size (tuple): (s_r, s_c).

    Returns:
        tuple[Tensor]: ``row``, ``column``: (B, num_heads / 2, Lq, L) each, rows sum to 1.
    """
    B, H, W, C = q.shape
    heads, d = num_heads // 2, C // num_heads
    ys = torch.arange(H, device=q.device).repeat_interleave(W)
    xs = torch.arange(W, device=q.device).repeat(H)
    allowed = [interlaced_group_mask(H, pale_size[0], q.device)[ys][:, ys],
               interlaced_group_mask(W, pale_size[1], q.device)[xs][:, xs]]
    if query is not None:
        allowed = [a[query[0] * W + query[1]][None] for a in allowed]
    q_rows = _query_rows(q, query).unflatten(-1, (2, heads, d))
    k_all = k.flatten(1, 2).unflatten(-1, (2, heads, d))
    out = []
    for branch, mask in enumerate(allowed):
        scores = torch.einsum('bqhd,bkhd->bhqk', q_rows[:, :, branch], k_all[:, :, branch])
        scores = (scores / math.sqrt(d)).masked_fill(~mask, float('-inf'))
        out.append(scores.softmax(dim=-1))
    return tuple(out)


def pale_weights(record, query=None):
    """The weights of a Pale record: ``row``, ``column`` (B, h / 2, Lq, L)."""
    m = record.module
    q, k = pale_qk(m, record.inputs['x'])
    row, column = pale_attention_weights(q, k, m.num_heads, m.pale_size, query)
    return dict(row=row, column=column)


# -- Group-Mix attention ------------------------------------------------------------------------
def group_mix_proxies(attn, x):
    """q, k and v of the four attention segments of a GroupMixAttention, plain formula.

    ``[q | k | v] = x W^T + b`` (each C wide, five segments of ``s = C / 5``); segment 0 is the
    tokens themselves, segments 1-3 the group proxies: depth-wise kxk (k = 3, 5, 7; the same
    taps for q, k and v) then point-wise conv; then BatchNorm (running statistics) and
    Hardswish. Segment 4 (the non-attention branch) is not attention and is left out.

    Args:
        x (Tensor): (B, H, W, C) input of the module.

    Returns:
        tuple[Tensor]: q, k, v of shape (B, 4, L, s) (segment-major; two heads per segment).
    """
    B, H, W, C = x.shape
    agg = attn.aggregator
    s = C // 5
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(B, H, W, 3, 5, s)
    segments = []
    for i in range(4):
        t = qkv[..., i, :].permute(0, 3, 4, 1, 2).reshape(B * 3, s, H, W)
        if i > 0:
            dw = agg.local_dw[i - 1].weight
            t = F.conv2d(t, dw, padding=dw.shape[-1] // 2, groups=s)
            t = F.conv2d(t, agg.local_pw[i - 1].weight)
        segments.append(t)
    norm = agg.norm
    if not isinstance(norm, _BatchNorm):
        raise TypeError(f'group_mix_proxies computes BatchNorm aggregators (the official '
                        f'design); this one has {type(norm).__name__}.')
    t = F.batch_norm(torch.cat(segments, dim=1), norm.running_mean, norm.running_var,
                     norm.weight, norm.bias, False, 0., norm.eps)
    t = F.hardswish(t).reshape(B, 3, 4, s, H * W).permute(1, 0, 2, 4, 3)
    return t.unbind(0)


def group_mix_attention_weights(q, k, scale, query=None):
    """Weights of Group-Mix attention's factorised term, per head.

    The term ``scale * q (softmax_L(k)^T v)`` equals ``(scale * q softmax_L(k)^T) v``: the
    query attends to every token (heads 0-1) or group proxy (heads 2-3: 3x3, 4-5: 5x5, 6-7:
    7x7) of the map with the weights ``scale * q softmax_L(k)^T``. The softmax runs over the
    tokens for each key channel (so each channel's key distribution sums to 1); the weights
    themselves are linear in q and can be negative.

    Args:
        q, k (Tensor): (B, 4, L, s) (:func:`group_mix_proxies`), ``s = 2 d``.
        scale (float): The module's ``scale``.
        query (int, optional): Token index of the query (``y * W + x``).

    Returns:
        tuple[Tensor]: ``weights`` (B, 8, Lq, L) and ``key_softmax`` (B, 8, L, d).
    """
    B, S, L, s = q.shape
    d = s // 2
    q = q.reshape(B, S, L, 2, d).transpose(2, 3).reshape(B, 2 * S, L, d)
    key_softmax = k.softmax(dim=2).reshape(B, S, L, 2, d).transpose(2, 3).reshape(B, 2 * S, L, d)
    if query is not None:
        q = q[:, :, query:query + 1]
    return scale * q @ key_softmax.transpose(-2, -1), key_softmax


def group_mix_weights(record, query=None):
    """The weights of a Group-Mix record: ``attention`` (B, 8, Lq, L), ``key_softmax``
    (B, 8, L, d)."""
    q, k, _ = group_mix_proxies(record.module, record.inputs['x'])
    index = None if query is None else query[0] * record.hw[1] + query[1]
    attention, key_softmax = group_mix_attention_weights(q, k, record.module.scale, index)
    return dict(attention=attention, key_softmax=key_softmax)


# -- LaViT: vanilla and less attention ----------------------------------------------------------
def lavit_key_value_tokens(attn, x, hw):
    """The pooled key/value tokens of a LaViT attention layer: adaptive average pooling to the
    ``P x P`` grid, 1x1 conv, LayerNorm, GELU. x: (B, L, C) -> (B, P * P, C)."""
    kv = attn.kv_tokens
    B, L, C = x.shape
    t = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(B, C, *hw), kv.pool_size)
    t = F.conv2d(t, kv.sr.weight, kv.sr.bias).flatten(2).transpose(1, 2)
    return F.gelu(F.layer_norm(t, (C, ), kv.norm.weight, kv.norm.bias, kv.norm.eps))


def vanilla_attention_logits(attn, x, hw, residual_logits=None):
    """Logits of a LaViT VanillaAttention: ``q k^T / sqrt(d) [+ residual]`` -> (B, h, L, K)."""
    B, L, C = x.shape
    h, d = attn.num_heads, C // attn.num_heads
    q = F.linear(x, attn.q.weight, attn.q.bias).reshape(B, L, h, d)
    k = F.linear(lavit_key_value_tokens(attn, x, hw), attn.kv.weight[:C], attn.kv.bias[:C])
    logits = torch.einsum('bnhd,bkhd->bhnk', q, k.reshape(B, -1, h, d)) / math.sqrt(d)
    return logits if residual_logits is None else logits + residual_logits


def less_attention_logits(attn, prev_logits, hw):
    """Logits of a LaViT LessAttention: ``Psi(Theta(S_prev))`` -> (B, h, L, K).

    Theta: ``Linear(K, K)`` over the keys; Psi: per head a 3x3 convolution (zero padding) over
    the query grid, the same for every key.
    """
    B, h, L, K = prev_logits.shape
    t = F.linear(prev_logits, attn.theta.weight, attn.theta.bias)
    t = t.reshape(B, h, *hw, K).permute(0, 4, 1, 2, 3).reshape(B * K, h, *hw)
    t = F.conv2d(t, attn.psi.weight, padding=1, groups=h)
    return t.reshape(B, K, h, L).permute(0, 2, 3, 1)


def lavit_weights(record, query=None):
    """The weights of a LaViT record (``lavit_va`` / ``lavit_la``): ``attention`` (B, h, Lq, K)
    and its ``logits``."""
    m, inputs, hw = record.module, record.inputs, record.hw
    if record.kind == 'lavit_va':
        logits = vanilla_attention_logits(m, inputs['x'], hw, inputs.get('residual_logits'))
    else:
        logits = less_attention_logits(m, inputs['prev_logits'], hw)
    if query is not None:
        logits = logits[:, :, query[0] * hw[1] + query[1]][:, :, None]
    return dict(attention=logits.softmax(dim=-1), logits=logits)


def attention_similarity(a, b):
    """Cosine similarity of two layers' attention maps (B, h, L, K), per head -> (B, h)."""
    return F.cosine_similarity(a.flatten(2), b.flatten(2), dim=-1)
