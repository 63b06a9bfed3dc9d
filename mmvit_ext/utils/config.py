"""Configs of the three toolboxes: the one config loader and the one model builder that the
tools, :func:`mmvit_ext.get_model` and the converters use."""
import copy
import importlib
import os.path as osp

# the ``default_scope`` of every config this package runs
TOOLBOX_SCOPES = ('mmpretrain', 'mmdet', 'mmseg')


def load_config(path, cfg_options=None):
    """``Config.fromfile(path)`` with ``cfg_options`` merged (a ``DictAction`` dict or a nested
    dict). Stops (``SystemExit``) with a message naming the file when it does not exist or its
    ``default_scope`` is none of :data:`TOOLBOX_SCOPES`."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise SystemExit(f'Config file not found: {path} (the file does not exist). Configs live '
                         f'under configs/ (e.g. configs/rmt/rmt-s_in1k.py, configs/demo/).')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in TOOLBOX_SCOPES:
        raise SystemExit(f'{path}: its default_scope is {scope!r}: `default_scope={scope!r}` '
                         f'names no toolbox these tools run; set it to one of '
                         f'{", ".join(TOOLBOX_SCOPES)} (in the config, or inherit a '
                         f'configs/_base_/default_runtime_*.py).')
    return cfg


def register_modules(scope, init_default_scope=False):
    """Register the modules of the toolbox ``scope`` and of this package (``init_default_scope``:
    make ``scope`` the process's default scope, which the toolboxes' data pipelines need)."""
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=init_default_scope)
    import mmvit_ext.models  # noqa: F401  registers this package's modules


def clear_pretrained(model_cfg):
    """Clear checkpoint loading anywhere in a model config: every ``pretrained`` and every
    ``Pretrained`` init_cfg (backbone, neck, heads)."""
    if isinstance(model_cfg, dict):
        if 'pretrained' in model_cfg:
            model_cfg['pretrained'] = None
        init_cfg = model_cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            model_cfg['init_cfg'] = None
        for value in model_cfg.values():
            clear_pretrained(value)
    elif isinstance(model_cfg, (list, tuple)):
        for value in model_cfg:
            clear_pretrained(value)


def build_from_config(cfg, checkpoint=None, training=False, inference_only=False):
    """``cfg.model`` built in its toolbox (with the config's top-level ``data_preprocessor``
    where the model names none, as mmengine's Runner does), loading no weights of the config (see
    :func:`clear_pretrained`; the backbone's ``init_cfg`` is dropped as well, since it would
    look for an ImageNet checkpoint that need not exist), SyncBN reverted to BN (one process).

    Args:
        cfg (Config): A config of :func:`load_config`.
        checkpoint (str, optional): Weights of the whole model, loaded safely
            (``weights_only=True``) and strictly; a file, URL or other mmengine scheme.
        training (bool): Return the model in train mode instead of eval mode.
        inference_only (bool): Drop what only training uses (mmseg's auxiliary head), as the
            toolboxes' own get_flops tools do.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    scope = cfg.default_scope
    register_modules(scope)
    model_cfg = copy.deepcopy(cfg.model)
    # a top-level data_preprocessor (mmpretrain's dataset configs) is the model's, as mmengine's
    # Runner and mmpretrain.get_model take it
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    clear_pretrained(model_cfg)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(scope):
        model = importlib.import_module(f'{scope}.registry').MODELS.build(model_cfg)
    model = revert_sync_batchnorm(model)
    if inference_only and scope == 'mmseg' and getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None
    if checkpoint:
        from mmengine.runner import load_checkpoint

        from mmvit_ext.checkpoint import install_safe_loading
        install_safe_loading()
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.train(training)
