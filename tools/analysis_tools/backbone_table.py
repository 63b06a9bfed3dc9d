"""A table for choosing a backbone: the default variant of each family (RMT-S, GroupMixFormer-S,
Pale-T, LaViT-S) beside Swin-T, ConvNeXt-T and ResNet-50 built from mmpretrain's own configs,
all measured in one run on this machine.

Usage::

    python tools/analysis_tools/backbone_table.py [--out work_dirs/backbone_table]
        [--models RMT-S Swin-T ...] [--size 224] [--dense-size 800 1216] [--batch 8]
        [--dense-batch 1] [--repeat 10] [--warmup 2] [--threads N] [--device cpu|cuda]
        [--quick]

Columns, per model (its ImageNet-1k classification config):

* params and FLOPs of the classifier at ``--size`` (``mmvit_ext.analysis.count_flops``, the
  counter of get_flops.py, for all models: one multiply-add is one FLOP);
* ImageNet-1k top-1 from the metafiles: ours (``configs/<family>/metafile.yml``) measured
  ``Results``, else the paper's figure, marked ``(paper)``; the peers' from mmpretrain's
  metafiles (measured with its released weights); ``-`` where none is published;
* CPU inference img/s of the classifier at ``--size``, batch ``--batch``: fp32 with the plain
  modules, fp32 through ``mmvit_ext.fuse_for_cpu_inference`` (``-`` for models without fusable
  blocks), and the plain modules under bfloat16 autocast;
* training step img/s and peak memory of the classifier at ``--size``, batch ``--batch``:
  ``model.train_step`` (data preprocessor with the config's batch augments, forward, loss,
  backward, the config's optim wrapper) on random images and labels, fp32, on ``--device``;
* the backbone alone at ``--dense-size`` (H W), batch ``--dense-batch``, all four stage outputs
  as detectors and segmentors take them, fp32, on ``--device``: inference latency and peak
  memory, and the latency and peak memory of a training step (forward, backward of the mean of
  the outputs in place of the heads' losses, the config's optim wrapper's step).

Each group of columns (inference at ``--size``, training at ``--size``, backbone inference,
backbone training) is one interleaved run of the runners of ``benchmark.py``
(``mmvit_ext.analysis.benchmarking``): the models take turns within each repetition, so machine
noise hits them alike. Latency is the median of ``--repeat`` calls after ``--warmup``; peak
memory is the most memory held during one call above what was held before it (CPU: peak
resident set size, CUDA: ``max_memory_allocated``). Weights are the configs' random
initialisation (no checkpoint is needed).

Outputs: the Markdown table, with the machine (CPU model, threads, device) and the date, on
stdout and in ``<out>.md``; every figure in ``<out>.json``; ``<out>.png``: top-1 versus the
measured CPU fp32 latency per image (plain modules, and fused where it applies).

``--quick`` measures once, at batch 2, the classifiers and the backbones at 224x224 (Swin-T's
smallest input), with no warm-up: it checks that everything runs, its figures mean nothing.
Explicit options override it (e.g. ``--size 64 --dense-size 64 96`` without Swin-T).
"""
import argparse
import contextlib
import copy
import datetime
import json
import logging
import os
import os.path as osp
import platform
import sys

import torch
from mmengine.model import BaseModel

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmvit_ext.analysis import CpuPeakMemory, CudaPeakMemory, Runner, TrainRunner, \
    benchmark_cases, count_flops, count_params  # noqa: E402
from mmvit_ext.utils.config import build_from_config, load_config  # noqa: E402

