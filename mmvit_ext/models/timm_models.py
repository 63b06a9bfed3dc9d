"""The families as timm models: ``import mmvit_ext.models.timm_models`` registers the timm
variants every family declares (``Family.timm_variants``, e.g. ``rmt_s``; a family registered
later is added then) with ``timm.create_model`` (classifier, ``num_classes``, ``features_only``
/ ``out_indices``, ``pretrained`` from a local file through
``pretrained_cfg_overlay=dict(file=...)``).

Each model is the family's ImageNet config (``configs/<family>/<name>_8xb128_in1k.py``) built
from this package's modules: ``backbone`` (the mmvit_ext backbone), ``neck`` (its
``NormPoolNeck``, or plain average pooling) and ``head.fc``. These are the submodule names of
an mmpretrain ``ImageClassifier``, so a checkpoint trained with ``tools/train.py`` on such a
config (or converted with ``tools/model_converters/``) loads strictly.

A model is initialised as ``tools/train.py`` initialises the config's classifier. The timm
interface is that of timm's own models (``tests/test_models/test_timm_upstream.py`` runs timm's
``tests/test_models.py`` on them): ``device`` / ``dtype`` / ``in_chans`` / ``global_pool``
arguments, building on the ``meta`` device, ``reset_classifier``, ``set_grad_checkpointing``,
``forward_intermediates``, ``prune_intermediate_layers`` and torch.fx tracing.
"""
import contextlib
import logging
import os.path as osp

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import initialize
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import _fx, get_device_dtype
from timm.models import (_registry, build_model_with_cfg, generate_default_cfgs, register_model,
                         register_notrace_module)
from timm.models._features import feature_take_indices

from mmvit_ext.apis import load_model_index
from mmvit_ext.registry import MODELS
from mmvit_ext.checkpoint import load_timm_pretrained
from .families import watch

# timm name -> the config it is built from (a model-index name or a config file), of every
# registered family
TIMM_VARIANTS = {}

# the default init_cfg of mmpretrain's LinearClsHead (the head of every config), for the configs
# that give none
LINEAR_CLS_HEAD_INIT = dict(type='Normal', layer='Linear', std=0.01)


class GlobalAvgPool(nn.Module):
    """The parameter-free neck of configs that use mmpretrain's ``GlobalAveragePooling`` (and
    of pruned models): nothing before the pooling."""

    def forward(self, inputs):
        return (inputs[-1].mean(dim=(2, 3)), )

    def pre_pool(self, x):
        return x


class LinearHead(nn.Module):
    """``fc(dropout(x))``; ``fc`` is named as in mmpretrain's ``LinearClsHead``."""

    def __init__(self, in_features, num_classes, drop_rate=0., device=None, dtype=None):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes, device=device, dtype=dtype) \
            if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.fc(self.drop(x))


def _single_process_norm(cfg):
    """SyncBN -> BN (same parameters and buffers): a timm model runs outside a process group."""
    if cfg.get('norm_cfg', {}).get('type') == 'SyncBN':
        cfg.norm_cfg = dict(cfg.norm_cfg, type='BN')
    return cfg


