"""Models by name: the model index (``model-index.yml`` and the families' metafiles).

``get_model`` builds any model of the index (classification, detection, segmentation) from its
config, the way ``mmpretrain.get_model`` does for mmpretrain's own names;
``register_mmpretrain_models`` makes ``mmpretrain.get_model`` know our names as well.
"""
import os.path as osp

import yaml

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))


def index_root():
    """The folder holding ``model-index.yml`` and ``configs/``.

    In a clone (imported through ``PYTHONPATH`` or installed editable) that is the repository
    root, whose files are the current ones; an installed package has them in its ``.mim``
    folder (as the OpenMMLab toolboxes do).
    """
    for root in (osp.dirname(PACKAGE_DIR), osp.join(PACKAGE_DIR, '.mim')):
        if osp.isfile(osp.join(root, 'model-index.yml')):
            return root
    raise FileNotFoundError(
        f'No model-index.yml in {osp.join(PACKAGE_DIR, ".mim")} or next to the package: '
        f'reinstall mmvit_ext (`pip install .` copies it into the package).')


def load_model_index(root=None):
    """{model name (lower case): its metafile entry}, with ``Config`` an absolute path."""
    root = root or index_root()
    with open(osp.join(root, 'model-index.yml')) as f:
        metafiles = yaml.safe_load(f)['Import']
    models = {}
    for metafile in metafiles:
        with open(osp.join(root, metafile)) as f:
            for entry in yaml.safe_load(f)['Models']:
                name = entry['Name'].lower()
                if name in models:
                    raise ValueError(f'Model name {entry["Name"]} appears twice in the model '
                                     f'index ({metafile}).')
                models[name] = dict(entry, Config=osp.join(root, entry['Config']),
                                    Metafile=metafile)
    return models


def list_models(pattern=None, task=None):
    """Names of the index, optionally filtered by a ``fnmatch`` pattern and a task (the
    config's toolbox scope: ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'``)."""
    import fnmatch
    names = sorted(load_model_index())
    if pattern:
        names = fnmatch.filter(names, pattern.lower())
    if task:
        names = [n for n in names if _scope_of(n) == task]
    return names


def _scope_of(name):
    """The toolbox of a model name, from its config name (the OpenMMLab naming scheme)."""
    algorithm = name.split('_')[0]
    if algorithm in ('mask-rcnn', 'cascade-mask-rcnn', 'retinanet'):
        return 'mmdet'
    if algorithm in ('upernet', 'fpn'):
        return 'mmseg'
    return 'mmpretrain'


def get_model(model, pretrained=False, device=None, **kwargs):
    """Build a model of mmvit_ext's index by name, or from a config file.

    Args:
        model (str): a name of the index (``mmvit_ext.list_models()``), e.g.
            ``'rmt-s_8xb128_in1k'``, ``'mask-rcnn_rmt-s_fpn_1x_coco'``,
            ``'upernet_rmt-s_8xb2-160k_ade20k-512x512'``, or the path of a config file.
        pretrained (bool | str): ``False``, or a checkpoint: a file, or a URL or other place
            mmengine's checkpoint schemes know, loaded safely (``weights_only=True``) and
            strictly (every key must match). The index lists no downloadable weights, so
            ``True`` is an error.
        device (str | torch.device, optional): where to put the model.
        **kwargs: merged into the config's ``model`` (e.g. ``backbone=dict(out_indices=(3,))``,
            ``head=dict(num_classes=10)``).

    Returns:
        torch.nn.Module: the model of the config's toolbox, in eval mode.
    """
    from mmvit_ext.utils.config import build_from_config, load_config

    if osp.isfile(model):
        config, name = model, osp.splitext(osp.basename(model))[0]
    else:
        models = load_model_index()
        if model.lower() not in models:
            raise ValueError(f'"{model}" is not a model of mmvit_ext; mmvit_ext.list_models() '
                             f'lists the {len(models)} names (or pass a config file path).')
        config, name = models[model.lower()]['Config'], model
    if pretrained is True:
        raise ValueError(f'mmvit_ext publishes no weights for {name}; pass the path of a '
                         f'checkpoint (e.g. one converted with tools/model_converters/ or '
                         f'trained with tools/train.py) as pretrained=...')
    cfg = load_config(config, cfg_options=dict(model=kwargs) if kwargs else None)
    net = build_from_config(cfg, checkpoint=pretrained or None)
    net.cfg = cfg
    if device is not None:
        net.to(device)
    return net


def register_mmpretrain_models():
    """Make ``mmpretrain.get_model`` / ``mmpretrain.list_models`` know this package's names.

    mmpretrain's model hub reads only mmpretrain's own index; this adds ours (once). The
    detection and segmentation names are built by ``mmvit_ext.get_model``.
    """
    global _mmpretrain_registered
    if _mmpretrain_registered:
        return
    from mmpretrain.apis import ModelHub
    root = index_root()
    ModelHub.register_model_index(osp.join(root, 'model-index.yml'), config_prefix=root)
    _mmpretrain_registered = True


_mmpretrain_registered = False
