"""tools/analysis_tools/device_check.py, the script prepared for a lent GPU, runs on the CPU."""
import os.path as osp
import re

import pytest

from mmvit_ext.models.families import families
from tests.conftest import REPO, run_tool

pytestmark = pytest.mark.slow  # runs the whole script: every family, demo runs, training steps


def test_device_check_runs_on_cpu(tmp_path):
    proc = run_tool([osp.join(REPO, 'tools/analysis_tools/device_check.py'), '--device', 'cpu', '--batch', '2',
                     '--repeat', '1'], cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for family in families():
        name = family.backbone.__name__
        line = next(line for line in out.splitlines() if line.strip().startswith(name + ' '))
        fp32 = float(re.search(r'fp32 max\|diff\| (\S+)', line).group(1))
        assert fp32 < 1e-4, line  # the same fp32 CPU kernels as the oracle, up to rounding
        assert 'bfloat16 finite True' in line, line
    assert re.search(r'rmt-nano_1xb32_demo-cls.py \(fp32\): exit 0', out), out
    for name in ('RMT-S', 'GroupMixFormer-S'):
        assert re.search(rf'{name} +ours: \d+\.\d+ img/s', out), out