class MMViTClassifier(nn.Module):
    """A family's ImageNet classifier with the timm model interface.

    ``forward_features`` returns the last stage's map (``num_features`` channels); the head
    applies the neck's per-pixel part (RMT: ``Linear(512, 1024)``, BN and Swish; Pale: LN;
    GroupMixFormer: BN; LaViT: nothing), average pooling (``head_hidden_size`` channels, the
    pre-logits) and ``head.fc``.

    Args:
        config (str): the classification config file to build from.
        num_classes (int): classes of ``head.fc``; 0 gives the pre-logits.
        in_chans (int): input channels (the backbone's ``in_channels``).
        global_pool (str): ``'avg'``, or ``''``: no pooling, the pre-logits map (and the
            logits at every position).
        drop_rate (float): dropout before ``head.fc``.
        drop_path_rate (float, optional): overrides the config's stochastic depth.
        device, dtype: where and in which dtype the parameters are created (``'meta'``
            allocates nothing).
        **backbone_kwargs: further arguments of the backbone (e.g. ``with_cp=True``).
    """

    def __init__(self, config, num_classes=1000, in_chans=3, global_pool='avg', drop_rate=0.,
                 drop_path_rate=None, device=None, dtype=None, **backbone_kwargs):
        super().__init__()
        _check_pool(global_pool)
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
        neck_cfg = model_cfg.neck
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.backbone = MODELS.build(backbone_cfg.to_dict())
            if neck_cfg.type.split('.')[-1] == 'GlobalAveragePooling':
                self.neck = GlobalAvgPool()
            else:
                neck_cfg.type = neck_cfg.type.split('.')[-1]
                self.neck = MODELS.build(_single_process_norm(neck_cfg).to_dict())
            self.head = LinearHead(model_cfg.head.in_channels, num_classes, drop_rate)
            self.init_cfg = model_cfg.get('init_cfg')
            self.head_init_cfg = model_cfg.head.get('init_cfg', LINEAR_CLS_HEAD_INIT)
            if not any(p.is_meta for p in self.parameters()):  # meta tensors hold no values
                self.init_weights()
        dims = self.backbone.arch['embed_dims']
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = dims[-1]
        self.head_hidden_size = model_cfg.head.in_channels
        self.feature_info = [dict(num_chs=c, reduction=4 * 2**i, module=f'backbone.stages.{i}')
                             for i, c in enumerate(dims)]
        if dtype is not None:
            self.to(dtype=dtype)

    def init_weights(self):
        """The initialisation ``tools/train.py`` gives the config's classifier, in its order: the
        classifier's ``init_cfg``, the backbone's (its ``default_init_cfg``, then its modules'
        own), the head's ``init_cfg``."""
        if self.init_cfg:
            initialize(self, self.init_cfg)
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # mmengine logs every parameter's init at INFO
        try:
            self.backbone.init_weights()
        finally:
            logger.setLevel(level)
        if self.head_init_cfg:
            initialize(self.head, self.head_init_cfg)

    # -- the timm interface -------------------------------------------------------------------
    def get_classifier(self):
        return self.head.fc

    def reset_classifier(self, num_classes, global_pool=None):
        """A new ``head.fc`` for ``num_classes`` (0: none); ``global_pool`` ``'avg'`` or ``''``
        (None keeps the current pooling)."""
        global_pool = self.global_pool if global_pool is None else global_pool
        _check_pool(global_pool)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.head = LinearHead(self.head_hidden_size, num_classes, self.drop_rate,
                               **get_device_dtype(self)).train(self.training)

    def set_grad_checkpointing(self, enable=True):
        """Activation checkpointing of every backbone block in training (the backbones'
        ``with_cp``)."""
        self.backbone.with_cp = enable

    def forward_features(self, x):
        """The last stage's map, (B, num_features, H / 32, W / 32)."""
        return self.backbone(x)[-1]

    def forward_head(self, x, pre_logits=False):
        x = self.neck.pre_pool(x)
        if not self.global_pool:  # the unpooled map, classified at every position
            return x if pre_logits else self.head(x.movedim(1, -1)).movedim(-1, 1)
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False,
                              output_fmt='NCHW', intermediates_only=False):
        """timm's feature API: the NCHW maps of the stages in ``indices`` and the final map.

        ``norm`` applies the neck's per-pixel part to the last stage's map where it keeps the
        channels (not RMT's, which projects them to ``head_hidden_size``). With ``stop_early``
        the final map is that of the last stage in ``indices``; the stages after it still run
        (``prune_intermediate_layers`` removes them).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt must be "NCHW", got {output_fmt!r}.')
        take_indices, max_index = feature_take_indices(len(self.backbone.stages), indices)
        outs = self.backbone(x)
        last = len(outs) - 1
        norm = norm and self.head_hidden_size == self.num_features
        intermediates = [self.neck.pre_pool(outs[i]) if norm and i == last else outs[i]
                         for i in take_indices]
        if intermediates_only:
            return intermediates
        return outs[max_index] if stop_early else outs[-1], intermediates

    def load_pretrained(self, path):
        """timm's loader of ``pretrained`` weights (``custom_load``): this package's, which
        loads safely, verifies the SHA-256 and matches strictly."""
        load_timm_pretrained(self, path)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Remove the stages after the last of ``indices``, the neck with them or with
        ``prune_norm``, and with ``prune_head`` the classifier and the pooling. Returns the
        absolute stage indices."""
        backbone = self.backbone
        take_indices, max_index = feature_take_indices(len(backbone.stages), indices)
        prune_end = max_index < len(backbone.stages) - 1
        if prune_end:
            keep = max_index + 1
            backbone.stages = backbone.stages[:keep]
            if getattr(backbone, 'out_norms', None) is not None:
                backbone.out_norms = backbone.out_norms[:keep]
            backbone.out_indices = tuple(range(keep))
            backbone.frozen_stages = min(backbone.frozen_stages, keep)
            self.feature_info = self.feature_info[:keep]
            self.num_features = self.feature_info[-1]['num_chs']
        if prune_norm or prune_end:
            # the neck is sized for the last stage's map
            self.neck = GlobalAvgPool()
            self.head_hidden_size = self.num_features
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices


def _check_pool(global_pool):
    # AssertionError as timm's heads raise it for a pooling they lack (timm's own code and
    # tests catch it)
    if global_pool not in ('avg', ''):
        raise AssertionError(f'Global pooling "avg" or "" (none) only, got {global_pool!r}.')


def _create(variant, pretrained=False, **kwargs):
    config = TIMM_VARIANTS[variant]
    if not osp.isfile(config):
        config = load_model_index()[config]['Config']
    # a file or url of pretrained weights goes to MMViTClassifier.load_pretrained (timm resets
    # custom_load when the overlay names a file, hence set here)
    kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {},
                                            custom_load=True)
    return build_model_with_cfg(
        MMViTClassifier, variant, pretrained, config=config,
        feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(family):
    return dict(
        url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv=family.timm_first_conv, classifier='head.fc')


# the pretrained cfgs timm's register_model reads from the module of an entry point; no weights
# are published: pretrained=True needs pretrained_cfg_overlay=dict(file=...)
default_cfgs = {}


def _entry_point(variant):
    def create(pretrained=False, **kwargs):
        return _create(variant, pretrained, **kwargs)
    create.__name__ = create.__qualname__ = variant
    create.__module__ = __name__
    create.__doc__ = f'{TIMM_VARIANTS[variant]} (configs/) as a timm model.'
    return create


def _follow(family, registered):
    """Register a family's timm models and notrace modules with timm, or remove them."""
    if registered:
        for module in family.notrace:
            register_notrace_module(module)
        TIMM_VARIANTS.update(family.timm_variants)
        default_cfgs.update(generate_default_cfgs(
            {variant: _cfg(family) for variant in family.timm_variants}))
        for variant in family.timm_variants:
            globals()[variant] = register_model(_entry_point(variant))
        return
    # timm has no public removal: undo what register_model and register_notrace_module added
    for module in family.notrace:
        _fx._leaf_modules.discard(module)
    for variant in family.timm_variants:
        _registry._clear_model_entries(variant)
        del _registry._model_entrypoints[variant]
        globals()['__all__'].remove(variant)  # register_model lists the entry point there
        del globals()[variant], default_cfgs[variant], TIMM_VARIANTS[variant]


watch(_follow)
