"""Every shipped config loads (at collection), and every distinct model among them builds in its
own toolbox and runs one forward."""
import glob
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from tests.conftest import REPO

CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


def _strip_pretrained(model_cfg):
    backbone = model_cfg.get('backbone')
    if backbone is not None:
        backbone['init_cfg'] = None
        backbone.pop('pretrained', None)
    if 'pretrained' in model_cfg:
        model_cfg['pretrained'] = None
    if 'module' in model_cfg:  # wrappers (e.g. TTA / aux-loss) hold the real model
        _strip_pretrained(model_cfg['module'])


def _build(cfg):
    scope = cfg.default_scope
    init_default_scope(scope)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    _strip_pretrained(cfg.model)
    model = revert_sync_batchnorm(registry.build(cfg.model))
    model.init_weights()
    return model.eval()


def _forward_cls(model, cfg):
    out = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, cfg.model.head.num_classes)


def _forward_det(model, cfg):
    from mmdet.structures import DetDataSample
    img = (torch.rand(3, 96, 128) * 255).to(torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128),
                                         scale_factor=(1.0, 1.0), pad_shape=(96, 128),
                                         batch_input_shape=(96, 128)))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]), False)
    results = model(**data, mode='predict')
    assert len(results) == 1 and hasattr(results[0], 'pred_instances')


def _forward_seg(model, cfg):
    from mmseg.structures import SegDataSample
    h, w = 64, 80
    model.data_preprocessor.size = None  # no padding to the 512 crop: keep it cheap
    model.data_preprocessor.size_divisor = 32
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, h, w, dtype=torch.long))
    data = model.data_preprocessor(
        dict(inputs=[(torch.rand(3, h, w) * 255).to(torch.uint8)], data_samples=[sample]), False)
    results = model(**data, mode='predict')
    assert results[0].pred_sem_seg.data.shape[-2:] == (h, w)


FORWARD = dict(mmpretrain=_forward_cls, mmdet=_forward_det, mmseg=_forward_seg)


def _distinct_models():
    """Configs grouped by (toolbox, model): schedules of one model share one build."""
    groups = {}
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        key = (cfg.get('default_scope'), repr(cfg.model.to_dict()))
        groups.setdefault(key, []).append(path)
    return [paths[0] for paths in groups.values()]


MODEL_CONFIGS = _distinct_models()


def test_there_are_configs_for_every_family():
    families = {osp.basename(osp.dirname(p)) for p in CONFIGS}
    assert {'rmt', 'groupmixformer', 'pale', 'lavit', 'demo'} <= families
    assert len(MODEL_CONFIGS) < len(CONFIGS)  # e.g. 1x and 3x schedules share their model


# The full-size models take seconds each to build (77 of them): slow; the demo ones stay in the
# fast loop.
@pytest.mark.parametrize('path', [
    pytest.param(p, id=osp.relpath(p, REPO),
                 marks=() if osp.basename(osp.dirname(p)) == 'demo' else pytest.mark.slow)
    for p in MODEL_CONFIGS])
def test_config_builds_and_forwards(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope in FORWARD, f'{path}: default_scope {cfg.default_scope!r}'
    torch.manual_seed(0)
    model = _build(cfg)
    with torch.no_grad():
        FORWARD[cfg.default_scope](model, cfg)