# (row name, model name in its index, index, backbone overrides for the dense columns beyond
# all four stage outputs: those of the family's detection configs)
MODELS = [
    ('RMT-S', 'rmt-s_8xb128_in1k', 'mmvit_ext', {}),
    ('GroupMixFormer-S', 'groupmixformer-s_8xb128_in1k', 'mmvit_ext', {}),
    ('Pale-T', 'pale-t_8xb128_in1k', 'mmvit_ext', dict(with_out_norms=True)),
    ('LaViT-S', 'lavit-s_8xb128_in1k', 'mmvit_ext', {}),
    ('Swin-T', 'swin-tiny_16xb64_in1k', 'mmpretrain', {}),
    ('ConvNeXt-T', 'convnext-tiny_32xb128_in1k', 'mmpretrain',
     dict(gap_before_final_norm=False)),
    ('ResNet-50', 'resnet50_8xb32_in1k', 'mmpretrain', {}),
]
# The smallest input side a model runs at: mmpretrain's Swin refuses stage maps smaller than its
# 7x7 windows (7 x stride 32); the others need a stride-32 map of at least one pixel.
MIN_SIZE = {'Swin-T': 224}
SETTINGS = dict(size=224, dense_size=(800, 1216), batch=8, dense_batch=1, repeat=10, warmup=2)
QUICK_SETTINGS = dict(size=224, dense_size=(224, 224), batch=2, dense_batch=1, repeat=1,
                      warmup=0)
TOP1 = 'Top 1 Accuracy'


# -- models and their metafile entries ----------------------------------------------------------
def imagenet_top1(results, paper_results=()):
    """``(top-1, source)`` of a metafile entry: the first ImageNet-1k ``Results`` figure
    (measured with released weights, source ``''``), else its ``Paper Results`` one (source
    ``'paper'``); ``(None, '')`` when neither has one."""
    for items, source in ((results, ''), (paper_results, 'paper')):
        for result in items or []:
            if result.get('Dataset') == 'ImageNet-1k' and TOP1 in (result.get('Metrics') or {}):
                return float(result['Metrics'][TOP1]), source
    return None, ''


def load_model_entry(name, index):
    """``(config, top-1, top-1 source)`` of a model of this package's index or mmpretrain's."""
    if index == 'mmvit_ext':
        from mmvit_ext.apis import load_model_index
        entry = load_model_index()[name]
        top1, source = imagenet_top1(entry.get('Results'), entry.get('Paper Results'))
        return load_config(entry['Config']), top1, source
    from mmpretrain.apis import ModelHub
    model = ModelHub.get(name)
    results = [dict(Dataset=r.dataset, Metrics=r.metrics) for r in model.results or []]
    top1, source = imagenet_top1(results)
    return copy.deepcopy(model.config), top1, source


class BackboneTrainingModel(BaseModel):
    """The backbone alone, trainable through ``train_step`` as mmengine models are: its loss is
    the mean of every output map (a stand-in for the heads, so that the backward reaches every
    stage)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=sum(out.mean() for out in self.backbone(inputs)))


def classifier_batch(batch, size, num_classes):
    """Random uint8 images and labels, as the data preprocessor of a classifier takes them."""
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, num_classes, (batch, ), generator=generator)
    return dict(inputs=images, data_samples=[DataSample().set_gt_label(int(label))
                                             for label in labels])


@contextlib.contextmanager
def mmengine_warnings_only():
    """Keep mmengine's info lines (one per parameter group of an optim wrapper, one per
    classifier with batch augments) out of the report."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def optim_wrapper_of(model, cfg):
    from mmengine.optim import build_optim_wrapper
    with mmengine_warnings_only():
        return build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


# -- measuring ------------------------------------------------------------------------------------
def build_classifiers(specs, settings):
    """The rows (top-1, and params and FLOPs of the classifier at the size) and, for each,
    ``(row, config, classifier)``: one module, in eval mode for the inference columns, then
    trained."""
    rows, classifiers = [], []
    for name, model_name, index, _ in specs:
        cfg, top1, source = load_model_entry(model_name, index)
        torch.manual_seed(0)
        with mmengine_warnings_only():
            classifier = build_from_config(cfg)
        flops = count_flops(classifier, (torch.randn(1, 3, settings['size'],
                                                     settings['size']), ))[0]
        row = dict(name=name, model=model_name, index=index, top1=top1, top1_source=source,
                   params=count_params(classifier), flops=flops)
        rows.append(row)
        classifiers.append((row, cfg, classifier))
        print(f'{name}: {model_name} ({index}), {row["params"] / 1e6:.2f} M params, '
              f'{flops / 1e9:.2f} GFLOPs at {settings["size"]}', flush=True)
    return rows, classifiers


