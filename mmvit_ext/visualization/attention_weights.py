"""The attention weights of every attention type of this package, by the plain formula.

The production modules never form their weights (they run fused
``scaled_dot_product_attention`` or factorised products); these functions compute them
explicitly, from a module's input and its own parameters, with the plain reference code of
:mod:`mmvit_ext.oracles` (each formula lives there once), independently of the module's fast
code path. What is added here is only what drawing needs: one query's row, the RMT prior
around the query, the effective map of decomposed MaSA, the Group-Mix weights of the
factorised term, the similarity of two layers' maps. Each family's ``<family>_weights`` (named
in its registration, ``AttentionRecording.weights``) computes them for the inputs that
:mod:`.recorder` records during a normal forward.

Shape conventions: ``B`` batch, tokens row-major (``L = H * W``); ``query=(y, x)`` restricts
the queries to one token (``Lq = 1``), otherwise ``Lq = L``. All functions expect eval-mode
modules (their norms use running statistics).
"""
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from mmvit_ext.oracles import groupmixformer as group_mix_oracle
from mmvit_ext.oracles import lavit as lavit_oracle
from mmvit_ext.oracles import pale as pale_oracle
from mmvit_ext.oracles import rmt as rmt_oracle


def _query_rows(query, width):
    """The rows of the row-major tokens of a map ``width`` wide that ``query`` selects: all
    (``query=None``), or the one of token ``(y, x)``, kept as a dimension."""
    if query is None:
        return slice(None)
    index = query[0] * width + query[1]
    return slice(index, index + 1)


# -- RMT: Manhattan self-attention --------------------------------------------------------------
def rmt_rotated_qk(attn, rel_pos, x):
    """Rotated queries and keys of an RMT attention module for its input ``x`` (B, H, W, C).

    ``q = x W_q^T + b_q`` (same for k) per head, each channel pair rotated by the angle
    ``(y * W + x) * freq_j`` of its raster index (``rel_pos``: the stage's
    ``ManhattanRelPos``), by :func:`mmvit_ext.oracles.rmt.rotated_qk`. Returns q, k:
    (B, N, H, W, d), k not scaled.
    """
    _, H, W, _ = x.shape
    sin, cos = rmt_oracle.rotation_tables(rel_pos.angle.to(x), H, W)
    return rmt_oracle.rotated_qk(x, attn.q_proj, attn.k_proj, attn.num_heads, sin, cos, 1.)


def manhattan_prior(decay, hw, query):
    """RMT's spatial prior around ``query``: ``gamma_n ** (|dy| + |dx|)`` per head.

    Args:
        decay (Tensor): (N,) ``log(gamma_n)`` (``ManhattanRelPos.decay``).
        hw (tuple): (H, W). query (tuple): (y, x).

    Returns:
        Tensor: (N, H, W), 1 at the query.
    """
    ys, xs = (torch.arange(n, device=decay.device) for n in hw)
    dist = (ys - query[0]).abs()[:, None] + (xs - query[1]).abs()[None]    # (H, W)
    return torch.exp(decay[:, None, None] * dist)


def manhattan_attention_weights(q, k, decay, scale, query=None, with_prior=True):
    """Full MaSA weights ``softmax(q k^T * scale + log(gamma_n) * (|dy| + |dx|))``.

    ``with_prior=False`` drops the decay: plain softmax attention of the same q and k (the
    baseline the prior is compared with).

    Args:
        q, k (Tensor): (B, N, H, W, d), rotated (:func:`rmt_rotated_qk`).
        decay (Tensor): (N,) log-decays. scale (float): ``d ** -0.5``.

    Returns:
        Tensor: (B, N, Lq, L), rows sum to 1.
    """
    _, _, H, W, _ = q.shape
    rows = _query_rows(query, W)
    mask = rmt_oracle.decay_masks(decay, H, W, chunkwise=False)[:, rows] if with_prior else 0.
    return rmt_oracle.retention_weights(q.flatten(2, 3)[:, :, rows], k.flatten(2, 3) * scale,
                                        mask)


def decomposed_manhattan_attention_weights(q, k, decay, scale):
    """Weights of the two passes of decomposed MaSA.

    W pass, inside every row: ``softmax(q k^T * scale + log(gamma_n) |dx|)``; H pass, inside
    every column, with the same q and k: ``softmax(q k^T * scale + log(gamma_n) |dy|)``.

    Args:
        q, k (Tensor): (B, N, H, W, d), rotated. decay (Tensor): (N,). scale (float).

    Returns:
        tuple[Tensor]: ``w_pass`` (B, H, N, W, W) (row y: query column x over key column x')
        and ``h_pass`` (B, W, N, H, H) (column x: query row y over key row y').
    """
    _, _, H, W, _ = q.shape
    mask_h, mask_w = rmt_oracle.decay_masks(decay, H, W, chunkwise=True)
    return rmt_oracle.decomposed_retention_weights(q, k * scale, mask_h, mask_w)


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
def pale_qk(attn, x):
    """q and k maps (B, C, H, W) of a PaleShapedAttention for its input ``x`` (B, H, W, C)."""
    nchw = x.permute(0, 3, 1, 2)
    return attn.q(nchw), attn.k(nchw)


