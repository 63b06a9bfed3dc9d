"""Checkpoints load safely (weights_only) and strictly, are written atomically and carry a
checksum; training neither restarts nor overwrites a finished run silently.

Runs tools/train.py and tools/test.py on the demo classification set, cut to a few images so
that each run takes seconds.
"""
import argparse
import hashlib
import os
import os.path as osp
import shutil

import pytest
import torch

from .conftest import REPO, run_tool

TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
CONVERTERS = [osp.join(REPO, 'tools', 'model_converters', name)
              for name in ('rmt_to_mmvit.py', 'groupmixformer_to_mmvit.py')]
CLS_CFG = osp.join(REPO, 'configs', 'demo', 'rmt-nano_1xb32_demo-cls.py')
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
}


@pytest.mark.parametrize('path', list(LOADING_PATHS))
def test_payload_refused_by_every_loading_path(path, payload, demo_root, tmp_path):
    evil, marker = payload
    proc = run_tool(LOADING_PATHS[path](evil, str(tmp_path / 'work')), cwd=demo_root)
    assert not marker.exists(), f'{path}: the payload ran'
    err = refused(proc)
    assert f'{evil}: refused to load' in err and '`posix.system`' in err, err[-3000:]
    if 'converter' in path:
        assert '--trust-checkpoint' in err


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
    from mmvit_ext.utils.convert import load_official_state_dict
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


def _killed_run(demo_root, tmp_path, options, kill):
    cfg = tmp_path / 'kill_cls.py'
    cfg.write_text(
        f'_base_ = [{CLS_CFG!r}]\n'
        f"custom_imports = dict(imports=['mmvit_ext', 'tests.ckpt_kill_probe'], "
        f'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='KillAtFileOpHook', **{kill!r})]\n")
    work = str(tmp_path / 'work')
    proc = run_tool([TRAIN, str(cfg), '--work-dir', work] + small(3, *options), cwd=demo_root)
    assert proc.returncode == -9, 'the trainer was not killed:\n' + proc.stderr[-3000:]
    return work


@pytest.mark.parametrize('case', list(KILL_CASES))
def test_kill_during_save_then_resume(case, demo_root, tmp_path):
    options, kill, resumed_epoch = KILL_CASES[case]
    work = _killed_run(demo_root, tmp_path, options, kill)
    out = ok(train(['--work-dir', work, '--resume'] + small(3, *options), demo_root))
    assert f'resumed epoch: {resumed_epoch}' in out
    assert osp.isfile(osp.join(work, 'epoch_3.pth'))
    assert not [f for f in os.listdir(work) if '.tmp-' in f]


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
    from mmvit_ext.utils.convert import save_checkpoint
    model = GroupMixFormer(dict(embed_dims=[40, 40, 40, 40], depths=[1, 1, 1, 1],
                                mlp_ratios=[2, 2, 2, 2]))
    path = str(tmp_path_factory.mktemp('gmf') / 'groupmixformer.pth')
    save_checkpoint({f'backbone.{k}': v for k, v in model.state_dict().items()}, path)
    return path


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


def test_non_strict_loads_on_purpose(groupmixformer_checkpoint, demo_root, tmp_path):
    out = ok(run_tool([TEST, CLS_CFG, groupmixformer_checkpoint, '--non-strict', '--work-dir',
                       str(tmp_path / 'work'), '--cfg-options'] + SMALL, cwd=demo_root))
    assert '--non-strict: loading only the matching weights' in out
    assert 'accuracy/top1' in out


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


def test_checksum_in_meta_verified_on_load(finished_run, tmp_path):
    from mmvit_ext.utils.checkpoint import (DamagedCheckpointError, entry_sha256,
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


def test_saved_message_hub_loads_safely_and_resumes(finished_run):
    from mmengine.logging import HistoryBuffer
    from mmvit_ext.utils.checkpoint import restore_message_hub
    path = osp.join(finished_run, 'epoch_1.pth')
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    hub = restore_message_hub(torch.load(path, weights_only=True)['message_hub'])
    loss = hub['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2  # 2 iterations


# -- 4. no silent restarts or overwrites ------------------------------------------------------
def test_resume_with_nothing_to_resume_stops(demo_root, tmp_path):
    work = str(tmp_path / 'empty')
    line = one_line_error(train(['--work-dir', work, '--resume'] + small(1), demo_root))
    assert f'no checkpoint to resume from in {work}' in line


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
FAMILIES = ['RMT', 'GroupMixFormer', 'PaleTransformer', 'LaViT']


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('rate', [1.0, -0.1])
def test_drop_path_rate_outside_0_1_is_an_error(family, rate):
    import mmvit_ext.models.backbones as backbones
    with pytest.raises(ValueError, match=rf'{family}: drop_path_rate must be in \[0, 1\), '
                                         rf'got {rate}'):
        getattr(backbones, family)(drop_path_rate=rate)


SMALLEST = {'RMT': 't', 'GroupMixFormer': 'm', 'PaleTransformer': 't', 'LaViT': 't'}


@pytest.mark.parametrize('family,path', [(f, p) for f in FAMILIES for p in ('train', 'eval')]
                         + [('RMT', 'fused'), ('GroupMixFormer', 'fused')])
def test_empty_batch_gives_empty_outputs(family, path):
    import mmvit_ext.models.backbones as backbones
    from mmvit_ext.models.fused import fuse_for_cpu_inference
    model = getattr(backbones, family)(SMALLEST[family], out_indices=(0, 1, 2, 3))
    model.train(path == 'train')
    if path == 'fused':
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


def test_malformed_annotation_json_names_the_file(demo_root, tmp_path):
    broken = tmp_path / 'instances_train.json'
    broken.write_text('{"images": [')
    cfg = osp.join(REPO, 'configs', 'demo', 'mask-rcnn_rmt-nano_fpn_demo-coco.py')
    line = one_line_error(run_tool([TRAIN, cfg, '--work-dir', str(tmp_path / 'work'),
                                    '--cfg-options', f'train_dataloader.dataset.ann_file={broken}'],
                                   cwd=demo_root))
    assert f'the annotation file {broken} is malformed JSON' in line, line
