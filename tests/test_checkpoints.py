"""Checkpoints load safely (weights_only) and strictly, are written atomically and carry a
checksum; training neither restarts nor overwrites a finished run silently.

Runs tools/train.py and tools/test.py on the demo classification set, cut to a few images so
that each run takes seconds. Checkpoints given as URLs come from an HTTP server on 127.0.0.1
that the test starts and stops.
"""
import argparse
import datetime
import functools
import hashlib
import http.server
import json
import os
import os.path as osp
import random
import shutil
import threading

import pytest
import torch

from mmvit_ext.models.families import families
from tests.conftest import REPO, run_tool

TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
CONVERTERS = [osp.join(REPO, 'tools', 'model_converters', name)
              for name in ('rmt_to_mmvit.py', 'groupmixformer_to_mmvit.py')]
SELECT_EMA = osp.join(REPO, 'tools', 'model_converters', 'select_ema_weights.py')
KEEP_WEIGHTS = osp.join(REPO, 'tools', 'model_converters', 'keep_mmengine_weights.py')
IMAGE_DEMO = osp.join(REPO, 'tools', 'image_demo.py')
CLS_CFG = osp.join(REPO, 'configs', 'demo', 'rmt-nano_1xb32_demo-cls.py')
DET_CFG = osp.join(REPO, 'configs', 'demo', 'mask-rcnn_rmt-nano_fpn_demo-coco.py')
# 2 training and 1 validation iterations per epoch
SMALL = ['train_dataloader.dataset.indices=64', 'val_dataloader.dataset.indices=32',
         'test_dataloader.dataset.indices=32', 'default_hooks.checkpoint.interval=1',
         'train_cfg.val_interval=1']


def small(epochs, *options):
    return ['--cfg-options', f'train_cfg.max_epochs={epochs}'] + SMALL + list(options)


def train(args, cwd):
    return run_tool([TRAIN, CLS_CFG] + args, cwd=cwd, timeout=600)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def refused(proc):
    assert proc.returncode not in (0, -9), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stderr


def one_line_error(proc):
    """The tool stopped with one line of message and no traceback."""
    err = refused(proc)
    assert 'Traceback' not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def no_unsafe_advice(message):
    assert 'weights_only=False' not in message and '--trust-checkpoint' not in message, message


def digest(directory):
    return {f: hashlib.sha256(open(osp.join(directory, f), 'rb').read()).hexdigest()
            for f in sorted(os.listdir(directory)) if osp.isfile(osp.join(directory, f))}


@pytest.fixture(scope='module')
def finished_run(demo_root):
    """A finished 1-epoch run: its work dir."""
    work = str(demo_root / 'ckpt_finished')
    ok(train(['--work-dir', work] + small(1), demo_root))
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    return work


# -- 1. safe loading --------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture
def payload(tmp_path):
    """A .pth whose unpickling would create ``marker``."""
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': {}, 'state_dict': {'w': torch.zeros(1)}, 'x': _Payload(marker)}, path)
    return str(path), marker


LOADING_PATHS = {
    'test': lambda evil, work: [TEST, CLS_CFG, evil, '--work-dir', work],
    'load_from': lambda evil, work: [TRAIN, CLS_CFG, '--work-dir', work] + small(
        1, f'load_from={evil}'),
    'resume': lambda evil, work: [TRAIN, CLS_CFG, '--work-dir', work, '--resume', evil] + small(
        1),
    'init_cfg_pretrained': lambda evil, work: [TRAIN, CLS_CFG, '--work-dir', work] + small(
        1, 'model.backbone.init_cfg.type=Pretrained',
        f'model.backbone.init_cfg.checkpoint={evil}'),
    'rmt_converter': lambda evil, work: [CONVERTERS[0], evil, osp.join(work, 'out.pth')],
    'groupmixformer_converter': lambda evil, work: [CONVERTERS[1], evil,
                                                    osp.join(work, 'out.pth')],
    'select_ema_weights': lambda evil, work: [SELECT_EMA, evil, osp.join(work, 'out.pth'),
                                              '--weights', 'ema'],
    # the checkpoint is loaded (refused) before any image is read
    'image_demo': lambda evil, work: [IMAGE_DEMO, CLS_CFG, evil, evil, '--out-dir', work],
}


