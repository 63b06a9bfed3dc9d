"""The benchmark suite: gather_results.py end to end on the demo trainings, benchmark.py's
whole-model and training-step modes on the demo sets, and plot_results.py on the plotted data."""
import csv
import glob
import json
import os.path as osp

import pytest

from tests.conftest import (CLS_CFG, DET_CFG, REPO, SEG_CFG, check, demo_work_dir, load_tool,
                            run_tool)

TOOLS = osp.join(REPO, 'tools', 'analysis_tools')
GATHER = osp.join(TOOLS, 'gather_results.py')
BENCHMARK = osp.join(TOOLS, 'benchmark.py')
RMT_S_DET = osp.join(REPO, 'configs', 'rmt', 'mask-rcnn_rmt-s_fpn_1x_coco.py')

# row name -> (key logged by the test run, factor to the table's percent)
LOGGED = {'bbox mAP': ('coco/bbox_mAP', 100), 'segm mAP': ('coco/segm_mAP', 100),
          'mIoU': ('mIoU', 1), 'top-1': ('accuracy/top1', 1)}


@pytest.mark.slow
def test_gather_results_table_equals_the_test_logs(trained_classifier, trained_detector,
                                                   trained_segmentor, demo_root, tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# Demo\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n'
                      'after\n')
    out = tmp_path / 'demo_results'
    roots = ['--work-dir-root', str(demo_root / 'work_dirs')]
    printed = check(run_tool([GATHER, CLS_CFG, DET_CFG, SEG_CFG, RMT_S_DET, *roots, '--run-test',
                              '--out', str(out), '--update-readme', str(readme)], demo_root))
    rows = json.loads((out.with_suffix('.json')).read_text())
    assert [(r['model'], r['metric']) for r in rows] == [
        ('rmt-nano_1xb32_demo-cls', 'top-1'),  # the 4-class demo logs no top-5: no row
        ('mask-rcnn_rmt-nano_fpn_demo-coco', 'bbox mAP'),
        ('mask-rcnn_rmt-nano_fpn_demo-coco', 'segm mAP'),
        ('fpn_rmt-nano_1xb8_demo-ade', 'mIoU'),
        ('mask-rcnn_rmt-s_fpn_1x_coco', 'bbox mAP'),
        ('mask-rcnn_rmt-s_fpn_1x_coco', 'segm mAP')]

    table_lines = (out.with_suffix('.md')).read_text().splitlines()
    with open(out.with_suffix('.csv')) as f:
        csv_rows = list(csv.DictReader(f))
    for row, csv_row, line in zip(rows[:4], csv_rows, table_lines[2:]):
        config = {'top-1': CLS_CFG, 'mIoU': SEG_CFG}.get(row['metric'], DET_CFG)
        work = demo_work_dir(demo_root, config)
        # the one test run gather made, on the checkpoint it chose: best, else the latest
        logs = glob.glob(osp.join(work, 'test', '*', '*.json'))
        assert len(logs) == 1, logs
        assert row['log'] == logs[0]
        metrics = json.loads(open(logs[0]).read())
        expected_ckpt = (glob.glob(osp.join(work, 'best_*.pth')) or
                         [osp.join(work, open(osp.join(work, 'last_checkpoint')).read()
                                   .strip())])[0]
        assert osp.realpath(row['checkpoint']) == osp.realpath(expected_ckpt)
        key, scale = LOGGED[row['metric']]
        assert row['logged'][key] == metrics[key]
        shown = f'{metrics[key] * scale:.{1 if scale == 100 else 2}f}'
        assert row['ours'] == csv_row['ours'] == shown
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert cells[2:4] == [row['metric'], shown], line
        assert row['paper'] == '-' and row['delta'] == '-'  # no metafile entry for demos
        if row['metric'] == 'bbox mAP':  # AP50 ... APl of the same log
            assert f'AP50 {metrics["coco/bbox_mAP_50"] * 100:.1f}' in row['details']
    # a config without checkpoint is a row that says so, with the paper's figure
    missing = rows[4]
    assert missing['ours'] == '-' and 'no checkpoint' in missing['details']
    assert missing['paper'] == '49.0' and missing['params'] == '45.57 M'
    assert table_lines[0].split('|')[1:-1] == [
        f' {c} ' for c in ('model', 'schedule', 'metric', 'ours', 'paper', 'delta', 'params',
                           'FLOPs', 'inference FPS', 'train img/s', 'details')]
    assert '\n'.join(table_lines) in printed
    text = readme.read_text()
    assert 'old table' not in text and text.endswith('<!-- results:end -->\nafter\n')
    assert text.count('| [') == len(rows)

    # without --run-test the existing logs give the same table
    again = tmp_path / 'again'
    check(run_tool([GATHER, CLS_CFG, DET_CFG, SEG_CFG, *roots, '--out', str(again)],
                   demo_root))
    assert [r['ours'] for r in json.loads(again.with_suffix('.json').read_text())] == \
        [r['ours'] for r in rows[:4]]


