"""What is exported, at which sizes, and ``torch.export`` with dynamic H and W.

:func:`build_deployable` turns a config (and a checkpoint, loaded strictly by
:func:`mmvit_ext.get_model` through the package's safe loader) into a module of one image tensor:

* an mmpretrain classifier: the class scores (``mode='tensor'``, before softmax);
* an mmdet / mmseg model: backbone + neck, the neck's maps (the heads, with RoI and NMS
  post-processing, are not ours to export, see README "Deployment");
* ``part='backbone'``: the backbone's maps.

The input is the preprocessed image (normalised, padded), what the data preprocessor returns.
The plain modules are exported: the fused CPU copies of :func:`mmvit_ext.fuse_for_cpu_inference`
call oneDNN kernels no exporter knows.

A program exported with dynamic H and W is valid for the sides the backbone's ``size_divisor``
divides (:func:`check_size`): those for which every stage computes the same graph.
"""
import math

import torch
from torch.export import Dim

#: Smallest and largest side of a dynamic export, in pixels: a side of 32 makes a one-pixel
#: stage-4 map, which broadcasts (another graph).
MIN_SIDE, MAX_SIDE = 64, 8192


class SizeConstraintError(ValueError):
    """An input size outside what a dynamic export holds for."""


class ImageModel(torch.nn.Module):
    """One image tensor in, the chosen part's outputs out (a tensor or a tuple of maps)."""

    def __init__(self, model, part):
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, inputs):
        if self.part == 'backbone':
            return self.model.backbone(inputs)
        if self.part == 'classifier':
            return self.model(inputs, mode='tensor')
        return self.model.extract_feat(inputs)  # backbone + neck


def build_deployable(config, checkpoint=None, part='auto', cfg_options=None):
    """The exportable module of a config, in eval mode on the CPU.

    Args:
        config (str): A config file (or a name of ``mmvit_ext.list_models()``).
        checkpoint (str, optional): Weights, loaded strictly; None keeps the initialisation.
        part (str): ``'auto'`` (classifier for mmpretrain configs, ``'backbone+neck'`` for mmdet
            and mmseg), ``'classifier'``, ``'backbone+neck'`` or ``'backbone'``.
        cfg_options (dict, optional): Merged into the config's ``model``.

    Returns:
        tuple: ``(module, size_divisor)``, ``size_divisor`` the backbone's ``(div_h, div_w)``.
    """
    from mmengine.model import revert_sync_batchnorm

    from mmvit_ext.apis import get_model
    model = get_model(config, pretrained=checkpoint or False, device='cpu', **(cfg_options or {}))
    scope = model.cfg.get('default_scope', 'mmpretrain')
    if part == 'auto':
        part = 'classifier' if scope == 'mmpretrain' else 'backbone+neck'
    if part not in ('classifier', 'backbone+neck', 'backbone'):
        raise ValueError(f'part must be auto, classifier, backbone+neck or backbone, got {part!r}.')
    if part == 'classifier' and scope != 'mmpretrain':
        raise ValueError(f'part="classifier" needs an mmpretrain config; this one is {scope}.')
    backbone = model.backbone
    if not hasattr(backbone, 'size_divisor'):
        raise ValueError(f'{type(backbone).__name__} is not a backbone of mmvit_ext.')
    # SyncBN (the det/seg configs' norm) computes as BN in eval mode; BN is what exporters know
    module = ImageModel(revert_sync_batchnorm(model), part).eval()
    return module, backbone.size_divisor


def check_size(shape, divisor):
    """Raise :class:`SizeConstraintError` unless ``shape = (H, W)`` is a valid size of a dynamic
    export: multiples of ``divisor = (div_h, div_w)`` in [:data:`MIN_SIDE`, :data:`MAX_SIDE`]."""
    if any(s % d or not MIN_SIDE <= s <= MAX_SIDE for s, d in zip(shape, divisor)):
        raise SizeConstraintError(
            f'{tuple(shape)}: a dynamic export holds for H a multiple of {divisor[0]} and W a '
            f'multiple of {divisor[1]}, from {MIN_SIDE} to {MAX_SIDE}, where every stage of '
            f'the backbone computes the same graph.')


def other_size(shape, divisor):
    """A second valid size, larger by one step of the divisor in both sides (another aspect
    ratio), to check that an export follows the input size."""
    return tuple(s + d for s, d in zip(shape, divisor))


def dynamic_shapes(divisor):
    """``dynamic_shapes`` of ``torch.export`` for an image batch: the batch size free, H and W
    free multiples of ``divisor``."""
    steps_h, steps_w = (Dim(f'steps_{axis}', min=-(-MIN_SIDE // d), max=MAX_SIDE // d)
                        for axis, d in zip('hw', divisor))
    return {'inputs': {0: Dim('batch', min=1, max=1024), 2: divisor[0] * steps_h,
                       3: divisor[1] * steps_w}}


def export_program(module, shape, divisor=None):
    """``torch.export`` of ``module`` on a (B, 3, H, W) input; with ``divisor`` B is dynamic
    and H and W are (multiples of it), without it the program has the fixed size (1, 3, *shape).
    """
    # inference: without gradients, no training-step kernel choice enters the program
    with torch.no_grad():
        return torch.export.export(module, (example_input(shape, divisor), ),
                                   dynamic_shapes=dynamic_shapes(divisor) if divisor else None)


def example_input(shape, divisor):
    """The input a program is traced with; two images for a dynamic batch (a size-1 dimension
    is specialised by the tracer)."""
    if divisor is None:
        return torch.randn(1, 3, *shape)
    check_size(shape, divisor)
    return torch.randn(2, 3, *shape)


def max_abs_diff(outputs, references):
    """Largest absolute difference over matching outputs (tensors or tuples of tensors)."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    references = references if isinstance(references, (tuple, list)) else [references]
    if len(outputs) != len(references):
        raise ValueError(f'{len(outputs)} outputs against {len(references)} references.')
    diffs = [math.inf if tuple(o.shape) != tuple(r.shape) else
             (torch.as_tensor(o).double() - torch.as_tensor(r).double()).abs().max().item()
             for o, r in zip(outputs, references)]
    return max(diffs)