@pytest.mark.slow
@pytest.mark.parametrize('path', list(LOADING_PATHS))
def test_payload_refused_by_every_loading_path(path, payload, demo_root, tmp_path):
    evil, marker = payload
    proc = run_tool(LOADING_PATHS[path](evil, str(tmp_path / 'work')), cwd=demo_root)
    assert not marker.exists(), f'{path}: the payload ran'
    line = one_line_error(proc)
    assert f'{evil}: refused to load' in line and '`posix.system`' in line, line
    no_unsafe_advice(line)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``(directory, base URL)``: the files of the directory are served over HTTP on 127.0.0.1
    during the test. The download cache (TORCH_HOME) and MMENGINE_HOME are the test's own."""
    root = tmp_path / 'served'
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    for proxy in ('NO_PROXY', 'no_proxy'):
        monkeypatch.setenv(proxy, '127.0.0.1')
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize('path', ['test', 'load_from', 'resume', 'init_cfg_pretrained'])
def test_payload_url_refused(path, payload, served, demo_root, tmp_path):
    evil, marker = payload
    root, base = served
    shutil.copy(evil, root / 'evil.pth')
    url = f'{base}/evil.pth'
    proc = run_tool(LOADING_PATHS[path](url, str(tmp_path / 'work')), cwd=demo_root)
    assert not marker.exists(), f'{path}: the payload ran'
    line = one_line_error(proc)
    assert f'{url} (downloaded to ' in line and 'refused to load' in line, line
    assert '`posix.system`' in line
    no_unsafe_advice(line)


def test_payload_url_refused_by_get_model_and_timm(payload, served):
    import timm

    import mmvit_ext.models.timm_models  # noqa: F401  registers the timm models
    from mmvit_ext.apis import get_model
    from mmvit_ext.checkpoint import UnsafeCheckpointError
    evil, marker = payload
    root, base = served
    shutil.copy(evil, root / 'evil.pth')
    shutil.copy(evil, root / 'evil_timm.pth')
    with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth \(downloaded to .*`posix\.system`'):
        get_model(CLS_CFG, pretrained=f'{base}/evil.pth')
    with pytest.raises(UnsafeCheckpointError, match='`posix.system`'):
        timm.create_model('rmt_t', pretrained=True,
                          pretrained_cfg_overlay=dict(url=f'{base}/evil_timm.pth'))
    assert not marker.exists()


def test_timm_pretrained_loads_through_the_projects_loader(tmp_path):
    import timm

    import mmvit_ext.models.timm_models  # noqa: F401  registers the timm models
    from mmvit_ext.checkpoint import DamagedCheckpointError, save_checkpoint_file
    model = timm.create_model('rmt_t')
    path, flipped = tmp_path / 'rmt_t.pth', tmp_path / 'rmt_t_flipped.pth'
    save_checkpoint_file({'state_dict': model.state_dict()}, path)
    loaded = timm.create_model('rmt_t', pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path)))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    ten_classes = timm.create_model('rmt_t', pretrained=True, num_classes=10,
                                    pretrained_cfg_overlay=dict(file=str(path)))
    assert ten_classes.head.fc.weight.shape[0] == 10  # the classifier stays as initialised
    assert torch.equal(ten_classes.backbone.patch_embed[0].weight,
                       model.backbone.patch_embed[0].weight)
    checkpoint = torch.load(path, weights_only=True)
    weight = checkpoint['state_dict']['backbone.patch_embed.0.weight']
    weight.view(torch.int32).view(-1)[0] ^= 1 << 30  # the top exponent bit of one float32
    torch.save(checkpoint, flipped)
    with pytest.raises(DamagedCheckpointError, match='the SHA-256 of its state_dict differs'):
        timm.create_model('rmt_t', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(flipped)))


def test_safe_checkpoint_url_downloads_and_loads(served):
    from mmvit_ext.apis import get_model
    from mmvit_ext.checkpoint import save_checkpoint_file
    root, base = served
    trained = get_model(CLS_CFG)
    save_checkpoint_file({'state_dict': trained.state_dict()}, root / 'demo_cls.pth')
    loaded = get_model(CLS_CFG, pretrained=f'{base}/demo_cls.pth')
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())
    assert osp.isfile(osp.join(os.environ['TORCH_HOME'], 'hub', 'checkpoints', 'demo_cls.pth'))


def test_every_mmengine_scheme_has_a_safe_loader():
    import mmvit_ext.checkpoint.schemes as ckpt
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt.install_safe_loading()
    schemes = CheckpointLoader._schemes  # mmengine's prefix -> loader table (no public view)
    assert {'', 'http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
            'openmmlab://', 'mmcls://', 'pavi://', r'(\S+\:)?s3://'} <= set(schemes)
    assert {p: f.__module__ for p, f in schemes.items() if f.__module__ != ckpt.__name__} == {}


