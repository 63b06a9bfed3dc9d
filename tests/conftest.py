import glob
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
DEMO = osp.join(REPO, 'configs', 'demo')
CLS_CFG = osp.join(DEMO, 'rmt-nano_1xb32_demo-cls.py')
DET_CFG = osp.join(DEMO, 'mask-rcnn_rmt-nano_fpn_demo-coco.py')
SEG_CFG = osp.join(DEMO, 'fpn_rmt-nano_1xb8_demo-ade.py')


def load_tool(path):
    """Import a script of ``tools/`` (``path`` relative to ``tools/``, e.g.
    ``'analysis_tools/benchmark.py'``) as a module, to call its functions in-process."""
    name = 'tool_' + re.sub(r'\W', '_', path[:-len('.py')])
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'tools', path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(args, cwd, timeout=1200, env=None):
    """Run ``python <args>`` (a tool of this repo) and return the completed process."""
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    proc = subprocess.run([sys.executable] + list(args), cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def randomized(module, seed=0):
    """Random weights and BN statistics: outputs that depend on every parameter."""
    import torch
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point() and 'running_var' in name:
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point() and tensor.numel() > 1:
                tensor.normal_(0, 0.2)
    return module


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A working directory with the demo datasets at ``data/demo`` (the configs' default)."""
    from mmvit_ext.datasets import generate_demo_datasets
    root = tmp_path_factory.mktemp('demo')
    generate_demo_datasets(str(root / 'data' / 'demo'))
    return root


def check(proc):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def latest_checkpoint(work):
    ckpts = glob.glob(osp.join(work, '*_*.pth'))
    assert ckpts, f'no checkpoint in {work}'
    return max((p for p in ckpts if not osp.basename(p).startswith('best')),
               key=lambda p: int(re.findall(r'\d+', osp.basename(p))[0]))


def demo_work_dir(demo_root, config):
    """``work_dirs/<config name>`` under the demo root, where tools/train.py puts it by default
    (and where tools/analysis_tools/gather_results.py looks)."""
    return str(demo_root / 'work_dirs' / osp.splitext(osp.basename(config))[0])


# The demo trainings, shared by the end-to-end tests and the results-gathering test.
@pytest.fixture(scope='session')
def trained_classifier(demo_root):
    """Train the demo classifier in two runs: 2 epochs, then resume to the end of its schedule.
    Returns the work dir and the output of the resumed run."""
    work = demo_work_dir(demo_root, CLS_CFG)
    out = check(run_tool([TRAIN, CLS_CFG, '--work-dir', work,
                          '--cfg-options', 'train_cfg.max_epochs=2'], demo_root))
    assert osp.isfile(osp.join(work, 'epoch_2.pth')), out[-2000:]
    resumed = check(run_tool([TRAIN, CLS_CFG, '--work-dir', work, '--resume'], demo_root))
    return work, resumed


@pytest.fixture(scope='session')
def trained_detector(trained_classifier, demo_root):
    """The demo Mask R-CNN, its backbone started from the demo classifier as in the real
    recipes. Returns the work dir and the training output."""
    cls_ckpt = latest_checkpoint(trained_classifier[0])
    work = demo_work_dir(demo_root, DET_CFG)
    out = check(run_tool([TRAIN, DET_CFG, '--work-dir', work, '--cfg-options',
                          'model.backbone.init_cfg.type=Pretrained',
                          f'model.backbone.init_cfg.checkpoint={cls_ckpt}',
                          'model.backbone.init_cfg.prefix=backbone.'], demo_root))
    return work, out


@pytest.fixture(scope='session')
def trained_segmentor(demo_root):
    """The demo Semantic FPN, trained from scratch for half its schedule. Returns the work dir."""
    work = demo_work_dir(demo_root, SEG_CFG)
    check(run_tool([TRAIN, SEG_CFG, '--work-dir', work, '--cfg-options',
                    'train_cfg.max_iters=200', 'train_cfg.val_interval=200'], demo_root))
    return work


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Each test starts without an mmengine default scope.

    The suite builds models of three toolboxes; ``init_default_scope`` (called by the config
    test and the analysis tools) is process-global, and a leftover ``mmseg`` scope would make a
    later unscoped ``mmpretrain`` build look in the wrong registry.
    """
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Record every ``torch.utils.checkpoint.checkpoint`` call (the function still runs)."""
    import torch.utils.checkpoint
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def spy(function, *args, **kwargs):
        calls.append(function)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', spy)
    return calls


@pytest.fixture(params=['explicit', 'sdpa'])
def attention_kernel(request):
    """Run the test once with every softmax attention computed explicitly and once through
    F.scaled_dot_product_attention."""
    from mmvit_ext.models.layers import attention_kernel as forced
    with forced(request.param):
        yield request.param
