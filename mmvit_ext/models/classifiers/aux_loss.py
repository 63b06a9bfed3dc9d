"""Models that add their backbone's auxiliary losses (e.g. LaViT's ``loss_diag``) to the loss dict.

``BackboneAuxLossMixin`` goes in front of any OpenMMLab model class whose ``loss()`` runs the
backbone once (mmpretrain ``ImageClassifier``, mmdet detectors, mmseg ``EncoderDecoder``). The
backbone must have ``pop_aux_losses()`` returning ``{name: tensor}`` for its latest forward.

Registered ready-made models (configs: ``model = dict(type='mmvit_ext.AuxLossMaskRCNN', ...)``
with the usual arguments of the wrapped class):

* ``AuxLossImageClassifier`` (mmpretrain ``ImageClassifier``)
* ``AuxLossMaskRCNN``, ``AuxLossCascadeRCNN``, ``AuxLossRetinaNet`` (mmdet)
* ``AuxLossEncoderDecoder`` (mmseg)

Each name is registered as a small builder that imports its toolbox on first use, so importing
``mmvit_ext`` does not import (or require) mmpretrain, mmdet or mmseg. The built object is an
instance of ``with_backbone_aux_loss(WrappedClass)``, a subclass of the toolbox class.
"""
import importlib

from mmvit_ext.registry import MODELS


class BackboneAuxLossMixin:
    """Adds ``self.backbone.pop_aux_losses()`` to the dict returned by ``loss()``.

    Losses left over from a forward outside ``loss()`` are discarded before the wrapped
    ``loss()`` runs, so the dict only ever holds the auxiliary losses of this very forward.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not callable(getattr(self.backbone, 'pop_aux_losses', None)):
            raise TypeError(f'{type(self).__name__} needs a backbone with pop_aux_losses() '
                            f'(e.g. mmvit_ext.LaViT); got {type(self.backbone).__name__}. Use '
                            f'the plain {type(self).__mro__[2].__name__} instead.')

    def loss(self, *args, **kwargs):
        self.backbone.pop_aux_losses()
        losses = super().loss(*args, **kwargs)
        aux_losses = self.backbone.pop_aux_losses()
        clash = sorted(set(aux_losses) & set(losses))
        if clash:
            raise KeyError(f'Backbone auxiliary losses {clash} clash with the losses of '
                           f'{type(self).__name__}; rename them.')
        losses.update(aux_losses)
        return losses


_subclasses = {}


def with_backbone_aux_loss(model_cls):
    """Return the (cached) subclass ``BackboneAuxLossMixin`` + ``model_cls``."""
    if model_cls not in _subclasses:
        _subclasses[model_cls] = type(f'AuxLoss{model_cls.__name__}',
                                      (BackboneAuxLossMixin, model_cls),
                                      {'__module__': __name__, '__doc__': model_cls.__doc__})
    return _subclasses[model_cls]


def _register_lazy(name, module, class_name):

    def build(**kwargs):
        model_cls = getattr(importlib.import_module(module), class_name)
        return with_backbone_aux_loss(model_cls)(**kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f'Build ``{module}.{class_name}`` with the backbone auxiliary losses '
                     f'added to its loss dict (see ``BackboneAuxLossMixin``).')
    MODELS.register_module(name=name, module=build)


_register_lazy('AuxLossImageClassifier', 'mmpretrain.models.classifiers', 'ImageClassifier')
_register_lazy('AuxLossMaskRCNN', 'mmdet.models.detectors', 'MaskRCNN')
_register_lazy('AuxLossCascadeRCNN', 'mmdet.models.detectors', 'CascadeRCNN')
_register_lazy('AuxLossRetinaNet', 'mmdet.models.detectors', 'RetinaNet')
_register_lazy('AuxLossEncoderDecoder', 'mmseg.models.segmentors', 'EncoderDecoder')