SCHEMES_AFTER_IMPORT = """
import sys
from mmengine.runner.checkpoint import CheckpointLoader
before = dict(CheckpointLoader._schemes)
import mmvit_ext, mmvit_ext.models, mmvit_ext.engine
assert CheckpointLoader._schemes == before, 'importing the package changed mmengine loaders'
from mmvit_ext.registry import HOOKS
from mmvit_ext.checkpoint import UnsafeCheckpointError
HOOKS.build(dict(type='SafeCheckpointHook', interval=1))
assert CheckpointLoader._schemes != before
try:
    CheckpointLoader.load_checkpoint(sys.argv[1], map_location='cpu')
except UnsafeCheckpointError as err:
    print('refused:', err)
"""


def test_import_changes_no_loader_and_the_hook_installs_safe_loading(payload, tmp_path):
    """``import mmvit_ext`` (what a config's ``custom_imports`` does) leaves mmengine's
    checkpoint loaders alone; building ``SafeCheckpointHook`` (what a run of such a config does)
    installs safe loading."""
    evil, marker = payload
    script = tmp_path / 'schemes_after_import.py'
    script.write_text(SCHEMES_AFTER_IMPORT)
    out = ok(run_tool([str(script), evil], cwd=tmp_path))
    assert f'refused: {evil}: refused to load' in out and '`posix.system`' in out, out
    assert not marker.exists()


def test_hook_refuses_an_mmengine_whose_overridden_internal_changed(monkeypatch):
    """SafeCheckpointHook overrides mmengine's private ``_save_checkpoint_with_step``; a release
    that reshapes it must stop the run instead of silently saving in place again."""
    from mmengine.hooks import CheckpointHook
    from mmvit_ext.registry import HOOKS
    HOOKS.build(dict(type='SafeCheckpointHook', interval=1))  # the installed mmengine fits
    monkeypatch.setattr(CheckpointHook, '_save_checkpoint_with_step',
                        lambda self, runner, step, meta, extra: None)
    with pytest.raises(RuntimeError, match=r'mmengine 0\.10.*Install an mmengine 0\.10\.x'):
        HOOKS.build(dict(type='SafeCheckpointHook', interval=1))
    monkeypatch.delattr(CheckpointHook, '_save_checkpoint_with_step')
    with pytest.raises(RuntimeError, match='_save_checkpoint_with_step'):
        HOOKS.build(dict(type='SafeCheckpointHook', interval=1))


@pytest.mark.parametrize('scheme', ['torchvision', 'mmcls', 'open-mmlab_url', 'open-mmlab_local'])
def test_payload_refused_through_model_zoo_schemes(scheme, payload, served):
    """torchvision:// and mmcls:// resolve to URLs whose download is already in the cache (a
    planted file); open-mmlab:// names what MMENGINE_HOME/open_mmlab.json says."""
    from mmengine.runner.checkpoint import (CheckpointLoader, get_mmcls_models,
                                            get_torchvision_models)
    from mmvit_ext.checkpoint import UnsafeCheckpointError, install_safe_loading
    install_safe_loading()
    evil, marker = payload
    root, base = served
    cache = osp.join(os.environ['TORCH_HOME'], 'hub', 'checkpoints')
    home = os.environ['MMENGINE_HOME']
    os.makedirs(cache)
    os.makedirs(home)
    if scheme in ('torchvision', 'mmcls'):
        urls = get_torchvision_models() if scheme == 'torchvision' else get_mmcls_models()
        model = 'resnet18' if scheme == 'torchvision' else sorted(urls)[0]
        shutil.copy(evil, osp.join(cache, osp.basename(urls[model])))
        name = f'{scheme}://{model}'
    else:
        where = f'{base}/evil.pth' if scheme == 'open-mmlab_url' else 'evil_local.pth'
        shutil.copy(evil, root / 'evil.pth')
        shutil.copy(evil, osp.join(home, 'evil_local.pth'))
        with open(osp.join(home, 'open_mmlab.json'), 'w') as f:
            json.dump({'evil': where}, f)
        name = 'open-mmlab://evil'
    with pytest.raises(UnsafeCheckpointError, match=r'refused to load: .*`posix\.system`'):
        CheckpointLoader.load_checkpoint(name, map_location='cpu')
    assert not marker.exists()


