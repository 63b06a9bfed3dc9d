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


@pytest.mark.slow
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


CHECK_ENV = osp.join(REPO, 'tools', 'check_env.py')
STACKS = {'requirements.txt': 'requirements.lock',
          'requirements-onedl.txt': 'requirements-onedl.lock'}


def read_requirements(path):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    reqs = [Requirement(line.split('#')[0].strip()) for line in open(path)
            if line.split('#')[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.mark.parametrize('requirements', sorted(STACKS))
def test_lock_pins_every_requirement_at_a_version_it_allows(requirements):
    lock = read_requirements(osp.join(REPO, STACKS[requirements]))
    for name, req in lock.items():
        pins = [s for s in req.specifier if s.operator == '==']
        # one exact version; only exclusions of local builds beside it (torch's +cpu)
        assert len(pins) == 1 and all(s.operator == '==' or '+' in s.version
                                      for s in req.specifier), f'{name}: {req}'
    for name, req in read_requirements(osp.join(REPO, requirements)).items():
        assert name in lock, f'{name} of requirements.txt is not in the lock: relock'
        version = next(s.version for s in lock[name].specifier if s.operator == '==')
        assert req.specifier.contains(version, prereleases=True), (
            f'the lock pins {name}=={version}, requirements.txt asks for {req}: relock')


@pytest.mark.slow
@pytest.mark.skipif(not osp.isfile(osp.join(sys.prefix, '.mmvit_ext_env')),
                    reason='not an environment made by tools/setup_env.sh')
def test_environment_made_by_the_setup_script_matches_the_lock():
    proc = subprocess.run([sys.executable, CHECK_ENV, '--lock'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_environment_path_changes_with_the_lock_and_the_setup_script(tmp_path):
    (tmp_path / 'tools').mkdir()
    script = tmp_path / 'tools' / 'setup_env.sh'
    shutil.copy(osp.join(REPO, 'tools', 'setup_env.sh'), script)
    for name in ('requirements.txt', 'requirements.lock'):
        shutil.copy(osp.join(REPO, name), tmp_path / name)

    def env_path():
        return subprocess.run(['bash', str(script), '--print-path'], check=True, text=True,
                              capture_output=True, env=dict(os.environ, HOME=str(tmp_path)),
                              timeout=60).stdout.strip()

    paths = [env_path()]
    with open(tmp_path / 'requirements.lock', 'a') as f:
        f.write('extra-package==1.0\n')
    paths.append(env_path())
    with open(script, 'a') as f:
        f.write('# a changed install step\n')
    paths.append(env_path())
    assert len(set(paths)) == 3 and all(str(tmp_path) in p for p in paths), paths


@pytest.mark.slow
def test_build_prerequisites_name_the_fix_for_a_setuptools_without_pkg_resources(tmp_path):
    """Where setuptools >= 82 comes first on the path, the check names the bound and the pip
    command; in this environment it passes."""
    ok = subprocess.run([sys.executable, CHECK_ENV, '--build-prereqs'], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    newer = tmp_path / 'setuptools-84.2.1.dist-info'
    newer.mkdir()
    (newer / 'METADATA').write_text('Metadata-Version: 2.1\nName: setuptools\n'
                                    'Version: 84.2.1\n')
    proc = subprocess.run([sys.executable, CHECK_ENV, '--build-prereqs'], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 1
    assert 'found 84.2.1' in proc.stderr and 'pip install "setuptools<82"' in proc.stderr


@pytest.mark.slow
def test_check_env_lists_nothing_missing_in_the_test_environment():
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'check_env.py'), '--missing'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ''


@pytest.mark.slow
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


@pytest.mark.slow
def test_mim_search_finds_the_installed_package(tmp_path):
    """A real (non-editable) install ships configs, tools and the index in ``.mim``."""
    pytest.importorskip('mim', reason='openmim is an optional extra (not in the onedl stack)')
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
