"""Opt-in deployment transform: fused CPU-inference copies of the blocks that benefit.

``fuse_for_cpu_inference(model)`` replaces, in an eval-mode fp32 model on the CPU, every module
with a ``fused_copy()`` method by the copy it returns: BatchNorms folded into the preceding
convs/GEMMs and GELU, Hardswish, layer scales and residual adds fused into oneDNN kernels, once,
at conversion (like timm's ``reparameterize_model`` or mmcv's ``fuse_conv_bn``). The copies hold
their own weights and cannot train; the plain modules stay the ones for training, GPUs and AMP.

The method is ``fused_copy`` and not timm's ``fuse``: timm's ``reparameterize_model`` calls any
``fuse()`` and installs its result, also None, without the eval-mode, dtype and kernel checks
made here.
"""
import warnings

import torch

from .kernels import FusedModule, missing_kernels


def _fusable(module):
    # ``fused_copy()`` returns the fused copy, or None when the module's configuration cannot
    # be fused (e.g. a stem with LayerNorms instead of BatchNorms)
    return callable(getattr(module, 'fused_copy', None))


def can_fuse(model):
    """Whether ``model`` contains modules that :func:`fuse_for_cpu_inference` would replace."""
    return any(_fusable(m) for m in model.modules())


def fuse_for_cpu_inference(model):
    """Replace the fusable modules of ``model`` by fused CPU-inference copies, in place.

    Args:
        model (nn.Module): An eval-mode model (``model.eval()``) with fp32 weights on the CPU.

    Returns:
        nn.Module: ``model``, its fusable modules replaced; unchanged (with a warning) when
        this torch build lacks one of the oneDNN kernels.

    Raises:
        RuntimeError: when a module is in training mode, or a weight is not an fp32 CPU tensor.
    """
    training = [name for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(f'fuse_for_cpu_inference needs an eval-mode model (call '
                           f'model.eval() first); in training mode: {training[:3]}.')
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and (tensor.device.type != 'cpu'
                                           or tensor.dtype != torch.float32):
            raise RuntimeError(f'fuse_for_cpu_inference fuses fp32 CPU models; {name} is '
                               f'{tensor.dtype} on {tensor.device}. Use the plain model on '
                               f'GPUs and with AMP.')
    missing = missing_kernels()
    if missing:
        warnings.warn(f'fuse_for_cpu_inference: this torch build ({torch.__version__}) lacks '
                      f'or miscomputes the oneDNN kernels {list(missing)}; the model is left '
                      f'as it is.')
        return model
    _replace(model)
    return model


def _replace(module):
    for name, child in module.named_children():
        fused = child.fused_copy() if _fusable(child) else None
        if fused is not None:
            setattr(module, name, fused.eval())
        elif not isinstance(child, FusedModule):
            _replace(child)


__all__ = ['can_fuse', 'fuse_for_cpu_inference']