def _mmengine_checkpoint(path, extra=None):
    """A checkpoint as plain mmengine saves it: its message_hub holds HistoryBuffer objects
    (numpy arrays, bound methods) and numpy scalars."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    checkpoint = {'meta': {'epoch': 1}, 'state_dict': {'w': torch.arange(4.)},
                  'message_hub': {'log_scalars': {'loss': HistoryBuffer([1., 2.], [1, 1])},
                                  'runtime_info': {'best_score': np.float64(0.5)}}}
    if extra is not None:
        checkpoint['extra'] = extra
    torch.save(checkpoint, path)


def test_refusal_lists_every_global_and_advises_nothing_unsafe(tmp_path):
    from mmvit_ext.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / 'history_then_payload.pth'
    _mmengine_checkpoint(path, _Payload(marker))
    with pytest.raises(UnsafeCheckpointError) as refusal:
        load_checkpoint_file(path)
    message = str(refusal.value)
    for wanted in ('mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
                   'numpy.ndarray', 'posix.system'):
        assert f'`{wanted}`' in message, message
    assert 'do not load the file' in message and 'keep_mmengine_weights' not in message
    no_unsafe_advice(message)
    assert not marker.exists()


def test_legacy_format_refusal_lists_the_globals(tmp_path):
    from mmvit_ext.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'x': _Payload(marker)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r'would import `posix\.system`, which'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_plain_mmengine_checkpoint_kept_by_safe_conversion(tmp_path):
    from mmvit_ext.checkpoint import UnsafeCheckpointError, load_checkpoint_file
    path, kept = tmp_path / 'plain.pth', tmp_path / 'kept.pth'
    _mmengine_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError) as refusal:
        load_checkpoint_file(path)
    message = str(refusal.value)
    assert f'keep_mmengine_weights.py {path} NEW.pth' in message, message
    no_unsafe_advice(message)
    ok(run_tool([KEEP_WEIGHTS, str(path), str(kept)], cwd=tmp_path))
    checkpoint = load_checkpoint_file(kept)
    assert torch.equal(checkpoint['state_dict']['w'], torch.arange(4.))
    assert checkpoint['meta']['epoch'] == 1 and set(checkpoint) == {'meta', 'state_dict'}


@pytest.mark.slow
def test_trust_checkpoint_lists_the_globals_of_a_legacy_file(tmp_path):
    path = tmp_path / 'legacy_official.pth'
    torch.save({'model': {'w': torch.ones(1)}, 'date': datetime.date(2024, 1, 1)}, path,
               _use_new_zipfile_serialization=False)
    proc = run_tool([CONVERTERS[0], str(path), str(tmp_path / 'out.pth'), '--trust-checkpoint'],
                    cwd=tmp_path)
    assert 'weights_only=False; unpickling it imports and may call: datetime.date' in proc.stdout
    path.write_bytes(path.read_bytes()[:200])  # the globals can no longer all be listed
    line = one_line_error(run_tool([CONVERTERS[0], str(path), str(tmp_path / 'out.pth'),
                                    '--trust-checkpoint'], cwd=tmp_path))
    assert f'{path}: the globals it would import cannot all be listed' in line, line


def test_payload_refused_by_bare_torch_load_after_import(payload, tmp_path):
    evil, marker = payload
    code = ('import os, torch, mmvit_ext\n'
            'assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ\n'
            f'torch.load({evil!r})\n')
    proc = run_tool(['-c', code], cwd=tmp_path)
    assert not marker.exists(), 'the payload ran'
    assert proc.returncode != 0 and 'UnpicklingError' in proc.stderr, proc.stderr[-3000:]
    assert 'GLOBAL posix.system' in proc.stderr


def test_official_checkpoint_with_training_args_loads_through_allow_list(tmp_path):
    from mmvit_ext.converters.official import load_official_state_dict
    path = tmp_path / 'official.pth'
    torch.save({'model': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=1e-3, model='x'),
                'epoch': 299}, path)
    state_dict = load_official_state_dict(str(path))
    assert list(state_dict) == ['w'] and torch.equal(state_dict['w'], torch.ones(2))


# -- 2. atomic saving: SIGKILL at each write point, then --resume -----------------------------
KILL_CASES = {
    # (checkpoint hook options, kill hook, epoch --resume must continue from)
    'rewrite_after_new_best': ([], dict(name='epoch_1.pth', occurrence=2), 1),
    'new_checkpoint_with_max_keep_1': (
        ['default_hooks.checkpoint.save_best=None', 'default_hooks.checkpoint.max_keep_ckpts=1'],
        dict(name='epoch_2.pth'), 1),
    'last_checkpoint_file': (
        ['default_hooks.checkpoint.save_best=None', 'default_hooks.checkpoint.max_keep_ckpts=1'],
        dict(name='last_checkpoint', occurrence=2), 1),
    'removal_of_the_outdated_checkpoint': (
        ['default_hooks.checkpoint.save_best=None', 'default_hooks.checkpoint.max_keep_ckpts=1'],
        dict(name='epoch_1.pth', op='remove'), 2),
}


def _killed_run(demo_root, tmp_path, options, kill, extra_cfg='', args=()):
    cfg = tmp_path / 'kill_cls.py'
    cfg.write_text(
        f'_base_ = [{CLS_CFG!r}]\n'
        f"custom_imports = dict(imports=['mmvit_ext', 'tests.ckpt_kill_probe'], "
        f'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='KillAtFileOpHook', **{kill!r})]\n" + extra_cfg)
    work = str(tmp_path / 'work')
    proc = run_tool([TRAIN, str(cfg), '--work-dir', work] + list(args) + small(3, *options),
                    cwd=demo_root)
    assert proc.returncode == -9, 'the trainer was not killed:\n' + proc.stderr[-3000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize('case', list(KILL_CASES))
def test_kill_during_save_then_resume(case, demo_root, tmp_path):
    options, kill, resumed_epoch = KILL_CASES[case]
    work = _killed_run(demo_root, tmp_path, options, kill)
    out = ok(train(['--work-dir', work, '--resume'] + small(3, *options), demo_root))
    assert f'resumed epoch: {resumed_epoch}' in out
    assert osp.isfile(osp.join(work, 'epoch_3.pth'))
    assert not [f for f in os.listdir(work) if '.tmp-' in f]
    if 'default_hooks.checkpoint.max_keep_ckpts=1' in options:  # none left behind by the kill
        assert sorted(f for f in os.listdir(work) if f.startswith('epoch_')) == ['epoch_3.pth']


@pytest.mark.slow
def test_kill_between_new_and_previous_best_checkpoint_keeps_a_best(demo_root, tmp_path):
    # every validation scores a new best: epoch 2's best replaces epoch 1's; killed while
    # writing epoch 2's best
    work = _killed_run(
        demo_root, tmp_path,
        ['default_hooks.checkpoint.save_best=count', 'default_hooks.checkpoint.rule=greater'],
        dict(name='best_', occurrence=2),
        extra_cfg="val_evaluator = dict(type='EvaluationCountMetric', _delete_=True)\n")
    from mmvit_ext.checkpoint import load_checkpoint_file
    best = [f for f in os.listdir(work) if f.startswith('best_') and f.endswith('.pth')]
    assert best == ['best_count_epoch_1.pth'], sorted(os.listdir(work))
    assert load_checkpoint_file(osp.join(work, best[0]))['meta']['epoch'] == 1


@pytest.mark.slow
def test_interrupted_overwrite_is_not_resumed_as_the_earlier_run(finished_run, demo_root,
                                                                 tmp_path):
    shutil.copytree(finished_run, tmp_path / 'work')
    work = _killed_run(demo_root, tmp_path, [], dict(name='epoch_1.pth'), args=['--overwrite'])
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(3), demo_root))
    assert f'--resume: {work} has no last_checkpoint file' in line, line
    assert '--overwrite' in line


@pytest.mark.slow
def test_kill_before_the_first_last_checkpoint_is_reported_truly(demo_root, tmp_path):
    work = _killed_run(demo_root, tmp_path, [], dict(name='last_checkpoint'))
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt) and not osp.exists(osp.join(work, 'last_checkpoint'))
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(3), demo_root))
    assert 'incomplete' not in line and f'--resume {ckpt};' in line, line
    line = one_line_error(train(['--work-dir', work] + small(3), demo_root))
    assert f'Continue it with --resume {ckpt},' in line, line
    out = ok(train(['--work-dir', work, '--resume', ckpt] + small(3), demo_root))
    assert 'resumed epoch: 1' in out


@pytest.mark.slow
def test_last_checkpoint_naming_a_missing_file_is_reported(finished_run, demo_root, tmp_path):
    work = str(tmp_path / 'work')
    shutil.copytree(finished_run, work)
    missing = osp.join(work, 'epoch_9.pth')
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(missing)
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(1), demo_root))
    assert f'its last_checkpoint names {missing}, which does not exist' in line, line
    assert f'--resume {osp.join(work, "epoch_1.pth")};' in line


@pytest.mark.slow
def test_kill_during_first_save_is_reported(demo_root, tmp_path):
    work = _killed_run(demo_root, tmp_path, [], dict(name='epoch_1.pth'))
    assert not osp.exists(osp.join(work, 'epoch_1.pth'))  # never seen incomplete
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(1), demo_root))
    assert 'no checkpoint to resume from' in line and 'incomplete files' in line
    assert 'epoch_1.pth.tmp-' in line
    out = ok(train(['--work-dir', work] + small(1), demo_root))  # a fresh start cleans up
    assert 'an incomplete file of a checkpoint save that was interrupted' in out
    assert not [f for f in os.listdir(work) if '.tmp-' in f]


# -- 3. strict by default; damaged files; checksums -----------------------------------------
@pytest.fixture(scope='module')
def groupmixformer_checkpoint(tmp_path_factory):
    """The (converted-format) checkpoint of a small GroupMixFormer backbone."""
    from mmvit_ext.models.backbones.groupmixformer import GroupMixFormer
    from mmvit_ext.converters.official import save_checkpoint
    model = GroupMixFormer(dict(embed_dims=[40, 40, 40, 40], depths=[1, 1, 1, 1],
                                mlp_ratios=[2, 2, 2, 2]))
    path = str(tmp_path_factory.mktemp('gmf') / 'groupmixformer.pth')
    save_checkpoint({f'backbone.{k}': v for k, v in model.state_dict().items()}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('how', ['test', 'load_from', 'resume'])
def test_wrong_checkpoint_refused_with_first_mismatches(how, groupmixformer_checkpoint,
                                                        demo_root, tmp_path):
    ckpt, work = groupmixformer_checkpoint, str(tmp_path / 'work')
    args = {'test': [TEST, CLS_CFG, ckpt, '--work-dir', work],
            'load_from': [TRAIN, CLS_CFG, '--work-dir', work] + small(1, f'load_from={ckpt}'),
            'resume': [TRAIN, CLS_CFG, '--work-dir', work, '--resume', ckpt] + small(1)}[how]
    err = refused(run_tool(args, cwd=demo_root))
    assert 'Traceback' not in err, err[-3000:]
    assert f'{ckpt} does not fit the model ImageClassifier' in err
    assert 'missing: backbone.patch_embed.' in err and 'unexpected: backbone.' in err
    assert '--non-strict' in err and 'rmt_to_mmvit.py' in err


@pytest.mark.slow
def test_non_strict_loads_on_purpose(groupmixformer_checkpoint, demo_root, tmp_path):
    out = ok(run_tool([TEST, CLS_CFG, groupmixformer_checkpoint, '--non-strict', '--work-dir',
                       str(tmp_path / 'work'), '--cfg-options'] + SMALL, cwd=demo_root))
    assert '--non-strict: loading only the matching weights' in out
    assert 'accuracy/top1' in out


@pytest.mark.slow
@pytest.mark.parametrize('how', ['test', 'load_from'])
def test_weights_that_are_no_tensors_refused(how, demo_root, tmp_path):
    from mmvit_ext.apis import get_model
    path, work = tmp_path / 'floats.pth', str(tmp_path / 'work')
    torch.save({'state_dict': {k: 1.0 for k in get_model(CLS_CFG).state_dict()}}, path)
    args = {'test': [TEST, CLS_CFG, str(path), '--work-dir', work],
            'load_from': [TRAIN, CLS_CFG, '--work-dir', work] + small(1, f'load_from={path}')}
    err = refused(run_tool(args[how], cwd=demo_root))
    assert 'Traceback' not in err, err[-3000:]
    assert f'{path} does not fit the model ImageClassifier: 0 missing, 0 unexpected' in err
    assert 'holds a float, not a tensor' in err


@pytest.mark.slow
@pytest.mark.parametrize('content', ['tensor', 'list', 'none', 'state_dict_none'])
def test_checkpoint_of_no_dict_of_weights_one_line(content, demo_root, tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'tensor': torch.zeros(2), 'list': [torch.zeros(2)], 'none': None,
                'state_dict_none': {'state_dict': None}}[content], path)
    line = one_line_error(run_tool([TEST, CLS_CFG, str(path), '--work-dir',
                                    str(tmp_path / 'work')], cwd=demo_root))
    assert f'{path} is not a model checkpoint' in line, line


def test_single_bit_flips_refused_in_one_line_or_harmless(tmp_path):
    """200 seeded single-bit flips of a small checkpoint: each is refused with one line naming
    the file, or loads weights equal to the saved ones (same keys, dtypes, shapes, values)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmvit_ext.checkpoint import CheckpointError, install_safe_loading, save_checkpoint_file
    install_safe_loading()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Linear(4, 2))
    for param in model.parameters():
        torch.nn.init.normal_(param)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / 'small.pth'
    save_checkpoint_file({'meta': {'epoch': 1}, 'state_dict': model.state_dict(),
                          'message_hub': {'runtime_info': {'iter': 2}}}, path)
    data = path.read_bytes()
    rng = random.Random(0)
    outcomes, wrong = {'refused': 0, 'equal': 0}, []
    for _ in range(200):
        bit = rng.randrange(len(data) * 8)
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << bit % 8
        flipped = tmp_path / 'flipped.pth'
        flipped.write_bytes(damaged)
        try:
            loaded = CheckpointLoader.load_checkpoint(str(flipped), map_location='cpu',
                                                      logger='silent')['state_dict']
        except CheckpointError as err:
            outcomes['refused'] += 1
            if str(flipped) not in str(err) or '\n' in str(err):
                wrong.append((bit, str(err)))
            continue
        except Exception as err:  # noqa: BLE001  what the test is about
            wrong.append((bit, f'{type(err).__name__}: {err}'))
            continue
        if list(loaded) == list(weights) and all(
                v.dtype == weights[k].dtype and v.shape == weights[k].shape
                and torch.equal(v, weights[k]) for k, v in loaded.items()):
            outcomes['equal'] += 1
        else:
            wrong.append((bit, 'loaded other weights'))
    assert not wrong, (outcomes, wrong[:5])
    assert outcomes['refused'] > 50 and outcomes['equal'] > 50, outcomes


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['truncated', 'empty', 'bit_flips'])
def test_damaged_checkpoint_one_line(damage, finished_run, demo_root, tmp_path):
    data = open(osp.join(finished_run, 'epoch_1.pth'), 'rb').read()
    middle = len(data) // 2
    damaged = {'truncated': data[:middle], 'empty': b'',
               'bit_flips': data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 4096])
               + data[middle + 4096:]}[damage]
    path = tmp_path / 'damaged.pth'
    path.write_bytes(damaged)
    line = one_line_error(run_tool([TEST, CLS_CFG, str(path), '--work-dir',
                                    str(tmp_path / 'work')], cwd=demo_root))
    assert f'{path} is damaged' in line, line


