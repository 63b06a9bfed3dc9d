"""mmengine's checkpoint loaders, replaced by safe ones when :func:`install_safe_loading` runs.

mmengine's ``CheckpointLoader`` knows schemes (local paths, ``http(s)://``, ``torchvision://``,
``open-mmlab://``, ``mmcls://``, ``pavi://``, ``s3://`` ...); a loader of this module for each
(``register_scheme``, mmengine's public extension point) downloads or finds the file as
mmengine does and loads it with :func:`~.loading.load_checkpoint_file`. So ``load_from``,
``--resume``, ``tools/test.py``, ``init_cfg=dict(type='Pretrained')``,
``get_model(pretrained=...)`` and the timm models' ``pretrained`` all load this way.
"""
import os
import os.path as osp
import tempfile
from collections import OrderedDict
from urllib.parse import urlparse

import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (DEFAULT_CACHE_DIR, ENV_MMENGINE_HOME, ENV_XDG_CACHE_HOME,
                                        CheckpointLoader, get_deprecated_model_names,
                                        get_external_models, get_mmcls_models,
                                        get_torchvision_models)

from .errors import CheckpointMismatchError, MissingCheckpointError
from .loading import load_checkpoint_file
from .matching import describe_mismatches, state_dict_mismatches


def load_from_local_weights_only(filename, map_location):
    return load_checkpoint_file(filename, map_location=map_location)


def _download(url, progress):
    """torch.hub's cache of ``url``, ``<hub dir>/checkpoints/<file name>`` (where mmengine's
    and torch.hub's loaders keep it), downloaded if not there yet."""
    model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        print_log(f'Downloading {url} to {cached}', logger='current')
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return cached


def load_from_http_weights_only(filename, map_location=None, progress=os.isatty(0)):
    rank, world_size = get_dist_info()
    if rank == 0:  # as mmengine: local rank 0 downloads, the others wait and use its file
        cached = _download(filename, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download(filename, progress)
    return load_checkpoint_file(cached, map_location=map_location,
                                name=f'{filename} (downloaded to {cached})')


def _model_url(filename, urls, what):
    model = filename.split('://', 1)[1]
    if model not in urls:
        raise MissingCheckpointError(f'{filename}: {what} has no model named {model}.')
    return urls[model]


def load_from_torchvision_weights_only(filename, map_location=None):
    url = _model_url(filename, get_torchvision_models(), 'torchvision')
    return load_from_http_weights_only(url, map_location=map_location)


def load_from_openmmlab_weights_only(filename, map_location=None):
    prefix, model = filename.split('://', 1)
    model = get_deprecated_model_names().get(model, model)
    url = _model_url(f'{prefix}://{model}', get_external_models(), 'the OpenMMLab model zoo')
    if url.startswith(('http://', 'https://')):
        return load_from_http_weights_only(url, map_location=map_location)
    home = osp.expanduser(os.getenv(ENV_MMENGINE_HOME, osp.join(
        os.getenv(ENV_XDG_CACHE_HOME, DEFAULT_CACHE_DIR), 'mmengine')))
    return load_checkpoint_file(osp.join(home, url), map_location=map_location, name=filename)


def load_from_mmcls_weights_only(filename, map_location=None):
    url = _model_url(filename, get_mmcls_models(), 'mmcls')
    checkpoint = load_from_http_weights_only(url, map_location=map_location)
    weights = checkpoint.get('state_dict', checkpoint)
    return {'state_dict': OrderedDict((k[len('backbone.'):], v) for k, v in weights.items()
                                      if k.startswith('backbone.'))}


def load_from_pavi_weights_only(filename, map_location=None):
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_checkpoint_file(downloaded, map_location=map_location, name=filename)


def load_from_ceph_weights_only(filename, map_location=None, backend='petrel'):
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    with tempfile.TemporaryDirectory() as tmp_dir:
        copy = osp.join(tmp_dir, 'checkpoint.pth')
        with open(copy, 'wb') as f:
            f.write(data)
        return load_checkpoint_file(copy, map_location=map_location, name=filename)


# every scheme mmengine registers, replaced (mmengine's public extension point)
SAFE_LOADERS = {
    '': load_from_local_weights_only,
    ('http://', 'https://'): load_from_http_weights_only,
    ('modelzoo://', 'torchvision://'): load_from_torchvision_weights_only,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab_weights_only,
    'mmcls://': load_from_mmcls_weights_only,
    'pavi://': load_from_pavi_weights_only,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph_weights_only,
}


def install_safe_loading():
    """Serve every scheme of mmengine's ``CheckpointLoader`` by the safe loaders above, for the
    whole process (``register_scheme(force=True)``). Calling it again changes nothing.

    Importing the package installs nothing; the entry points that load checkpoints call this:
    the tools, :func:`mmvit_ext.get_model`, the timm models' ``pretrained``,
    :func:`mmvit_ext.converters.ema.extract_weights` and ``SafeCheckpointHook`` (so that a
    run of a config that only ``custom_imports`` the plugin loads safely as well).
    """
    for prefixes, loader in SAFE_LOADERS.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)


def load_timm_pretrained(model, path):
    """The ``pretrained`` weights of a timm model of this package (timm's ``custom_load``),
    loaded as every checkpoint is and strictly, except for a classifier of another number of
    classes, which stays as initialised (as timm does it)."""
    install_safe_loading()
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    weights = dict(checkpoint.get('state_dict', checkpoint))
    own = model.state_dict()
    classifier = model.pretrained_cfg['classifier']
    replaced = [k for k in (f'{classifier}.weight', f'{classifier}.bias') if k in weights
                and (k not in own or own[k].shape != getattr(weights[k], 'shape', None))]
    for key in replaced:
        del weights[key]
    missing, unexpected, shapes = state_dict_mismatches(weights, model)
    missing = [k for k in missing if k not in replaced]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(describe_mismatches(
            path, model, missing, unexpected, shapes, hint='Is it the checkpoint of another '
                                                             'model?'))
    model.load_state_dict(weights, strict=False)
