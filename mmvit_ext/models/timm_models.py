"""The four families as timm models: ``import mmvit_ext.models.timm_models`` registers

    rmt_t rmt_s rmt_b rmt_l   groupmixformer_m groupmixformer_t groupmixformer_s
    groupmixformer_b groupmixformer_l   pale_t pale_s pale_b   lavit_t lavit_s lavit_b

with ``timm.create_model`` (classifier, ``num_classes``, ``features_only`` / ``out_indices``,
``pretrained`` from a local file through ``pretrained_cfg_overlay=dict(file=...)``).

Each model is the family's ImageNet config (``configs/<family>/<name>_8xb128_in1k.py``) built
from this package's modules: ``backbone`` (the mmvit_ext backbone), ``neck`` (its
``NormPoolNeck``, or plain average pooling) and ``head.fc``. These are the submodule names of
an mmpretrain ``ImageClassifier``, so a checkpoint trained with ``tools/train.py`` on such a
config (or converted with ``tools/model_converters/``) loads strictly.
"""
import torch.nn as nn
from mmengine.config import Config
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from mmvit_ext.apis import load_model_index
from mmvit_ext.registry import MODELS
from mmvit_ext.utils.checkpoint import load_timm_pretrained

# timm name -> the model-index name of the config it is built from
TIMM_VARIANTS = {
    **{f'rmt_{v}': f'rmt-{v}_8xb128_in1k' for v in 'tsbl'},
    **{f'groupmixformer_{v}': f'groupmixformer-{v}_8xb128_in1k' for v in 'mtsbl'},
    **{f'pale_{v}': f'pale-{v}_8xb128_in1k' for v in 'tsb'},
    **{f'lavit_{v}': f'lavit-{v}_8xb128_in1k' for v in 'tsb'},
}


class GlobalAvgPool(nn.Module):
    """The parameter-free neck of configs that use mmpretrain's ``GlobalAveragePooling``."""

    def forward(self, inputs):
        return (inputs[-1].mean(dim=(2, 3)), )


class LinearHead(nn.Module):
    """``fc(dropout(x))``; ``fc`` is named as in mmpretrain's ``LinearClsHead``."""

    def __init__(self, in_features, num_classes, drop_rate=0.):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.fc(self.drop(x))


def _single_process_norm(cfg):
    """SyncBN -> BN (same parameters and buffers): a timm model runs outside a process group."""
    if cfg.get('norm_cfg', {}).get('type') == 'SyncBN':
        cfg.norm_cfg = dict(cfg.norm_cfg, type='BN')
    return cfg