@pytest.mark.slow
def test_checksum_in_meta_verified_on_load(finished_run, tmp_path):
    from mmvit_ext.checkpoint import (DamagedCheckpointError, entry_sha256,
                                            load_checkpoint_file)
    ckpt = load_checkpoint_file(osp.join(finished_run, 'epoch_1.pth'))
    assert set(ckpt['meta']['sha256']) == set(ckpt) - {'meta'}
    assert ckpt['meta']['sha256']['state_dict'] == entry_sha256(ckpt['state_dict'])
    key = next(k for k, v in ckpt['state_dict'].items() if v.is_floating_point())
    ckpt['state_dict'][key].view(-1)[0] += 1  # one weight changed, meta kept
    torch.save(ckpt, tmp_path / 'changed.pth')
    with pytest.raises(DamagedCheckpointError, match='the SHA-256 of its state_dict differs'):
        load_checkpoint_file(tmp_path / 'changed.pth')
    del ckpt['optimizer']  # a checkpoint stripped of entries still verifies the others
    with pytest.raises(DamagedCheckpointError, match='the SHA-256 of its state_dict differs'):
        torch.save(ckpt, tmp_path / 'stripped.pth')
        load_checkpoint_file(tmp_path / 'stripped.pth')
    del ckpt['meta']['sha256']  # a checkpoint without checksum loads as it is
    torch.save(ckpt, tmp_path / 'unchecked.pth')
    assert key in load_checkpoint_file(tmp_path / 'unchecked.pth')['state_dict']


