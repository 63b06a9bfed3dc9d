"""The oneDNN kernels of the fused copies, and the fused Linear / conv modules built on them.

PyTorch's private oneDNN ops (those ``torch.compile`` uses on CPU) run the Linear layers of
these models faster than the BLAS behind ``F.linear`` on the CPUs measured (README), and fuse
GELU, Hardswish and residual adds into the GEMMs and convolutions. Being private, each op used
here is checked once on a tiny input against the plain op (:func:`missing_kernels`); the
transform leaves a model alone when one is missing or wrong.

The fused modules keep their (folded) weights as ordinary tensors in the plain layout, read
directly by the kernels: there is no derived copy that could go stale.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

_mkldnn = getattr(torch.ops, 'mkldnn', None)


def linear(x, weight, bias, act='none'):
    """``act(x @ weight.T + bias)``, ``act``: ``'none'``, ``'gelu'`` (exact erf) or
    ``'hardswish'``; any leading dims."""
    return _mkldnn._linear_pointwise(x, weight, bias, act, [], 'none' if act == 'gelu' else '')


def linear_add(x, weight, bias, other):
    """``x @ weight.T + bias + other``."""
    return _mkldnn._linear_pointwise.binary(x, other, weight, bias, 'add')


def conv(x, weight, bias, padding, stride, groups, act='none'):
    """``act(conv2d(x))`` on an NCHW-shaped (preferably channels-last) map."""
    return _mkldnn._convolution_pointwise(x, weight, bias, padding, stride, [1, 1], groups, act,
                                          [], 'none' if act == 'gelu' else '')


def conv_add(x, weight, bias, padding, stride, groups, other):
    """``conv2d(x) + other``, both NCHW-shaped."""
    return _mkldnn._convolution_pointwise.binary(x, other, weight, bias, padding, stride, [1, 1],
                                                 groups, 'add', None, None, [], None)


@functools.lru_cache(maxsize=None)
def missing_kernels():
    """Names of the kernels above that this torch build lacks or computes wrongly (checked once
    per process against the plain ops, on small random inputs)."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((2, 5, 8), (6, 8), (6, )))
    img, cw = torch.randn(1, 4, 5, 5, generator=gen), torch.randn(4, 1, 3, 3, generator=gen)
    img = img.contiguous(memory_format=torch.channels_last)
    plain_conv = F.conv2d(img, cw, b[:4], padding=1, groups=4)
    checks = {
        'linear': (lambda: linear(x, w, b), lambda: F.linear(x, w, b)),
        'linear+gelu': (lambda: linear(x, w, b, 'gelu'), lambda: F.gelu(F.linear(x, w, b))),
        'linear+hardswish': (lambda: linear(x, w, b, 'hardswish'),
                             lambda: F.hardswish(F.linear(x, w, b))),
        'linear+add': (lambda: linear_add(x, w, b, x[..., :6]),
                       lambda: F.linear(x, w, b) + x[..., :6]),
        'conv': (lambda: conv(img, cw, b[:4], [1, 1], [1, 1], 4), lambda: plain_conv),
        'conv+gelu': (lambda: conv(img, cw, b[:4], [1, 1], [1, 1], 4, 'gelu'),
                      lambda: F.gelu(plain_conv)),
        'conv+add': (lambda: conv_add(img, cw, b[:4], [1, 1], [1, 1], 4, img),
                     lambda: plain_conv + img),
    }
    missing = []
    with torch.no_grad():
        for name, (fused, plain) in checks.items():
            try:
                ok = torch.allclose(fused(), plain(), atol=1e-5, rtol=1e-4)
            except (AttributeError, RuntimeError, TypeError):
                ok = False
            if not ok:
                missing.append(name)
    return tuple(missing)