def test_gather_results_row_for_a_checkpoint_without_test_log(tmp_path):
    """A checkpoint that no test run evaluated yet is reported as such, not with the metrics
    of another checkpoint's test log."""
    gather = load_tool('analysis_tools/gather_results.py')
    work = tmp_path / 'work_dirs' / 'rmt-nano_1xb32_demo-cls'
    run = work / '20260101_000000'
    (run / 'vis_data').mkdir(parents=True)
    (work / 'epoch_2.pth').write_bytes(b'')
    (work / 'epoch_8.pth').write_bytes(b'')
    (run / 'vis_data' / 'config.py').write_text(
        f"load_from = {str(work / 'epoch_2.pth')!r}\nmodel = dict(type='ImageClassifier')\n")
    (run / '20260101_000000.json').write_text('{"accuracy/top1": 91.25}')
    assert gather.find_checkpoint(str(work)) == str(work / 'epoch_8.pth')  # tmp_path: absolute
    rows = gather.gather(gather.expand_configs([CLS_CFG]), str(tmp_path / 'work_dirs'))
    assert [(r['metric'], r['ours']) for r in rows] == [('top-1', '-'), ('top-5', '-')]
    assert all('no test log of epoch_8.pth' in r['details'] for r in rows)
    # once epoch_8 is the tested one, its figure is used
    (run / 'vis_data' / 'config.py').write_text(
        f"load_from = {str(work / 'epoch_8.pth')!r}\nmodel = dict(type='ImageClassifier')\n")
    rows = gather.gather(gather.expand_configs([CLS_CFG]), str(tmp_path / 'work_dirs'))
    assert [(r['metric'], r['ours']) for r in rows] == [('top-1', '91.25')]  # no top-5 logged


def test_gather_results_reads_metafile_order_and_papers():
    gather = load_tool('analysis_tools/gather_results.py')
    configs = gather.expand_configs([osp.join(REPO, 'configs', 'rmt', 'metafile.yml')])
    names = [entry['Name'] for _, entry in configs]
    assert names[:2] == ['rmt-t_8xb128_in1k', 'rmt-s_8xb128_in1k']
    entry = dict(configs)[osp.join(REPO, 'configs/rmt/mask-rcnn_rmt-s_fpn_1x_coco.py')]
    assert gather.paper_value(entry, 'box AP') == 49.0
    assert gather.paper_value(entry, 'mask AP') == 43.9


# -- benchmark.py on whole models and training steps -------------------------------------------
def _report_rows(output, names):
    header = next(line for line in output.splitlines() if line.lstrip().startswith('input |'))
    for name in names:
        assert f'{name} ms' in header, header
    rows = [line for line in output.splitlines()
            if '|' in line and line.split('|')[0].strip()[:1].isdigit()]
    assert len(rows) == 1, output
    return [cell.split() for cell in rows[0].split('|')]


@pytest.mark.slow
def test_benchmark_whole_detector_on_demo_images(demo_root, tmp_path):
    out_json = tmp_path / 'whole.json'
    out = check(run_tool([BENCHMARK, DET_CFG, '--repeat', '1', '--warmup', '0', '--threads',
                          '1', '--device', 'cpu', '--batch', '2', '--out', str(out_json)],
                         demo_root))
    assert 'Benchmarked: whole model RMT' in out and 'test_step' in out
    cells = _report_rows(out, ['model', 'plain'])  # RMT: fused and plain side by side
    assert cells[0] == ['128x128']  # the demo test pipeline's scale
    report = json.loads(out_json.read_text())
    assert report['mode'] == 'whole' and report['batch'] == 2
    figures = report['results']['128x128']['model']
    assert figures['ips'] == pytest.approx(2 / (figures['ms'] / 1e3))
    assert f'{figures["ms"]:.2f}' == cells[1][0]


