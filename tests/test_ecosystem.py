"""Installation, packaging, the model index / openmim, and get_model."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO


def test_setup_env_refuses_to_delete_a_folder_it_did_not_create(tmp_path):
    env_dir = tmp_path / 'my_env'
    env_dir.mkdir()
    (env_dir / 'precious.txt').write_text('keep me')
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'setup_env.sh')],
                          env=dict(os.environ, MMVIT_EXT_ENV=str(env_dir)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'refusing to delete' in proc.stderr and '--active' in proc.stderr
    assert sorted(os.listdir(env_dir)) == ['precious.txt']
    assert (env_dir / 'precious.txt').read_text() == 'keep me'


def test_check_env_lists_nothing_missing_in_the_test_environment():
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'check_env.py'), '--missing'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ''


def test_models_import_needs_no_toolbox():
    code = ('import sys, mmvit_ext.models; '
            'print(sorted(m for m in ("mmpretrain", "mmdet", "mmseg", "timm") '
            'if m in sys.modules))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'


def test_top_level_exports():
    import mmvit_ext
    from mmvit_ext.models.backbones import RMT
    from mmvit_ext.models.layers import GroupMixAttention
    assert mmvit_ext.RMT is RMT and mmvit_ext.GroupMixAttention is GroupMixAttention
    assert set(mmvit_ext.__all__) >= {'RMT', 'GroupMixFormer', 'PaleTransformer', 'LaViT',
                                      'get_model', 'list_models'}
    with pytest.raises(AttributeError):
        mmvit_ext.NoSuchThing


# -- the model index ------------------------------------------------------------------------
def _metafiles():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        return [(m, yaml.safe_load(open(osp.join(REPO, m)))) for m in yaml.safe_load(f)['Import']]


def _check_results(results, where):
    assert isinstance(results, list) and results, where
    for result in results:
        assert set(result) == {'Task', 'Dataset', 'Metrics'}, where
        assert all(isinstance(v, (int, float)) for v in result['Metrics'].values()), where


def test_every_metafile_entry_matches_a_config_and_every_config_is_indexed():
    """As mmpretrain's metafile check: names, configs, collections and the results schema."""
    indexed = set()
    for metafile, meta in _metafiles():
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            where = f'{metafile}: {model["Name"]}'
            assert model['In Collection'] in collections, where
            assert osp.isfile(osp.join(REPO, model['Config'])), where
            assert osp.splitext(osp.basename(model['Config']))[0] == model['Name'], where
            assert model['Config'] not in indexed, where
            indexed.add(model['Config'])
            assert model['Weights'] is None or model['Weights'].startswith('http'), where
            for key, value in model['Metadata'].items():
                if key in ('FLOPs', 'Parameters'):
                    assert isinstance(value, int) and value > 0, where
            # our numbers (Results) and the papers' (Paper Results) never share a field
            if model['Results'] is not None:
                _check_results(model['Results'], where)
            if 'Paper Results' in model:
                _check_results(model['Paper Results'], where)
            assert set(model.get('Paper Metadata', {})) <= {'FLOPs', 'Parameters'}, where
    configs = {osp.relpath(osp.join(root, f), REPO)
               for root, _, files in os.walk(osp.join(REPO, 'configs'))
               for f in files if f.endswith('.py')
               and not ({'_base_', 'demo'} & set(root.split(os.sep)))}
    assert configs == indexed
    assert 'configs/rmt/rmt-s_in1k.py' in indexed


def test_short_name_is_the_same_model():
    from mmengine.config import Config
    alias = Config.fromfile(osp.join(REPO, 'configs/rmt/rmt-s_in1k.py'))
    full = Config.fromfile(osp.join(REPO, 'configs/rmt/rmt-s_8xb128_in1k.py'))
    assert alias.model == full.model
    models = {m['Name']: m for _, meta in _metafiles() for m in meta['Models']}
    for key in ('Metadata', 'Paper Results', 'In Collection'):
        assert models['rmt-s_in1k'][key] == models['rmt-s_8xb128_in1k'][key]


