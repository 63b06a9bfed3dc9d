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