@pytest.mark.slow
def test_saved_message_hub_loads_safely_and_resumes(finished_run):
    from mmengine.logging import HistoryBuffer
    from mmvit_ext.checkpoint import restore_message_hub
    path = osp.join(finished_run, 'epoch_1.pth')
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    hub = restore_message_hub(torch.load(path, weights_only=True)['message_hub'])
    loss = hub['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2  # 2 iterations


# -- 4. no silent restarts or overwrites ------------------------------------------------------
@pytest.mark.slow
def test_resume_with_nothing_to_resume_stops(demo_root, tmp_path):
    work = str(tmp_path / 'empty')
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(1), demo_root))
    assert f'no checkpoint to resume from in {work}' in line


@pytest.mark.slow
def test_finished_work_dir_not_overwritten(finished_run, demo_root, tmp_path):
    work = str(tmp_path / 'finished')
    shutil.copytree(finished_run, work)
    before = digest(work)
    line = one_line_error(train(['--work-dir', work] + small(1), demo_root))
    assert 'already holds checkpoints of an earlier run' in line and '--overwrite' in line
    assert digest(work) == before
    ok(train(['--work-dir', work, '--overwrite'] + small(1), demo_root))
    assert digest(work)['epoch_1.pth'] != before['epoch_1.pth']


