"""Bad input to the entry points stops with a message that says what to do."""
import os.path as osp

import pytest

from tests.conftest import REPO, run_tool

TRAIN = osp.join(REPO, 'tools', 'train.py')


def _train(args, cwd):
    return run_tool([TRAIN] + args, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_missing_config_file(tmp_path):
    proc = _train(['configs/nope/nope.py'], tmp_path)
    assert proc.returncode != 0
    assert 'Config file not found: configs/nope/nope.py' in proc.stderr


@pytest.mark.slow
def test_unknown_default_scope(tmp_path):
    cfg = tmp_path / 'bad_scope.py'
    cfg.write_text("default_scope = 'mmfoo'\nmodel = dict(type='X')\n")
    proc = _train([str(cfg)], tmp_path)
    assert proc.returncode != 0
    assert "default_scope is 'mmfoo'" in proc.stderr
    assert 'mmpretrain, mmdet, mmseg' in proc.stderr


@pytest.mark.slow
def test_missing_dataset_root_names_path_and_remedy(tmp_path):
    cfg = osp.join(REPO, 'configs', 'demo', 'rmt-nano_1xb32_demo-cls.py')
    proc = _train([cfg], tmp_path)  # tmp_path has no data/demo
    assert proc.returncode != 0
    assert 'expects "data/demo/cls"' in proc.stderr
    assert 'tools/generate_demo_data.py' in proc.stderr


def test_unknown_mmvit_ext_type_lists_available(tmp_path):
    from mmpretrain.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    with pytest.raises(KeyError) as err:
        MODELS.build(dict(type='mmvit_ext.RTM'))
    message = str(err.value)
    assert '"RTM" is not a registered mmvit_ext model' in message
    for name in ('RMT', 'GroupMixFormer', 'PaleTransformer', 'LaViT', 'NormPoolNeck'):
        assert name in message


@pytest.mark.slow
def test_auto_scale_lr_without_base_batch(tmp_path, demo_root):
    cfg = osp.join(REPO, 'configs', 'demo', 'rmt-nano_1xb32_demo-cls.py')
    proc = _train([cfg, '--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None'], demo_root)
    assert proc.returncode != 0
    assert '--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)`' in proc.stderr
