"""Layer-wise learning-rate decay for mmpretrain, mmdet and mmseg models.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the whole model for
``get_layer_depth``, and mmdet/mmseg's constructors know only ConvNeXt/BEiT/MAE by class name.
This constructor asks the *backbone* (``model.backbone``, or the model itself when it is a bare
backbone), which every backbone of this package implements through ``BaseBackbone``, so one
config line works in all three toolboxes::

    optim_wrapper = dict(
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        constructor='mmvit_ext.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.9, norm_decay_mult=0., bias_decay_mult=0.,
                           custom_keys={'head': dict(lr_mult=10.)}))
"""
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mmvit_ext.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` plus layer-wise lr decay.

    ``paramwise_cfg`` takes everything the default constructor does (``custom_keys`` with
    ``lr_mult``/``decay_mult``, ``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult``,
    ``dwconv_decay_mult``, ``bypass_duplicate``...) and ``layer_decay_rate`` (default 1.0).
    Each parameter's lr is then multiplied by
    ``layer_decay_rate ** (num_layers - 1 - layer_id)``, with ``(layer_id, num_layers)`` from
    ``backbone.get_layer_depth(param_name, prefix='backbone.')``: the stem gets the smallest lr,
    the last block (and neck/head, which get the last id) the full lr. Param groups carry
    ``layer_id`` and ``lr_scale`` for inspection.
    """

    def add_params(self, params, module, prefix='', **kwargs):
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix == '':  # the top-level call, after the recursion has built every group
            self._apply_layer_decay(params, module)

    def _apply_layer_decay(self, params, model):
        decay_rate = self.paramwise_cfg.get('layer_decay_rate', 1.0)
        get_layer_depth = self._layer_depth_fn(model)
        names = {id(p): name for name, p in model.named_parameters()}
        num_layers = None
        for group in params:
            name = names[id(group['params'][0])]
            layer_id, num_layers = get_layer_depth(name)
            scale = decay_rate**(num_layers - 1 - layer_id)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['lr_scale'] = scale
            group['layer_id'] = layer_id
        if num_layers is None:
            return
        MMLogger.get_current_instance().info(
            f'Layer-wise lr decay {decay_rate}: {num_layers} layers, lr scale '
            f'{decay_rate**(num_layers - 1):.3g} (stem) to 1 (last block, neck, head).')

    @staticmethod
    def _layer_depth_fn(model):
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'get_layer_depth'):
            return lambda name: backbone.get_layer_depth(name, prefix='backbone.')
        if backbone is None and hasattr(model, 'get_layer_depth'):
            return model.get_layer_depth
        owner = type(backbone if backbone is not None else model).__name__
        raise NotImplementedError(
            f'LayerDecayOptimWrapperConstructor needs `get_layer_depth(param_name, prefix)` on '
            f'the backbone, which {owner} does not implement. Use a mmvit_ext backbone (they '
            f'all inherit it from BaseBackbone) or drop layer_decay_rate and use the default '
            f'constructor.')