# -- 5. input checks found by the same probes -------------------------------------------------
FAMILIES = {family.backbone.__name__: family for family in families()}


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('rate', [1.0, -0.1])
def test_drop_path_rate_outside_0_1_is_an_error(family, rate):
    import mmvit_ext.models.backbones as backbones
    with pytest.raises(ValueError, match=rf'{family}: drop_path_rate must be in \[0, 1\), '
                                         rf'got {rate}'):
        getattr(backbones, family)(drop_path_rate=rate)


@pytest.mark.parametrize('family,path', [(f, p) for f in FAMILIES
                                         for p in ('train', 'eval', 'fused')])
def test_empty_batch_gives_empty_outputs(family, path):
    from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
    registered = FAMILIES[family]
    model = registered.backbone(registered.tiny_arch, out_indices=(0, 1, 2, 3))
    model.train(path == 'train')
    if path == 'fused':
        if not can_fuse(model):
            pytest.skip(f'{family} has no fused copies')
        fuse_for_cpu_inference(model)
    with torch.no_grad():
        outs = model(torch.randn(0, 3, 64, 48))
    assert [o.shape[0] for o in outs] == [0, 0, 0, 0]
    assert [o.shape[2:] for o in outs] == [(16, 12), (8, 6), (4, 3), (2, 2)]