def build_backbones(specs, configs):
    """``(row, dense config, backbone)`` per ``(row, classification config)`` of ``configs``:
    its backbone with all four stage outputs and the overrides of ``specs``."""
    backbones = []
    for (_, _, _, overrides), (row, cfg) in zip(specs, configs):
        dense_cfg = copy.deepcopy(cfg)
        dense_cfg.merge_from_dict({'model.backbone': dict(out_indices=(0, 1, 2, 3),
                                                          **overrides)})
        torch.manual_seed(0)
        with mmengine_warnings_only():
            backbones.append((row, dense_cfg, build_from_config(dense_cfg).backbone))
    return backbones


def measure_cpu_inference(classifiers, settings):
    """fp32 plain, fp32 fused (where it applies) and bf16 autocast of every classifier on the
    CPU, interleaved; fills ``row['cpu_inference']``."""
    from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
    cpu = torch.device('cpu')
    runners = []
    for row, _, model in classifiers:
        runners.append(Runner(f'{row["name"]} fp32', model, cpu, False))
        row['fusable'] = False
        if can_fuse(model):
            fused = fuse_for_cpu_inference(copy.deepcopy(model))
            # fusing leaves the model as it was where this torch lacks the oneDNN kernels
            row['fusable'] = not can_fuse(fused)
            if row['fusable']:
                runners.append(Runner(f'{row["name"]} fused', fused, cpu, False))
        runners.append(Runner(f'{row["name"]} bf16', model, cpu, True))
    torch.manual_seed(0)
    x = torch.randn(settings['batch'], 3, settings['size'], settings['size'])
    results = _interleaved(runners, x, cpu, settings)
    for row, _, _ in classifiers:
        row['cpu_inference'] = {variant: results.get(f'{row["name"]} {variant}')
                                for variant in ('fp32', 'fused', 'bf16')}


def measure_training(classifiers, device, settings):
    """Training steps of every classifier on random images, interleaved; fills
    ``row['train']``."""
    runners = []
    for row, cfg, model in classifiers:
        data = classifier_batch(settings['batch'], settings['size'],
                                cfg.model.head.num_classes)
        runners.append(TrainRunner(row['name'], model, device, optim_wrapper_of(model, cfg),
                                   [data]))
    results = _interleaved(runners, None, device, settings)
    for row, _, _ in classifiers:
        row['train'] = results[row['name']]


def measure_dense(backbones, device, settings):
    """Inference, then training steps, of every backbone alone at the dense size, each
    interleaved; fills ``row['dense_inference']`` and ``row['dense_train']``."""
    torch.manual_seed(0)
    x = torch.randn(settings['dense_batch'], 3, *settings['dense_size'])
    results = _interleaved([Runner(row['name'], backbone, device, False)
                            for row, _, backbone in backbones], x.to(device), device, settings)
    for row, _, _ in backbones:
        row['dense_inference'] = results[row['name']]
    runners = []
    for row, cfg, backbone in backbones:
        model = BackboneTrainingModel(backbone)
        runners.append(TrainRunner(row['name'], model, device, optim_wrapper_of(model, cfg),
                                   [dict(inputs=x)]))
    results = _interleaved(runners, None, device, settings)
    for row, _, _ in backbones:
        row['dense_train'] = results[row['name']]


def _interleaved(runners, x, device, settings):
    """:func:`benchmark_cases` of the runners on one input (None: each runner's own data)."""
    memory = CudaPeakMemory() if device.type == 'cuda' else CpuPeakMemory()
    results, _ = benchmark_cases(runners, [('case', x)], settings['repeat'],
                                 settings['warmup'], device, memory)
    return results['case']


