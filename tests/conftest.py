import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(args, cwd, timeout=1200, env=None):
    """Run ``python <args>`` (a tool of this repo) and return the completed process."""
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    proc = subprocess.run([sys.executable] + list(args), cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A working directory with the demo datasets at ``data/demo`` (the configs' default)."""
    from mmvit_ext.datasets import generate_demo_datasets
    root = tmp_path_factory.mktemp('demo')
    generate_demo_datasets(str(root / 'data' / 'demo'))
    return root


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