@pytest.mark.parametrize('family', FAMILIES)
def test_out_of_range_negative_out_index_is_reported_as_given(family):
    import mmvit_ext.models.backbones as backbones
    with pytest.raises(ValueError, match=r'out_indices \(-9,\) out of range'):
        getattr(backbones, family)(out_indices=(-9, ))


@pytest.mark.slow
def test_malformed_annotation_json_names_the_file(demo_root, tmp_path):
    broken = tmp_path / 'instances_train.json'
    broken.write_text('{"images": [')
    cfg = osp.join(REPO, 'configs', 'demo', 'mask-rcnn_rmt-nano_fpn_demo-coco.py')
    line = one_line_error(run_tool([TRAIN, cfg, '--work-dir', str(tmp_path / 'work'),
                                    '--cfg-options', f'train_dataloader.dataset.ann_file={broken}'],
                                   cwd=demo_root))
    assert f'the annotation file {broken} is malformed JSON' in line, line


def _coco_without(demo_root, tmp_path, split, key):
    with open(demo_root / 'data' / 'demo' / 'coco' / 'annotations'
              / f'instances_{split}.json') as f:
        data = json.load(f)
    del data[key]
    path = tmp_path / f'instances_{split}_without_{key}.json'
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize('key', ['images', 'annotations'])
def test_coco_training_file_without_images_or_annotations_named(key, demo_root, tmp_path):
    path = _coco_without(demo_root, tmp_path, 'train', key)
    line = one_line_error(run_tool([TRAIN, DET_CFG, '--work-dir', str(tmp_path / 'work'),
                                    '--cfg-options', f'train_dataloader.dataset.ann_file={path}'],
                                   cwd=demo_root))
    assert f'the COCO annotation file {path} has no \'{key}\' list' in line, line


@pytest.mark.slow
def test_coco_evaluation_file_without_annotations_named(demo_root, tmp_path):
    """Evaluated, such a file gave every metric -1.0 with exit status 0."""
    from mmvit_ext.apis import get_model
    from mmvit_ext.checkpoint import save_checkpoint_file
    checkpoint = tmp_path / 'detector.pth'
    save_checkpoint_file({'state_dict': get_model(DET_CFG).state_dict()}, checkpoint)
    path = _coco_without(demo_root, tmp_path, 'val', 'annotations')
    line = one_line_error(run_tool([TEST, DET_CFG, str(checkpoint), '--work-dir',
                                    str(tmp_path / 'work'), '--cfg-options',
                                    f'test_dataloader.dataset.ann_file={path}',
                                    f'test_evaluator.ann_file={path}'], cwd=demo_root))
    assert f'the COCO annotation file {path} has no \'annotations\' list' in line, line


@pytest.mark.slow
def test_empty_classification_list_named(demo_root, tmp_path):
    empty = tmp_path / 'train.txt'
    empty.write_text('\n')
    line = one_line_error(train(['--work-dir', str(tmp_path / 'work')] + small(
        1, f'train_dataloader.dataset.ann_file={empty}'), demo_root))
    assert f'the annotation list {empty} is empty' in line, line