# -- report ---------------------------------------------------------------------------------------
def machine_description(device):
    """CPU model name (``/proc/cpuinfo``), torch threads and, on CUDA, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    text = f'{cpu}, {torch.get_num_threads()} torch threads'
    if device.type == 'cuda':
        text += f'; GPU {torch.cuda.get_device_name()}'
    return text


def _figure(result, key, fmt):
    if result is None:
        return 'OOM'
    return 'n/a' if result[key] is None else format(result[key], fmt)


def _top1_cell(row):
    if row['top1'] is None:
        return '-'
    return f'{row["top1"]:g}' + (f' ({row["top1_source"]})' if row['top1_source'] else '')


def format_table(rows, settings, device, machine, date):
    size, (height, width) = settings['size'], settings['dense_size']
    dense = f'{height}x{width}'
    header = ['model', 'params (M)', 'FLOPs (G)', 'ImageNet top-1', 'CPU fp32 img/s',
              'CPU fp32 fused img/s', 'CPU bf16 img/s', 'train img/s', 'train peak MB',
              f'{dense} ms', f'{dense} peak MB', f'{dense} train ms', f'{dense} train peak MB']
    lines = [
        f'Measured {date} on {machine}; torch {torch.__version__}.',
        f'Classifiers at {size}x{size}: CPU inference and training steps (on {device.type}), '
        f'batch {settings["batch"]}. Backbones alone at {dense} (all four stage outputs, on '
        f'{device.type}), batch {settings["dense_batch"]}. Medians of {settings["repeat"]} '
        f'runs after {settings["warmup"]} warm-up, each column group interleaved.',
        '',
        '| ' + ' | '.join(header) + ' |',
        '|' + '---|' * len(header),
    ]
    for row in rows:
        cpu = row['cpu_inference']
        fused = _figure(cpu['fused'], 'ips', '.1f') if row['fusable'] else '-'
        cells = [row['name'], f'{row["params"] / 1e6:.2f}', f'{row["flops"] / 1e9:.2f}',
                 _top1_cell(row), _figure(cpu['fp32'], 'ips', '.1f'), fused,
                 _figure(cpu['bf16'], 'ips', '.1f'), _figure(row['train'], 'ips', '.1f'),
                 _figure(row['train'], 'peak_mb', '.0f'),
                 _figure(row['dense_inference'], 'ms', '.1f'),
                 _figure(row['dense_inference'], 'peak_mb', '.0f'),
                 _figure(row['dense_train'], 'ms', '.1f'),
                 _figure(row['dense_train'], 'peak_mb', '.0f')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += [
        '',
        'FLOPs: one multiply-add = one FLOP, the same counter for all. ImageNet top-1 from the '
        'metafiles: "(paper)" the paper\'s figure for the configuration (no weights trained '
        'here), unmarked ones measured with mmpretrain\'s released weights, "-" none '
        'published. fused: mmvit_ext.fuse_for_cpu_inference ("-": no fusable blocks); bf16: '
        'the plain modules under CPU bfloat16 autocast. Peak MB: the most memory held during '
        'one call above what was held before it (CPU: resident set size).',
    ]
    return '\n'.join(lines)


def plot_top1_vs_latency(rows, settings):
    """ImageNet top-1 versus CPU fp32 latency per image: a filled marker for the plain modules,
    a hollow one joined to it for the fused ones; models without a top-1 are named below."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.8))
    left_out = []
    for i, row in enumerate(rows):
        plain, fused = row['cpu_inference']['fp32'], row['cpu_inference']['fused']
        if row['top1'] is None or plain is None:
            left_out.append(row['name'])
            continue
        color = f'C{i}'
        plain_ms = 1e3 / plain['ips']
        ax.plot([plain_ms], [row['top1']], 'o', color=color)
        if fused is not None:
            ax.plot([plain_ms, 1e3 / fused['ips']], [row['top1']] * 2, '-', color=color)
            ax.plot([1e3 / fused['ips']], [row['top1']], 'o', color=color, fillstyle='none')
        label = row['name'] + (f' ({row["top1_source"]})' if row['top1_source'] else '')
        ax.annotate(label, (plain_ms, row['top1']), textcoords='offset points',
                    xytext=(5, 5), fontsize=8)
    ax.plot([], [], 'ok', label='fp32, plain modules')
    ax.plot([], [], 'ok', fillstyle='none', label='fp32, fused (fuse_for_cpu_inference)')
    ax.legend(fontsize=8)
    ax.margins(x=0.2, y=0.1)  # room for the labels
    size = settings['size']
    ax.set_xlabel(f'CPU latency per image (ms), {size}x{size}, batch {settings["batch"]}')
    ax.set_ylabel('ImageNet-1k top-1 (%)')
    note = 'top-1 from the metafiles, (paper): the paper\'s figure'
    if left_out:
        note += '; no published top-1 or no figure: ' + ', '.join(left_out)
    fig.text(0.01, 0.01, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv=None):
    names = [spec[0] for spec in MODELS]
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/backbone_table',
                        help='output prefix: <out>.md, <out>.json, <out>.png')
    parser.add_argument('--models', nargs='+', metavar='NAME',
                        help=f'a subset of the rows, in the table\'s order ({", ".join(names)})')
    parser.add_argument('--size', type=int, help=f'classifier input size (default '
                        f'{SETTINGS["size"]})')
    parser.add_argument('--dense-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size of the backbone-alone columns (default %d %d)'
                        % SETTINGS['dense_size'])
    parser.add_argument('--batch', type=int, help=f'classifier batch, inference and training '
                        f'(default {SETTINGS["batch"]})')
    parser.add_argument('--dense-batch', type=int,
                        help=f'batch of the backbone-alone columns (default '
                             f'{SETTINGS["dense_batch"]})')
    parser.add_argument('--repeat', type=int, help=f'timed calls per model (default '
                        f'{SETTINGS["repeat"]})')
    parser.add_argument('--warmup', type=int, help=f'untimed calls before them (default '
                        f'{SETTINGS["warmup"]})')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='where the training and backbone-alone columns run (the '
                             'inference columns run on the CPU)')
    parser.add_argument('--quick', action='store_true',
                        help='small inputs, one repetition: checks that everything runs')
    args = parser.parse_args(argv)

    defaults = QUICK_SETTINGS if args.quick else SETTINGS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.dense_size = tuple(args.dense_size)
    if args.batch < 2:
        parser.error('--batch must be at least 2: the classifiers\' BatchNorm layers cannot '
                     'train on one value per channel')
    if args.dense_batch < 1 or args.repeat < 1 or args.warmup < 0 or \
            (args.threads is not None and args.threads < 1):
        parser.error('--dense-batch, --repeat and --threads must be >= 1, --warmup >= 0')
    if args.models:
        unknown = [m for m in args.models if m.lower() not in {n.lower() for n in names}]
        if unknown:
            parser.error(f'--models: unknown {", ".join(unknown)}; the rows are '
                         f'{", ".join(names)}')
        wanted = {m.lower() for m in args.models}
        args.models = [spec for spec in MODELS if spec[0].lower() in wanted]
    else:
        args.models = list(MODELS)
    for name, *_ in args.models:
        least = MIN_SIZE.get(name, 32)
        if min(args.size, *args.dense_size) < least:
            parser.error(f'--size and --dense-size must be at least {least} for {name}; '
                         f'raise them, or leave {name} out with --models')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available; use --device cpu')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = {key: getattr(args, key) for key in SETTINGS}
    machine = machine_description(device)
    date = datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')
    print(f'Machine: {machine}; {date}', flush=True)

    rows, classifiers = build_classifiers(args.models, settings)
    print(f'CPU inference at {args.size}x{args.size} ...', flush=True)
    measure_cpu_inference(classifiers, settings)
    print(f'Training steps at {args.size}x{args.size} on {device.type} ...', flush=True)
    measure_training(classifiers, device, settings)
    print('Backbones alone at %dx%d on %s ...' % (*args.dense_size, device.type), flush=True)
    configs = [(row, cfg) for row, cfg, _ in classifiers]
    del classifiers  # freed before the backbones are built
    backbones = build_backbones(args.models, configs)
    measure_dense(backbones, device, settings)

    table = format_table(rows, settings, device, machine, date)
    print(table)
    out_dir = osp.dirname(args.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    with open(f'{args.out}.md', 'w') as f:
        f.write(table + '\n')
    with open(f'{args.out}.json', 'w') as f:
        json.dump(dict(machine=machine, date=date, torch=torch.__version__,
                       device=device.type, settings=settings, rows=rows), f, indent=1)
    plot_top1_vs_latency(rows, settings).savefig(f'{args.out}.png', dpi=120)
    print(f'Saved {args.out}.md, {args.out}.json, {args.out}.png')


if __name__ == '__main__':
    main()