def test_mim_search_finds_the_installed_package(tmp_path):
    """A real (non-editable) install ships configs, tools and the index in ``.mim``."""
    source, target = tmp_path / 'src', tmp_path / 'site'
    source.mkdir()
    for name in ('setup.py', 'setup.cfg', 'README.md', 'model-index.yml'):
        shutil.copy(osp.join(REPO, name), source)
    ignore = shutil.ignore_patterns('__pycache__', '.mim', '*.egg-info')
    for name in ('mmvit_ext', 'configs', 'tools'):
        shutil.copytree(osp.join(REPO, name), source / name, ignore=ignore)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                           '--no-build-isolation', '--target', str(target), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mim_dir = target / 'mmvit_ext' / '.mim'
    assert (mim_dir / 'model-index.yml').is_file()
    assert (mim_dir / 'configs' / 'rmt' / 'rmt-s_in1k.py').is_file()
    assert (mim_dir / 'tools' / 'train.py').is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = 'import mmvit_ext.apis as a; print(a.index_root())'
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == str(mim_dir), proc.stderr
    mim = [sys.executable, '-c', 'from mim.cli import cli; cli()']
    proc = subprocess.run(mim + ['search', 'mmvit_ext', '--field', 'config'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ('rmt-s_8xb128_in1k', 'mask-rcnn_lavit-t_fpn_1x_coco',
                 'upernet_pale-s_8xb2-160k_ade20k-512x512'):
        assert name in proc.stdout, proc.stdout[-2000:]


# -- get_model --------------------------------------------------------------------------------
def test_list_models_by_task():
    import mmvit_ext
    names = mmvit_ext.list_models()
    assert len(names) == 95 and 'rmt-s_in1k' in names
    assert mmvit_ext.list_models('retinanet_rmt*', task='mmdet') == [
        'retinanet_rmt-b_fpn_1x_coco', 'retinanet_rmt-l_fpn_1x_coco',
        'retinanet_rmt-s_fpn_1x_coco', 'retinanet_rmt-t_fpn_1x_coco']


@pytest.mark.parametrize('name,cls_name', [
    ('mask-rcnn_rmt-t_fpn_1x_coco', 'MaskRCNN'),
    ('fpn_lavit-t_8xb2-80k_ade20k-512x512', 'AuxLossEncoderDecoder'),
])
def test_get_model_detection_and_segmentation(name, cls_name):
    import mmvit_ext
    model = mmvit_ext.get_model(name)
    assert type(model).__name__ == cls_name and not model.training
    assert type(model.backbone).__name__ in ('RMT', 'LaViT')


def test_get_model_classification_with_local_checkpoint_and_through_mmpretrain(tmp_path):
    import mmpretrain

    import mmvit_ext
    model = mmvit_ext.get_model('rmt-t_8xb128_in1k', head=dict(num_classes=7))
    assert model.head.fc.out_features == 7
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    ckpt = tmp_path / 'rmt-t.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    x = torch.randn(1, 3, 64, 64)
    expected = model(x, mode='tensor')
    again = mmvit_ext.get_model('rmt-t_8xb128_in1k', pretrained=str(ckpt),
                                head=dict(num_classes=7))
    torch.testing.assert_close(again(x, mode='tensor'), expected)
    mmvit_ext.register_mmpretrain_models()
    assert 'rmt-s_8xb128_in1k' in mmpretrain.list_models('rmt*')
    hub = mmpretrain.get_model('rmt-t_8xb128_in1k', pretrained=str(ckpt),
                               head=dict(num_classes=7))
    torch.testing.assert_close(hub.eval()(x, mode='tensor'), expected)
    with pytest.raises(RuntimeError, match='size mismatch'):  # strict: the head differs
        mmvit_ext.get_model('rmt-t_8xb128_in1k', pretrained=str(ckpt))


def test_get_model_errors():
    import mmvit_ext
    with pytest.raises(ValueError, match='list_models'):
        mmvit_ext.get_model('rmt-x_8xb128_in1k')
    with pytest.raises(ValueError, match='publishes no weights'):
        mmvit_ext.get_model('rmt-t_8xb128_in1k', pretrained=True)