class MMViTClassifier(nn.Module):
    """A family's ImageNet classifier with the timm model interface.

    Args:
        config (str): the classification config file to build from.
        num_classes (int): classes of ``head.fc``; 0 gives the pooled features.
        in_chans (int): input channels (the backbone's ``in_channels``).
        drop_rate (float): dropout before ``head.fc``.
        drop_path_rate (float, optional): overrides the config's stochastic depth.
        **backbone_kwargs: further arguments of the backbone (e.g. ``with_cp=True``).
    """

    def __init__(self, config, num_classes=1000, in_chans=3, drop_rate=0., drop_path_rate=None,
                 **backbone_kwargs):
        super().__init__()
        model_cfg = Config.fromfile(config).model
        backbone_cfg = _single_process_norm(model_cfg.backbone)
        backbone_cfg.type = backbone_cfg.type.split('.')[-1]
        num_stages = len(MODELS.get(backbone_cfg.type).resolve_arch(backbone_cfg.arch)['depths'])
        # every stage's output: forward_intermediates serves any out_indices
        backbone_cfg.update(out_indices=tuple(range(num_stages)), in_channels=in_chans,
                            init_cfg=None)
        if drop_path_rate is not None:
            backbone_cfg.drop_path_rate = drop_path_rate
        backbone_cfg.update(backbone_kwargs)
        self.backbone = MODELS.build(backbone_cfg.to_dict())
        neck_cfg = model_cfg.neck
        if neck_cfg.type.split('.')[-1] == 'GlobalAveragePooling':
            self.neck = GlobalAvgPool()
        else:
            neck_cfg.type = neck_cfg.type.split('.')[-1]
            self.neck = MODELS.build(_single_process_norm(neck_cfg).to_dict())
        self.num_features = self.head_hidden_size = model_cfg.head.in_channels
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head = LinearHead(self.num_features, num_classes, drop_rate)
        dims = self.backbone.arch['embed_dims']
        self.feature_info = [dict(num_chs=c, reduction=4 * 2**i, module=f'backbone.stages.{i}')
                             for i, c in enumerate(dims)]

    # -- the timm interface -------------------------------------------------------------------
    def get_classifier(self):
        return self.head.fc

    def reset_classifier(self, num_classes, global_pool=None):
        if global_pool not in (None, 'avg'):
            raise ValueError(f'{type(self).__name__} pools by averaging only (global_pool='
                             f'"avg"), got {global_pool!r}.')
        self.num_classes = num_classes
        self.head = LinearHead(self.num_features, num_classes, self.drop_rate)

    def forward_features(self, x):
        """The last stage's map, (B, C, H, W)."""
        return self.backbone(x)[-1]

    def forward_head(self, x, pre_logits=False):
        x = self.neck((x, ))[0]
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def _stage_indices(self, indices):
        num_stages = len(self.feature_info)
        if indices is None:
            indices = tuple(range(num_stages))
        elif isinstance(indices, int):  # timm: an int means "the last n"
            indices = tuple(range(num_stages - indices, num_stages))
        indices = tuple(i + num_stages if i < 0 else i for i in indices)
        bad = [i for i in indices if not 0 <= i < num_stages]
        if bad:
            raise ValueError(f'Stage indices {bad} out of range: this model has {num_stages} '
                             f'stages (0..{num_stages - 1}).')
        return indices

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False,
                              output_fmt='NCHW', intermediates_only=False):
        """timm's feature API: the NCHW maps of the stages in ``indices``."""
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt must be "NCHW", got {output_fmt!r}.')
        indices = self._stage_indices(indices)
        outs = self.backbone(x)
        intermediates = [outs[i] for i in indices]
        if intermediates_only:
            return intermediates
        return outs[-1], intermediates

    def load_pretrained(self, path):
        """timm's loader of ``pretrained`` weights (``custom_load``): this package's, which
        loads safely, verifies the SHA-256 and matches strictly."""
        load_timm_pretrained(self, path)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Features only: drop the neck and head (timm calls this for ``features_only``)."""
        indices = self._stage_indices(indices)
        if prune_head:
            self.neck = nn.Identity()
            self.reset_classifier(0)
        return indices


def _create(variant, pretrained=False, **kwargs):
    config = load_model_index()[TIMM_VARIANTS[variant]]['Config']
    # a file or url of pretrained weights goes to MMViTClassifier.load_pretrained (timm resets
    # custom_load when the overlay names a file, hence set here)
    kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {},
                                            custom_load=True)
    return build_model_with_cfg(
        MMViTClassifier, variant, pretrained, config=config,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(variant):
    return dict(
        url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv=None, classifier='head.fc')


# no weights are published: pretrained=True needs pretrained_cfg_overlay=dict(file=...)
default_cfgs = generate_default_cfgs({variant: _cfg(variant) for variant in TIMM_VARIANTS})


def _entry_point(variant):
    def create(pretrained=False, **kwargs):
        return _create(variant, pretrained, **kwargs)
    create.__name__ = create.__qualname__ = variant
    create.__module__ = __name__
    create.__doc__ = f'{TIMM_VARIANTS[variant]} (configs/) as a timm model.'
    return create


for _variant in TIMM_VARIANTS:
    globals()[_variant] = register_model(_entry_point(_variant))