def pale_attention_weights(q, k, num_heads, pale_size, query=None):
    """PS-Attention weights as masked full attention (:mod:`mmvit_ext.oracles.pale`).

    The first C/2 channels (``num_heads / 2`` heads) attend inside the query's interlaced row
    group, the last C/2 inside its column group: ``softmax(q k^T / sqrt(d))`` over the allowed
    tokens, 0 elsewhere.

    Args:
        q, k (Tensor): (B, C, H, W) (:func:`pale_qk`). num_heads (int): all heads.
        pale_size (tuple): (s_r, s_c).

    Returns:
        tuple[Tensor]: ``row``, ``column``: (B, num_heads / 2, Lq, L) each, rows sum to 1.
    """
    _, _, H, W = q.shape
    rows = _query_rows(query, W)
    branches = zip(pale_oracle.branch_tokens(q, num_heads),
                   pale_oracle.branch_tokens(k, num_heads),
                   pale_oracle.allowed_pairs(H, W, pale_size, q.device))
    return tuple(
        pale_oracle.masked_attention_weights(q_branch[:, :, rows], k_branch, allowed[rows])
        for q_branch, k_branch, allowed in branches)


def pale_weights(record, query=None):
    """The weights of a Pale record: ``row``, ``column`` (B, h / 2, Lq, L)."""
    m = record.module
    q, k = pale_qk(m, record.inputs['x'])
    row, column = pale_attention_weights(q, k, m.num_heads, m.pale_size, query)
    return dict(row=row, column=column)


# -- Group-Mix attention ------------------------------------------------------------------------
def group_mix_proxies(attn, x):
    """q, k and v of the four attention segments of a GroupMixAttention, by the official code.

    ``[q | k | v] = x W^T + b`` (each C wide, five segments of ``s = C / 5``); segment 0 is the
    tokens themselves, segments 1-3 the group proxies: depth-wise kxk (k = 3, 5, 7; the same
    taps for q, k and v) then point-wise conv; then BatchNorm (running statistics) and
    Hardswish. Segment 4 (the non-attention branch) is not attention and is left out. The
    official-layout copy of the module (``OracleGroupMixAttention`` of
    :mod:`mmvit_ext.oracles.groupmixformer`) computes them.

    Args:
        x (Tensor): (B, H, W, C) input of the module.

    Returns:
        tuple[Tensor]: q, k, v of shape (B, 8, L, d), ``d = s / 2`` (segment-major: heads 2i
        and 2i + 1 are segment i).
    """
    B, H, W, C = x.shape
    norm = attn.aggregator.norm
    if not isinstance(norm, _BatchNorm):
        raise TypeError(f'group_mix_proxies computes BatchNorm aggregators (the official '
                        f'design); this one has {type(norm).__name__}.')
    with torch.random.fork_rng(devices=()):  # building the copy draws (discarded) init weights
        official = group_mix_oracle.OracleGroupMixAttention(attn)
    official = official.to(x).eval()
    q, k, v, _ = official.att.proxies(x.reshape(B, H * W, C), (H, W))
    return q, k, v


def group_mix_attention_weights(q, k, scale, query=None):
    """Weights of Group-Mix attention's factorised term, per head.

    The term ``scale * q (softmax_L(k)^T v)`` equals ``(scale * q softmax_L(k)^T) v``: the
    query attends to every token (heads 0-1) or group proxy (heads 2-3: 3x3, 4-5: 5x5, 6-7:
    7x7) of the map with the weights ``scale * q softmax_L(k)^T``. The softmax runs over the
    tokens for each key channel (so each channel's key distribution sums to 1); the weights
    themselves are linear in q and can be negative.

    Args:
        q, k (Tensor): (B, 8, L, d) (:func:`group_mix_proxies`).
        scale (float): The module's ``scale``.
        query (int, optional): Token index of the query (``y * W + x``).

    Returns:
        tuple[Tensor]: ``weights`` (B, 8, Lq, L) and ``key_softmax`` (B, 8, L, d).
    """
    key_softmax = k.softmax(dim=2)
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
def vanilla_attention_logits(attn, x, hw, residual_logits=None):
    """Logits of a LaViT VanillaAttention: ``q k^T / sqrt(d) [+ residual]`` -> (B, h, L, K)
    (:func:`mmvit_ext.oracles.lavit.vanilla_logits_and_values`)."""
    return lavit_oracle.vanilla_logits_and_values(attn, x, hw, residual_logits)[0]


def lavit_weights(record, query=None):
    """The weights of a LaViT record (``lavit_va`` / ``lavit_la``): ``attention`` (B, h, Lq, K)
    and its ``logits``."""
    m, inputs, hw = record.module, record.inputs, record.hw
    if record.kind == 'lavit_va':
        logits = vanilla_attention_logits(m, inputs['x'], hw, inputs.get('residual_logits'))
    else:
        logits = lavit_oracle.less_attention_logits(m, inputs['prev_logits'], hw)
    if query is not None:
        logits = logits[:, :, query[0] * hw[1] + query[1]][:, :, None]
    return dict(attention=logits.softmax(dim=-1), logits=logits)


def attention_similarity(a, b):
    """Cosine similarity of two layers' attention maps (B, h, L, K), per head -> (B, h)."""
    return F.cosine_similarity(a.flatten(2), b.flatten(2), dim=-1)