class FusedModule(nn.Module):
    """Base of the fused copies: inference only, so switching to training mode is refused."""

    def train(self, mode=True):
        if mode:
            raise RuntimeError(f'{type(self).__name__} is a fused copy for CPU inference; its '
                               f'BatchNorms are folded and it cannot train. Train the plain model '
                               f'and fuse it again (mmvit_ext.fuse_for_cpu_inference).')
        return super().train(False)


def frozen(tensor):
    """A copy of ``tensor`` as a parameter without grad, owned by the fused module."""
    return nn.Parameter(tensor.detach().clone().contiguous(), requires_grad=False)


def bn_scale_shift(norm):
    """An eval-mode BatchNorm as per-channel ``x * scale + shift`` (running statistics)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.affine:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.affine:
        shift = shift + norm.bias
    return scale, shift


class FusedLinear(FusedModule):
    """``act(x @ weight.T + bias)`` [``+ residual``] as one oneDNN GEMM.

    Built by :meth:`fold`, which multiplies a following per-channel ``scale`` and adds a
    ``shift`` (a LayerScale or an eval BatchNorm) into the weights.

    Shapes: x (..., in) [, residual (..., out)] -> (..., out).
    """

    def __init__(self, weight, bias=None, act='none'):
        super().__init__()
        self.weight = frozen(weight)
        self.bias = frozen(bias if bias is not None else weight.new_zeros(weight.shape[0]))
        self.act = act

    @classmethod
    def fold(cls, weight, bias=None, scale=None, shift=None, act='none'):
        """``act((x @ weight.T + bias) * scale + shift)`` as one fused Linear."""
        with torch.no_grad():
            bias = bias if bias is not None else weight.new_zeros(weight.shape[0])
            if scale is not None:
                weight, bias = weight * scale[:, None], bias * scale
            if shift is not None:
                bias = bias + shift
        return cls(weight, bias, act)

    def forward(self, x, residual=None):
        if residual is not None:
            return linear_add(x, self.weight, self.bias, residual)
        return linear(x, self.weight, self.bias, self.act)

    def extra_repr(self):
        return f'in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.act}'


class FusedConv2d(FusedModule):
    """``act(conv2d(x) [* scale + shift])`` [``+ residual``] as one oneDNN convolution.

    Built by :meth:`fold` from an ``nn.Conv2d`` and an optional eval BatchNorm after it.

    Shapes: x (B, C_in, H, W), best in channels-last memory [, residual (B, C_out, H', W')]
    -> (B, C_out, H', W').
    """

    def __init__(self, weight, bias, padding, stride, groups, act='none'):
        super().__init__()
        self.weight = frozen(weight)
        self.bias = frozen(bias)
        self.padding, self.stride, self.groups = list(padding), list(stride), groups
        self.act = act

    @classmethod
    def fold(cls, conv, norm=None, act='none'):
        if conv.dilation != (1, 1) or conv.padding_mode != 'zeros':
            raise ValueError(f'FusedConv2d supports dilation 1 and zero padding, got {conv}.')
        with torch.no_grad():
            weight = conv.weight
            bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
            if norm is not None:
                scale, shift = bn_scale_shift(norm)
                weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale + shift
        return cls(weight, bias, conv.padding, conv.stride, conv.groups, act)

    def forward(self, x, residual=None):
        if residual is not None:
            return conv_add(x, self.weight, self.bias, self.padding, self.stride, self.groups,
                            residual)
        return conv(x, self.weight, self.bias, self.padding, self.stride, self.groups, self.act)

    def channels_last(self, x, residual=None):
        """The conv on (B, H, W, C) maps (the NCHW views of channels-last memory)."""
        nchw = (lambda t: t.permute(0, 3, 1, 2))
        out = self(nchw(x), None if residual is None else nchw(residual))
        return out.permute(0, 2, 3, 1)

    def extra_repr(self):
        return (f'{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, '
                f'kernel_size={tuple(self.weight.shape[2:])}, stride={self.stride}, '
                f'groups={self.groups}, act={self.act}')