@pytest.mark.slow
def test_benchmark_training_steps_against_overrides(demo_root, tmp_path):
    out_json = tmp_path / 'train.json'
    out = check(run_tool([BENCHMARK, SEG_CFG, '--train', '--repeat', '2', '--warmup', '0',
                          '--threads', '1', '--device', 'cpu', '--batch', '2',
                          '--baseline-cfg-options', 'model.backbone.arch.depths=[1,1,1,1]',
                          '--out', str(out_json)], demo_root))
    assert 'training step' in out and 'baseline overrides' in out
    cells = _report_rows(out, ['model', 'baseline'])
    assert cells[0] == ['64x64'] and cells[3][0].endswith('x')  # the ratio column
    report = json.loads(out_json.read_text())
    assert report['mode'] == 'train'
    model, baseline = report['results']['64x64']['model'], report['results']['64x64']['baseline']
    assert cells[3][0] == f'{model["ips"] / baseline["ips"]:.2f}x'
    for figures in (model, baseline):
        assert figures['ips'] == pytest.approx(2 / (figures['ms'] / 1e3))
        assert figures['peak_mb'] is None or figures['peak_mb'] > 0  # backward allocates


@pytest.mark.slow
def test_benchmark_train_refuses_fusion_and_cpu_amp(demo_root):
    benchmark = load_tool('analysis_tools/benchmark.py')
    with pytest.raises(SystemExit):
        benchmark.parse_args([SEG_CFG, '--train', '--fuse', 'on'])
    proc = run_tool([BENCHMARK, SEG_CFG, '--train', '--amp', '--device', 'cpu'], demo_root)
    assert proc.returncode != 0 and 'AmpOptimWrapper runs on CUDA only' in proc.stderr


