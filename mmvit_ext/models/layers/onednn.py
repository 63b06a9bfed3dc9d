"""Fused oneDNN inference kernels for CPU fp32 with autograd off.

PyTorch's oneDNN ops (the ones ``torch.compile`` uses on CPU) run Linear layers 2-3x faster
than the BLAS behind ``F.linear`` on the machines measured here, and fuse GELU, residual adds
and eval BatchNorms into the GEMMs and convolutions. Reordered/folded weights are cached per
module outside the state_dict and rebuilt when a source tensor changes. Callers check
:func:`onednn_inference` and fall back to the plain ops otherwise (training, autocast, GPU, or
a torch build without these ops).
"""
import weakref

import torch
from torch.nn.modules.batchnorm import _BatchNorm

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')


def onednn_inference(x):
    """Whether the fused oneDNN inference kernels serve ``x``: fp32 on CPU, autograd off.

    On CPU these kernels (those ``torch.compile`` uses) run the Linear layers 2-3x faster than
    the BLAS behind ``F.linear`` and fuse GELU and residual adds into the GEMMs and convs. They
    have no backward, so with autograd on (training, gradient checks) the plain ops run.
    """
    return (_ONEDNN and x.device.type == 'cpu' and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled('cpu'))


_PACKED = weakref.WeakKeyDictionary()  # module -> {name: (source versions, packed tensors)}


def packed_weights(module, name, sources, build):
    """``build()`` (weights derived from ``sources`` and reordered for oneDNN), cached per
    ``module`` and ``name`` until a source tensor is replaced or modified in place (optimizer
    steps and ``load_state_dict`` bump the version). The cache sits outside the module, so
    state_dict, deepcopy and pickling never see it; it holds one extra copy of the weights.
    """
    # inference tensors (made under torch.inference_mode) cannot change in place: no version
    key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version, t.shape) for t in sources)
    entries = _PACKED.setdefault(module, {})
    if name not in entries or entries[name][0] != key:
        entries[name] = (key, build())
    return entries[name][1]


def packed_linear(module, name, sources, make=None):
    """``(weight, bias)`` of ``make()`` (default: the first two ``sources``) with the weight
    reordered for oneDNN GEMMs, cached (see :func:`packed_weights`)."""
    def build():
        weight, bias = make() if make is not None else sources[:2]
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach()), bias.detach()

    return packed_weights(module, name, sources, build)


def fused_linear(x, weight, bias, act=None, residual=None):
    """oneDNN ``act(x @ weight.T + bias)`` (``act``: None or ``'gelu'``, exact erf) or
    ``x @ weight.T + bias + residual``, for :func:`onednn_inference` inputs; any leading dims."""
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, 'add')
    if act == 'gelu':
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'gelu', [], 'none')
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


def fused_dwconv_add(x, conv, other):
    """oneDNN ``conv(x) + other`` on channels-last maps: x, other (B, H, W, C) -> (B, H, W, C),
    for :func:`onednn_inference` inputs (``conv``: a depth-wise ``nn.Conv2d``)."""
    out = torch.ops.mkldnn._convolution_pointwise.binary(
        x.permute(0, 3, 1, 2), other.permute(0, 3, 1, 2), conv.weight, conv.bias,
        conv.padding, conv.stride, conv.dilation, conv.groups, 'add', None, None, [], None)
    return out.permute(0, 2, 3, 1)


def foldable_bn(norm):
    """Whether ``norm`` is a BatchNorm normalising by its running statistics (eval mode)."""
    return isinstance(norm, _BatchNorm) and not norm.training and norm.running_var is not None


def bn_scale_shift(norm):
    """An eval-mode BatchNorm as per-channel ``x * scale + shift`` (running statistics)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.affine:
        shift = shift + norm.bias
    return scale, shift


def bn_sources(norm):
    """The tensors a BatchNorm fold reads, as weight-cache keys. BatchNorm updates its running
    statistics without bumping their version counters; the in-place increment of
    ``num_batches_tracked`` does, so it stands for them."""
    return tuple(t for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var,
                             norm.num_batches_tracked) if t is not None)


def fold_conv_bn(conv, norm):
    """Weight and bias of ``norm(conv(.))`` as one conv, for a :func:`foldable_bn` ``norm``.
    Exact up to float rounding."""
    scale, shift = bn_scale_shift(norm)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def onednn_conv_bn(x, conv, norm, gelu=False):
    """``[GELU](norm(conv(x)))`` as one oneDNN conv on channels-last memory (NCHW shape in and
    out), for ``onednn_inference`` inputs; None where ``norm`` cannot be folded."""
    if not foldable_bn(norm):
        return None

    def build():
        weight, bias = fold_conv_bn(conv, norm)
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, conv.padding, conv.stride, conv.dilation, conv.groups), bias

    sources = tuple(t for t in (conv.weight, conv.bias) if t is not None) + bn_sources(norm)
    weight, bias = packed_weights(conv, 'conv_bn', sources, build)
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups,
        'gelu' if gelu else 'none', [], 'none' if gelu else '')
