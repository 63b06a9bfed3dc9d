"""bf16 CPU inference: every family under mmengine's CPU autocast against fp32, and
``tools/test.py --amp`` with its interplay with ``--fuse`` (the fused kernels are fp32 only)."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch

from mmvit_ext.utils.cli import fuse_when_auto, use_fused_inference
from mmvit_ext.utils.config import build_from_config, load_config
from tests.conftest import (CLS_CFG, DEMO, TEST, check, latest_checkpoint, load_tool,
                            randomized, run_tool)
from tests.test_end_to_end import last_metric

FAMILIES = ['rmt', 'groupmixformer', 'pale', 'lavit']
# max |bf16 - fp32| / max |fp32| of the logits (demo classifiers with 100 classes, random
# weights, four 96x96 images): measured 3.7e-3 to 6.1e-3 over the families and seeds 0-2; the
# bound leaves 3x. fp32 computed throughout gives 0 (and a float32 output, checked apart).
BF16_LOGIT_BOUND = 2e-2


@pytest.mark.parametrize('family', FAMILIES)
def test_bf16_cpu_autocast_logits_match_fp32(family):
    from mmengine.runner.amp import autocast
    cfg = load_config(osp.join(DEMO, f'{family}-nano_1xb32_demo-cls.py'),
                      dict(model=dict(head=dict(num_classes=100))))
    model = randomized(build_from_config(cfg))
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        reference = model(x, mode='tensor')
        # what mmengine's test loop enters with test_cfg.fp16 on a machine without GPU; its
        # CPU dtype (none given) is bfloat16
        with autocast(device_type='cpu'):
            logits = model(x, mode='tensor')
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    error = ((logits.float() - reference).abs().max() / reference.abs().max()).item()
    assert error < BF16_LOGIT_BOUND, (family, error)


def test_fuse_choice_follows_precision_and_device():
    assert fuse_when_auto('cpu', amp=False)
    assert not fuse_when_auto('cpu', amp=True) and not fuse_when_auto('cuda', amp=False)
    assert use_fused_inference('auto', 'cpu', False) and not use_fused_inference('auto', 'cpu',
                                                                                   True)
    assert use_fused_inference('on', 'cuda', False) and not use_fused_inference('off', 'cpu',
                                                                                  False)
    with pytest.raises(SystemExit, match='--fuse on --amp: the fused CPU kernels compute in '
                                         'fp32 only.*Drop --amp'):
        use_fused_inference('on', 'cpu', True)


@pytest.mark.parametrize('extra,fp16,fused', [([], False, True), (['--amp'], True, False),
                                               (['--amp', '--fuse', 'off'], True, False)])
def test_test_tool_amp_sets_fp16_and_keeps_plain_modules(extra, fp16, fused, tmp_path,
                                                         monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    tool = load_tool('test.py')
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    args = tool.parse_args([CLS_CFG, str(checkpoint), '--work-dir', str(tmp_path)] + extra)
    cfg = tool.load_config(args)
    tool.apply_test_args(cfg, args)
    assert cfg.test_cfg.get('fp16', False) == fp16
    hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
    assert ('mmvit_ext.FuseForCPUInferenceHook' in hooks) == fused


def test_fuse_hook_refuses_an_autocast_test_loop():
    from mmvit_ext.engine import FuseForCPUInferenceHook
    runner = SimpleNamespace(test_loop=SimpleNamespace(fp16=True), model=torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match='fused CPU kernels compute in fp32 only'):
        FuseForCPUInferenceHook().before_test_epoch(runner)


@pytest.mark.slow
def test_amp_with_fuse_on_is_refused(demo_root, tmp_path):
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    proc = run_tool([TEST, CLS_CFG, str(checkpoint), '--amp', '--fuse', 'on'], demo_root)
    assert proc.returncode != 0
    assert '--fuse on --amp: the fused CPU kernels compute in fp32 only' in proc.stderr


@pytest.mark.slow
def test_amp_test_reaches_the_fp32_top1(trained_classifier, demo_root):
    work, _ = trained_classifier
    checkpoint = latest_checkpoint(work)
    fp32 = check(run_tool([TEST, CLS_CFG, checkpoint, '--work-dir', work], demo_root))
    amp = check(run_tool([TEST, CLS_CFG, checkpoint, '--work-dir', work, '--amp'], demo_root))
    assert 'fp16=True' in amp and 'fp16=True' not in fp32  # the logged test_cfg
    if not torch.cuda.is_available():  # fp32 evaluates fused, --amp the plain modules
        assert 'Fused the model for CPU inference' in fp32
        assert 'Fused the model' not in amp
    top1 = last_metric(fp32, 'accuracy/top1')
    assert last_metric(amp, 'accuracy/top1') == top1 >= 60.0, top1