@pytest.mark.slow
def test_train_runner_updates_the_weights_through_the_optim_wrapper(demo_root, monkeypatch):
    """One TrainRunner call is one optimizer step of the config's optim wrapper."""
    import torch
    from mmengine.config import Config
    monkeypatch.chdir(demo_root)
    benchmark = load_tool('analysis_tools/benchmark.py')
    cfg = Config.fromfile(SEG_CFG)
    runner = benchmark.build_train_runner('model', cfg, torch.device('cpu'), 2, False, 2)
    steps = []
    real_step = runner.optim_wrapper.step
    monkeypatch.setattr(runner.optim_wrapper, 'step', lambda **kw: steps.append(1) or
                        real_step(**kw))
    before = {k: v.clone() for k, v in runner.module.state_dict().items()}
    losses = runner()
    assert steps == [1] and 'loss' in ' '.join(losses)
    changed = [k for k, v in runner.module.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    assert any(k.startswith('decode_head.') for k in changed)
    assert runner.images() == 2


@pytest.mark.slow
def test_train_runner_computes_attention_with_its_kernel(demo_root, monkeypatch, capsys):
    """--baseline-attention-kernel sdpa: the baseline is the config itself, its training steps
    run every softmax attention through SDPA, the model's through the measured (explicit)
    choice."""
    import torch
    from mmengine.config import Config

    from mmvit_ext.models.layers import attention_ops
    monkeypatch.chdir(demo_root)
    benchmark = load_tool('analysis_tools/benchmark.py')
    calls = []
    real_sdpa, real_explicit = attention_ops.F.scaled_dot_product_attention, \
        attention_ops._explicit
    monkeypatch.setattr(attention_ops.F, 'scaled_dot_product_attention',
                        lambda *a, **kw: calls.append('sdpa') or real_sdpa(*a, **kw))
    monkeypatch.setattr(attention_ops, '_explicit',
                        lambda *a: calls.append('explicit') or real_explicit(*a))
    runner = benchmark.build_train_runner('model', Config.fromfile(SEG_CFG),
                                          torch.device('cpu'), 2, False, 1)
    for kernel in ('auto', 'sdpa', 'explicit'):
        runner.attention_kernel = kernel
        calls.clear()
        runner()
        assert calls and set(calls) == {'sdpa' if kernel == 'sdpa' else 'explicit'}, kernel
    benchmark.main([SEG_CFG, '--train', '--repeat', '1', '--warmup', '0',
                    '--device', 'cpu', '--batch', '2', '--baseline-attention-kernel', 'sdpa'])
    out = capsys.readouterr().out
    assert 'attention kernels: model auto, baseline sdpa' in out
    assert _report_rows(out, ['model', 'baseline'])[0] == ['64x64']


# -- plots ---------------------------------------------------------------------------------------
SCALARS = [
    dict(lr=1e-3, loss=2.0, loss_cls=1.5, step=10), dict(lr=8e-4, loss=1.2, loss_cls=0.9, step=20),
    {'coco/bbox_mAP': 0.1, 'step': 1},
    dict(lr=5e-4, loss=0.7, loss_cls=0.5, step=30), {'coco/bbox_mAP': 0.3, 'step': 2},
]


def _write_run(root, name, records):
    run = root / name / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    return str(root / name)


def test_plot_curves_draws_the_logged_values(tmp_path):
    plot = load_tool('analysis_tools/plot_results.py')
    run_a = _write_run(tmp_path, 'a', SCALARS)
    run_b = _write_run(tmp_path, 'b', [dict(r, loss=r['loss'] * 2) if 'loss' in r else r
                                       for r in SCALARS])
    fig = plot.plot_curves([run_a, run_b], ['loss', 'coco/bbox_mAP'], ['A', 'B'])
    loss_ax, map_ax = fig.axes
    assert loss_ax.get_title() == 'loss' and map_ax.get_title() == 'coco/bbox_mAP'
    (a_loss, b_loss), (a_map, _) = loss_ax.lines, map_ax.lines
    assert list(a_loss.get_xdata()) == [10, 20, 30]
    assert list(a_loss.get_ydata()) == [2.0, 1.2, 0.7]
    assert list(b_loss.get_ydata()) == [4.0, 2.4, 1.4]
    assert list(a_map.get_xdata()) == [1, 2] and list(a_map.get_ydata()) == [0.1, 0.3]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ['A', 'B']

    png = tmp_path / 'curves.png'
    plot.main(['curves', run_a, '--keys', 'loss_cls', 'lr', '--out', str(png)])
    from PIL import Image
    with Image.open(png) as img:
        assert img.format == 'PNG' and img.width > img.height > 100
    with pytest.raises(SystemExit, match='logged no acc'):
        plot.plot_curves([run_a], ['acc'])


def test_plot_speed_from_benchmark_output(tmp_path):
    benchmark = load_tool('analysis_tools/benchmark.py')
    plot = load_tool('analysis_tools/plot_results.py')
    outputs = []
    for arch in ('t', 'deep'):
        cfg = tmp_path / f'{arch}.py'
        cfg.write_text(f"_base_ = [{CLS_CFG!r}]\n")
        outputs.append(tmp_path / f'{arch}.json')
        benchmark.main([str(cfg), '--sizes', '32', '48', '--batch', '1', '--repeat', '1',
                        '--warmup', '0', '--threads', '1', '--device', 'cpu', '--fuse', 'off',
                        '--out', str(outputs[-1])] +
                       (['--cfg-options', 'model.backbone.arch.depths=[1,1,3,1]']
                        if arch == 'deep' else []))
    fig = plot.plot_speed([str(p) for p in outputs], 'ms')
    lines = fig.axes[0].lines
    assert [line.get_label() for line in lines] == ['t', 'deep']
    for line, path in zip(lines, outputs):
        results = json.loads(path.read_text())['results']
        assert list(line.get_xdata()) == [32, 48]
        assert list(line.get_ydata()) == [results['32']['model']['ms'],
                                          results['48']['model']['ms']]
    png = tmp_path / 'speed.png'
    plot.main(['speed', *map(str, outputs), '--metric', 'peak_mb', '--out', str(png)])
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


# -- backbone_table.py ---------------------------------------------------------------------------
BACKBONE_TABLE = osp.join(TOOLS, 'backbone_table.py')


def _markdown_rows(table):
    """{first cell: cells} of the Markdown table rows, and the header's cells."""
    lines = [line for line in table.splitlines() if line.startswith('| ')]
    split = [[cell.strip() for cell in line.strip().strip('|').split('|')] for line in lines]
    return {cells[0]: cells for cells in split[1:]}, split[0]


@pytest.mark.slow
def test_backbone_table_smoke_run(tmp_path):
    """Three rows (ours with and without fusable blocks, a peer from mmpretrain's configs) on
    small inputs: the table, the JSON and the plot hold the same figures."""
    out = tmp_path / 'table'
    printed = check(run_tool([BACKBONE_TABLE, '--models', 'RMT-S', 'LaViT-S', 'ResNet-50',
                              '--size', '64', '--dense-size', '64', '96', '--batch', '2',
                              '--repeat', '1', '--warmup', '0', '--threads', '1', '--device',
                              'cpu', '--out', str(out)], tmp_path))
    table = (tmp_path / 'table.md').read_text()
    assert table.strip() in printed
    assert 'torch threads' in table.splitlines()[0] and '1 torch threads' in table
    with open('/proc/cpuinfo') as f:
        cpu = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), None)
    assert cpu is None or cpu in table.splitlines()[0]
    rows, header = _markdown_rows(table)
    assert list(rows) == ['RMT-S', 'LaViT-S', 'ResNet-50']
    assert len(header) == 13 and all(len(cells) == 13 for cells in rows.values())
    column = {name: i for i, name in enumerate(header)}
    assert rows['RMT-S'][column['ImageNet top-1']] == '84.1 (paper)'  # our metafile
    assert rows['LaViT-S'][column['ImageNet top-1']] == '-'  # none published
    assert rows['ResNet-50'][column['ImageNet top-1']] == '76.55'  # mmpretrain's metafile
    assert [rows[n][column['CPU fp32 fused img/s']] for n in ('LaViT-S', 'ResNet-50')] == \
        ['-', '-']

    report = json.loads((tmp_path / 'table.json').read_text())
    assert report['settings'] == dict(size=64, dense_size=[64, 96], batch=2, dense_batch=1,
                                      repeat=1, warmup=0)
    by_name = {row['name']: row for row in report['rows']}
    assert by_name['RMT-S']['params'] == 26967240  # the metafile's, counted the same way
    for name, cells in rows.items():
        row = by_name[name]
        assert cells[column['params (M)']] == f'{row["params"] / 1e6:.2f}'
        assert cells[column['FLOPs (G)']] == f'{row["flops"] / 1e9:.2f}'
        figures = dict(row['cpu_inference'], train=row['train'],
                       dense=row['dense_inference'], dense_train=row['dense_train'])
        for key, res in figures.items():
            if res is None:
                assert key == 'fused' and name != 'RMT-S'
                continue
            images = 1 if key.startswith('dense') else 2
            assert res['ips'] == pytest.approx(images / (res['ms'] / 1e3)), (name, key)
        assert cells[column['CPU fp32 img/s']] == f'{row["cpu_inference"]["fp32"]["ips"]:.1f}'
        assert cells[column['CPU bf16 img/s']] == f'{row["cpu_inference"]["bf16"]["ips"]:.1f}'
        assert cells[column['64x96 train ms']] == f'{row["dense_train"]["ms"]:.1f}'
        for key in ('train', 'dense_train'):  # the backward allocates
            assert row[key]['peak_mb'] is None or row[key]['peak_mb'] > 0
    assert rows['RMT-S'][column['CPU fp32 fused img/s']] == \
        f'{by_name["RMT-S"]["cpu_inference"]["fused"]["ips"]:.1f}'
    assert (tmp_path / 'table.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('args,message', [
    (['--models', 'RMT-X'], 'unknown RMT-X; the rows are RMT-S, GroupMixFormer-S'),
    (['--size', '64'], 'at least 224 for Swin-T; raise them, or leave Swin-T out'),
    (['--models', 'RMT-S', '--batch', '1'], '--batch must be at least 2'),
    (['--quick', '--models', 'RMT-S', '--repeat', '0'], '--repeat and --threads must be >= 1'),
])
def test_backbone_table_refuses_bad_options(args, message, capsys):
    with pytest.raises(SystemExit):
        load_tool('analysis_tools/backbone_table.py').parse_args(args)
    assert message in capsys.readouterr().err


def test_backbone_table_quick_settings_yield_to_explicit_options():
    args = load_tool('analysis_tools/backbone_table.py').parse_args(['--quick', '--size', '256'])
    assert (args.size, args.dense_size, args.batch, args.repeat) == (256, (224, 224), 2, 1)
    assert [spec[0] for spec in args.models] == ['RMT-S', 'GroupMixFormer-S', 'Pale-T',
                                                 'LaViT-S', 'Swin-T', 'ConvNeXt-T',
                                                 'ResNet-50']
