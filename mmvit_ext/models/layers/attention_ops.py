"""Scaled softmax attention with an additive mask, computed the way measured fastest.

``softmax(q k^T * scale + mask) v`` is one function for every attention of the package that
needs no logits back (RMT's full and decomposed MaSA, Pale's row/column groups). Two ways
compute it:

* **explicit**: ``matmul``, add, ``softmax``, ``matmul``, over slices of the batch whose score
  matrices hold at most ``CHUNK_SCORES`` elements (4 MB: they stay in the CPU caches). Autograd
  saves the (..., L, L) probabilities, as the official implementations do.
* **SDPA**: ``F.scaled_dot_product_attention``, PyTorch's fused kernel (flash attention on
  the CPU), which saves no (L x L) tensor.

On the CPU, rows of at most ``EXPLICIT_MAX_TOKENS`` keys go the explicit way, everything else
(longer rows, CUDA, traced or exported programs) through SDPA. For short rows the fused kernel's
per-row overhead dominates: in a training step its backward recomputes the probabilities, which
costs more than keeping them, and in inference its forward alone is slower too (RMT-S at 224:
stage-1 rows of 56 keys 1.6x, stage-3 rows of 14 keys 1.5x). For long rows SDPA is faster and
saves their memory (the README has the measured figures). Programs of ``torch.export``,
``torch.compile`` and ``torch.jit.trace`` always hold SDPA: a choice by row length would put a
guard on the (dynamic) feature size into them.

:func:`attention_kernel` overrides the choice inside a ``with`` block, e.g. to time both ways
(``tools/analysis_tools/benchmark.py --baseline-attention-kernel sdpa``).
"""
import contextlib
import math

import torch
import torch.nn.functional as F

#: Longest key row attended explicitly on the CPU; SDPA above it.
EXPLICIT_MAX_TOKENS = 128
#: Score elements per slice of the explicit computation.
CHUNK_SCORES = 2**20
#: What :func:`attention_kernel` accepts.
KERNELS = ('auto', 'explicit', 'sdpa')
_forced_kernel = 'auto'


@contextlib.contextmanager
def attention_kernel(kernel):
    """Within the block, every :func:`softmax_attention` runs ``kernel``: ``'explicit'``,
    ``'sdpa'`` or ``'auto'`` (the measured choice of :func:`uses_explicit_attention`)."""
    global _forced_kernel
    if kernel not in KERNELS:
        raise ValueError(f'attention_kernel: unknown kernel {kernel!r}; use one of {KERNELS}.')
    previous, _forced_kernel = _forced_kernel, kernel
    try:
        yield
    finally:
        _forced_kernel = previous


def uses_explicit_attention(q, k):
    """Whether :func:`softmax_attention` computes ``q``, ``k`` explicitly (see module doc)."""
    if _forced_kernel != 'auto':
        return _forced_kernel == 'explicit'
    # the program checks first: comparing a symbolic row length would already add the guard
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and q.device.type == 'cpu' and k.shape[-2] <= EXPLICIT_MAX_TOKENS)


def _explicit(q, k, v, mask, scale, dropout_p):
    scores = torch.matmul(q, k.transpose(-2, -1) * scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float('-inf')) if mask.dtype == torch.bool \
            else scores + mask
    probs = scores.softmax(dim=-1)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)


def softmax_attention(q, k, v, mask=None, scale=None, dropout_p=0.):
    """``dropout(softmax(q k^T * scale + mask)) v``.

    Args:
        q (Tensor): (B, ..., L_q, d).
        k (Tensor): (B, ..., L_k, d).
        v (Tensor): (B, ..., L_k, d_v).
        mask (Tensor, optional): additive float mask broadcastable to (B, ..., L_q, L_k), or a
            boolean mask (True: attend).
        scale (float, optional): defaults to ``d ** -0.5``.
        dropout_p (float): dropout on the attention probabilities (pass 0 in eval mode).

    Returns:
        Tensor: (B, ..., L_q, d_v).
    """
    if not uses_explicit_attention(q, k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                              scale=scale)
    scale = q.shape[-1]**-0.5 if scale is None else scale
    scores_per_item = math.prod(q.shape[1:-1]) * k.shape[-2]
    step = max(1, CHUNK_SCORES // max(scores_per_item, 1))  # batch items per slice
    if step >= q.shape[0]:
        return _explicit(q, k, v, mask, scale, dropout_p)
    # a mask with a batch axis is sliced with q, k and v; a broadcast one is shared
    masks = mask.split(step) if mask is not None and mask.dim() == q.dim() \
        and mask.shape[0] == q.shape[0] > 1 else [mask] * -(-q.shape[0] // step)
    return torch.cat([_explicit(*parts, scale, dropout_p)
                      for parts in zip(q.split(step), k.split(step), v.split(step), masks)])
