"""Parameters and FLOPs of a model, counted by mmengine's ``FlopAnalyzer``.

Counting follows mmengine (fvcore convention: one multiply-add is one FLOP; element-wise ops,
softmax and activations are not counted), with handles added for ops our backbones use and
mmengine misses or miscounts:

* ``aten::scaled_dot_product_attention``: ``B*h*Lq*Lk*d + B*h*Lq*Lk*dv`` (the two matmuls);
* ``aten::einsum``: exact multiply-adds of a two-operand contraction (mmengine asks
  ``numpy.einsum_path``, which rounds and allocates the operands);
* ``aten::matmul``: batch dims broadcast (mmengine uses only the first operand's batch dims);
* ``aten::baddbmm`` (``c + a @ b``, uncounted by mmengine): the ``a @ b`` multiply-adds.
"""
import math
from collections import Counter

import torch


def _shape(value):
    from mmengine.analysis.jit_handles import get_shape
    return get_shape(value)


def sdpa_flop_jit(inputs, outputs):
    """FLOPs of ``scaled_dot_product_attention(q, k, v, ...)``: ``q @ k^T`` plus ``attn @ v``.

    q ``(..., Lq, d)``, k ``(..., Lk, d)``, v ``(..., Lk, dv)``; the leading dims are those of
    the output (k/v may broadcast or share heads under GQA).
    """
    q_shape, k_shape, v_shape = (_shape(v) for v in inputs[:3])
    batch = math.prod(q_shape[:-2])
    lq, d = q_shape[-2:]
    lk, dv = k_shape[-2], v_shape[-1]
    return batch * lq * lk * (d + dv)


def einsum_flop_jit(inputs, outputs):
    """Multiply-adds of ``einsum(equation, operands)``.

    Two operands: the product of the sizes of all distinct indices (each output element sums
    over the contracted indices). One operand (a permutation or a sum): 0. More operands:
    numpy's optimal contraction path on zero-strided arrays (no memory is allocated).
    """
    import numpy as np
    equation = inputs[0].toIValue().replace(' ', '')
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split('->')[0].split(',')
    if len(shapes) == 1:
        return 0
    if len(shapes) == 2 and '...' not in equation:
        sizes = {}
        for term, shape in zip(lhs, shapes):
            sizes.update(zip(term, shape))
        return math.prod(sizes.values())
    arrays = [np.lib.stride_tricks.as_strided(np.zeros(1), shape=s, strides=[0] * len(s))
              for s in shapes]
    path_info = np.einsum_path(equation, *arrays, optimize='optimal')[1]
    for line in path_info.split('\n'):
        if 'optimized flop' in line.lower():
            return int(float(line.split(':')[-1]) / 2)
    raise NotImplementedError(f'Cannot count einsum "{equation}".')


def matmul_flop_jit(inputs, outputs):
    """Multiply-adds of ``a @ b`` with numpy broadcasting of the batch dims."""
    a, b = (list(_shape(v)) for v in inputs[:2])
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    assert a[-1] == b[-2], (a, b)
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def baddbmm_flop_jit(inputs, outputs):
    """Multiply-adds of ``baddbmm(c, a, b)`` (``c + a @ b``, a ``(n, l, m)``, b ``(n, m, p)``)."""
    (n, l, m), p = _shape(inputs[1]), _shape(inputs[2])[-1]
    return n * l * m * p


EXTRA_FLOP_HANDLES = {
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
    'aten::einsum': einsum_flop_jit,
    'aten::matmul': matmul_flop_jit,
}


def flop_analyzer(model, inputs):
    """mmengine's ``FlopAnalyzer`` of ``model(*inputs)`` with :data:`EXTRA_FLOP_HANDLES`,
    quiet about uncounted ops (:func:`count_flops` returns them)."""
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def count_flops(model, inputs):
    """Return ``(total_flops, flops_by_operator, unsupported_ops)`` of ``model(*inputs)``."""
    analyzer = flop_analyzer(model, inputs)
    return int(analyzer.total()), analyzer.by_operator(), Counter(analyzer.unsupported_ops())


def count_params(model):
    return sum(p.numel() for p in model.parameters())
