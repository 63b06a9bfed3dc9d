"""tools/analysis_tools/get_flops.py and benchmark.py (and the package's counter and runners
they use, mmvit_ext.analysis) on a tiny attention backbone.

The tools run as subprocesses on configs written to tmp_path; the configs import a tiny
backbone module (also written there) through ``custom_imports``. FLOP expectations are derived
by hand from the layer shapes (1 multiply-add = 1 FLOP).
"""
import copy
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.analysis import CpuPeakMemory, Runner, benchmark, count_flops
from tests.conftest import load_tool

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO_ROOT, 'tools', 'analysis_tools')

TINY_BACKBONE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmvit_ext.models.backbones.base import BaseBackbone
from mmvit_ext.registry import MODELS


class Block(nn.Module):
    def __init__(self, dims, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dims, 3 * dims)
        self.proj = nn.Linear(dims, dims)
        self.plain = False  # the oracle's explicit softmax(q k^T / sqrt(d)) v

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if self.plain:
            attn = (q @ k.transpose(-2, -1) / q.shape[-1]**0.5).softmax(-1)
            o = attn @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(o).transpose(1, 2).reshape(b, c, h, w)


class Stage(nn.Module):
    def __init__(self, cin, cout, depth, heads, first):
        super().__init__()
        self.downsample = None if first else nn.Conv2d(cin, cout, 2, 2)
        self.blocks = nn.ModuleList(Block(cout, heads) for _ in range(depth))


@MODELS.register_module(force=True)
class TinyAttnBackbone(BaseBackbone):
    arch_settings = {'t': dict(embed_dims=[8, 16], depths=[1, 2], num_heads=[2, 2]),
                     'deep': dict(embed_dims=[8, 16], depths=[1, 4], num_heads=[2, 2])}
    arch_keys = ('embed_dims', 'depths', 'num_heads')

    def __init__(self, arch='t', **kwargs):
        super().__init__(arch, **kwargs)
        dims = self.arch['embed_dims']
        self.patch_embed = nn.Conv2d(3, dims[0], 4, 4)
        self.stages = nn.ModuleList(
            Stage(dims[max(i - 1, 0)], dims[i], d, self.arch['num_heads'][i], i == 0)
            for i, d in enumerate(self.depths))
        self._freeze_stages()

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x = stage.downsample(x)
            for block in stage.blocks:
                x = self.run_block(block, x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
'''

HEADER = '''
custom_imports = dict(imports=['mmvit_ext', 'tiny_attn_backbone'], allow_failed_imports=False)
backbone = dict(type='mmvit_ext.TinyAttnBackbone', arch='t',
                init_cfg=dict(type='Pretrained', checkpoint='does-not-exist.pth'))
'''
CONFIGS = {
    'cls': '''
default_scope = 'mmpretrain'
model = dict(type='ImageClassifier', backbone=dict(backbone, out_indices=(1, )),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10, in_channels=16))
''',
    'det': '''
default_scope = 'mmdet'
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(backbone, out_indices=(0, 1)),
    neck=dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0], strides=[4, 8]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True), loss_bbox=dict(type='L1Loss')),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
''',
    'seg': '''
default_scope = 'mmseg'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained='does-not-exist.pth',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], size=(64, 64)),
    backbone=dict(backbone, out_indices=(0, 1), init_cfg=None),
    decode_head=dict(type='FCNHead', in_channels=16, in_index=1, channels=8, num_convs=1,
                     concat_input=False, num_classes=4, norm_cfg=norm_cfg,
                     loss_decode=dict(type='CrossEntropyLoss')),
    auxiliary_head=dict(type='FCNHead', in_channels=8, in_index=0, channels=8, num_convs=1,
                        num_classes=4, norm_cfg=norm_cfg,
                        loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
''',
}


def tiny_backbone_flops(height, width, dims=(8, 16), depths=(1, 2)):
    """Multiply-adds of TinyAttnBackbone on one (3, H, W) image, from its layer shapes."""
    tokens = (height // 4) * (width // 4)
    flops = dims[0] * 3 * 4 * 4 * tokens  # stem conv 4x4 stride 4
    for i, (dim, depth) in enumerate(zip(dims, depths)):
        if i > 0:
            tokens //= 4
            flops += dim * dims[i - 1] * 2 * 2 * tokens  # downsample conv 2x2 stride 2
        # qkv and proj linears, then q k^T and attn v over all heads (2 * tokens^2 * dim)
        flops += depth * (tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens**2 * dim)
    return flops


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('analysis_tools')
    (path / 'tiny_attn_backbone.py').write_text(TINY_BACKBONE)
    for name, body in CONFIGS.items():
        (path / f'{name}.py').write_text(HEADER + body)
    return path


def run_tool(workdir, tool, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(workdir), REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, osp.join(TOOLS, f'{tool}.py'), *map(str, args)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def parse_sections(output):
    """{section name: {'params': int, 'flops': int, 'params_m': str, 'flops_g': str}}."""
    sections = {}
    for name, body in re.findall(r'== (.+?) ==\n(.*?)(?=\n== |\Z)', output, re.S):
        sections[name] = dict(
            params=int(re.search(r'Params \(exact\): ([\d,]+)', body)[1].replace(',', '')),
            flops=int(re.search(r'FLOPs \(exact\): ([\d,]+)', body)[1].replace(',', '')),
            params_m=re.search(r'Params: (\S+) M', body)[1],
            flops_g=re.search(r'FLOPs: (\S+) G', body)[1])
    return sections


# -- FLOP handles -----------------------------------------------------------------------------
class _Ops(nn.Module):

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, *xs):
        return self.op(*xs)


def flops_of(op, *inputs):
    return count_flops(_Ops(op), inputs)


def test_sdpa_handle_counts_both_matmuls():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    total, by_op, unsupported = flops_of(F.scaled_dot_product_attention, q, k, v)
    assert total == 2 * 3 * 5 * 7 * 4 + 2 * 3 * 5 * 7 * 6
    assert 'aten::scaled_dot_product_attention' not in unsupported


def test_sdpa_handle_with_mask_and_broadcast_kv():
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(1, 1, 9, 4), torch.randn(1, 1, 9, 4)
    mask = torch.zeros(5, 9)
    total, _, _ = flops_of(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m),
                           q, k, v, mask)
    assert total == 2 * 3 * 5 * 9 * (4 + 4)


def test_einsum_and_matmul_handles_are_exact():
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4)
    total, _, _ = flops_of(lambda a, b: torch.einsum('bhqd,bhkd->bhqk', a, b), q, k)
    assert total == 2 * 3 * 5 * 7 * 4
    # Broadcast batch dims on the second operand only.
    total, _, _ = flops_of(torch.matmul, torch.randn(5, 4), torch.randn(2, 3, 4, 6))
    assert total == 2 * 3 * 5 * 4 * 6
    total, _, _ = flops_of(torch.baddbmm, torch.randn(3, 5, 6), torch.randn(3, 5, 4),
                           torch.randn(3, 4, 6))
    assert total == 3 * 5 * 4 * 6
    # Linear and convolution are counted by mmengine itself.
    total, _, _ = flops_of(nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 6, 5))
    assert total == 8 * 3 * 9 * 6 * 5


# -- get_flops.py -----------------------------------------------------------------------------
@pytest.mark.slow
def test_get_flops_classifier(workdir):
    height, width = 32, 64
    out = run_tool(workdir, 'get_flops', 'cls.py', '--shape', height, width)
    assert f'Input shape: (1, 3, {height}, {width})' in out
    sections = parse_sections(out)
    model, backbone = sections['model'], sections['backbone']

    from mmpretrain.registry import MODELS  # noqa: F401  (the toolbox builds the same model)
    sys.path.insert(0, str(workdir))
    try:
        import tiny_attn_backbone
        reference = tiny_attn_backbone.TinyAttnBackbone(out_indices=(1, ))
    finally:
        sys.path.remove(str(workdir))
    backbone_params = sum(p.numel() for p in reference.parameters())
    assert backbone['params'] == backbone_params
    assert model['params'] == backbone_params + 16 * 10 + 10  # + LinearClsHead fc
    assert backbone['flops'] == tiny_backbone_flops(height, width)
    # Head: global average pool (1 per input element) + fc.
    assert model['flops'] - backbone['flops'] == 16 * (height // 8) * (width // 8) + 16 * 10
    assert model['params_m'] == f'{model["params"] / 1e6:.2f}'
    assert model['flops_g'] == f'{model["flops"] / 1e9:.2f}'


@pytest.mark.slow
def test_get_flops_detector(workdir):
    out = run_tool(workdir, 'get_flops', 'det.py', '--shape', 64, 96)
    assert 'Input shape: (1, 3, 64, 96)' in out
    sections = parse_sections(out)
    assert sections['backbone']['flops'] == tiny_backbone_flops(64, 96)
    assert sections['model']['flops'] > sections['backbone']['flops']
    assert sections['model']['params'] > sections['backbone']['params']


@pytest.mark.slow
def test_get_flops_segmentor_drops_auxiliary_head(workdir):
    out = run_tool(workdir, 'get_flops', 'seg.py', '--shape', 64)
    assert 'Input shape: (1, 3, 64, 64)' in out
    sections = parse_sections(out)
    model, backbone = sections['model (without auxiliary head)'], sections['backbone']
    assert backbone['flops'] == tiny_backbone_flops(64, 64)
    # FCNHead: 3x3 conv 16->8 (no bias) + BN (SyncBN reverted: 2*8) + 1x1 conv_seg 8->4.
    assert model['params'] - backbone['params'] == 16 * 8 * 9 + 2 * 8 + 8 * 4 + 4


def test_get_flops_bad_inputs(workdir, tmp_path):
    get_flops = load_tool('analysis_tools/get_flops.py')
    with pytest.raises(SystemExit, match='does not exist'):
        get_flops.main([str(tmp_path / 'missing.py')])
    bad_scope = tmp_path / 'bad_scope.py'
    bad_scope.write_text("default_scope = 'mmocr'\nmodel = dict()\n")
    with pytest.raises(SystemExit, match="default_scope='mmocr'"):
        get_flops.main([str(bad_scope)])


# -- benchmark.py -----------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_against_baseline(workdir):
    out = run_tool(workdir, 'benchmark', 'cls.py', '--sizes', 32, 64, '--batch', 2,
                   '--repeat', 2, '--warmup', 1, '--threads', 1, '--device', 'cpu',
                   '--baseline-cfg-options', 'model.backbone.arch=deep')
    assert 'baseline overrides' in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith('size |'))
    assert 'model ms' in header and 'baseline ms' in header and 'model vs baseline' in header
    rows = {}
    for line in out.splitlines():
        cells = [c.split() for c in line.split('|')]
        if len(cells) == 4 and cells[0] and cells[0][0].isdigit():
            rows[int(cells[0][0])] = cells
    assert set(rows) == {32, 64}
    for cells in rows.values():
        assert len(cells[1]) == len(cells[2]) == 3 and cells[3][0].endswith('x')
        for ms, ips, peak_mb in (map(float, cells[1]), map(float, cells[2])):
            assert ms > 0 and ips > 0 and peak_mb >= 0
    scaling = out.split('Latency scaling')[1].splitlines()
    assert scaling[2].split() == ['32', '|', '1.00', '|', '1.00']


def _tiny_backbone(workdir):
    sys.path.insert(0, str(workdir))
    try:
        import tiny_attn_backbone
    finally:
        sys.path.remove(str(workdir))
    torch.manual_seed(0)
    return tiny_attn_backbone.TinyAttnBackbone(out_indices=(0, 1)).eval()


def test_benchmark_oracle_comparison(workdir):
    model = _tiny_backbone(workdir)
    oracle = copy.deepcopy(model)
    for module in oracle.modules():
        if hasattr(module, 'plain'):
            module.plain = True
    cpu = torch.device('cpu')
    runners = [Runner('model', model, cpu, False), Runner('oracle', oracle, cpu, False)]
    results, diffs = benchmark(runners, [16, 24], 2, 2, 1, cpu, CpuPeakMemory(),
                               check_against='oracle')
    assert set(diffs) == {16, 24} and max(diffs.values()) < 1e-5
    for size in (16, 24):  # raw figures: img/s is the batch over the median latency
        for res in results[size].values():
            assert res['ips'] == pytest.approx(2 / (res['ms'] / 1e3), rel=1e-9)
            assert res['peak_mb'] is None or res['peak_mb'] >= 0
    benchmark_tool = load_tool('analysis_tools/benchmark.py')
    report = benchmark_tool.format_report(['model', 'oracle'], [16, 24], results, diffs)
    assert 'model vs oracle' in report and 'maxdiff' in report
    ratio = results[16]['model']['ips'] / results[16]['oracle']['ips']
    row = next(line for line in report.splitlines() if line.strip().startswith('16 |'))
    assert f'{ratio:.2f}x' in row

    with torch.no_grad():  # a wrong oracle must show up in maxdiff
        oracle.stages[1].blocks[0].proj.bias.add_(1.0)
    _, diffs = benchmark(runners, [16], 1, 1, 0, cpu, CpuPeakMemory(), check_against='oracle')
    assert diffs[16] > 0.5


def test_benchmark_oracle_missing_is_a_clear_error(workdir):
    benchmark = load_tool('analysis_tools/benchmark.py')
    with pytest.raises(SystemExit, match='No oracle for TinyAttnBackbone'):
        benchmark.build_oracle(_tiny_backbone(workdir))


def test_cpu_peak_memory_sees_a_known_allocation():
    memory = CpuPeakMemory()
    if memory.reason:
        pytest.skip(memory.reason)
    nbytes = 64 * 2**20

    def allocate():
        return torch.ones(nbytes // 4).sum()

    for _ in range(2):  # the second call must not reuse memory kept from the first
        _, peak = memory.measure(allocate)
        assert 0.9 * nbytes <= peak <= 1.2 * nbytes


def test_rotation_benchmark_times_the_official_rotation(monkeypatch, capsys):
    from mmvit_ext.models.layers import ManhattanRelPos, manhattan_attention
    tool = load_tool('analysis_tools/rotation_benchmark.py')
    # the probe is the official rotation of interleaved pairs (2j, 2j + 1): in this package's
    # layout, pairs (j, j + d/2), it equals rotate_pairs
    torch.manual_seed(0)
    interleaved = torch.randn(2, 3, 4, 2, 2, 8)
    (cos, sin), _ = ManhattanRelPos(16, 2)(3, 4, True, like=interleaved)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)

    def to_halves(t):
        return t.unflatten(-1, (4, 2)).transpose(-1, -2).flatten(-2)

    torch.testing.assert_close(to_halves(tool.ComplexRotation()(interleaved, cos, sin)),
                               manhattan_attention.rotate_pairs(to_halves(interleaved), cos, sin))
    # a tiny run: the model's complex rounds go through the probe, and the swap is undone
    probe_calls = []
    real_call = tool.ComplexRotation.__call__
    monkeypatch.setattr(tool.ComplexRotation, '__call__',
                        lambda self, *a: probe_calls.append(1) or real_call(self, *a))
    real_rotation = manhattan_attention.rotate_pairs
    tool.main(['--arch', 't', '--batch', '1', '--size', '64', '--rounds', '2'])
    out = capsys.readouterr().out
    assert out.count('  stage ') == 4 and 'backbone forward' in out
    assert 'backbone training step' in out
    # per stage (2 rounds x 2 kinds x 4 stages) plus the backbone's 14 MaSA blocks per call
    assert len(probe_calls) > 16
    assert manhattan_attention.rotate_pairs is real_rotation
    with pytest.raises(SystemExit):
        tool.parse_args(['--size', '100'])
    assert 'multiple of 32' in capsys.readouterr().err
