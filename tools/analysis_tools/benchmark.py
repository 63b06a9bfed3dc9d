"""Latency, throughput and peak memory of a config's model, in inference or in training
steps, side by side with its oracle (plain reference implementation) and/or a baseline built
from the same config with overrides or from a second config.

Usage::

    python tools/analysis_tools/benchmark.py CONFIG [--train] [--backbone-only]
        [--sizes 224 448 896] [--batch N] [--repeat 10] [--warmup 2] [--device cpu|cuda]
        [--amp] [--threads N] [--oracle] [--fuse auto|on|off]
        [--attention-kernel auto|explicit|sdpa] [--baseline-config CONFIG2]
        [--baseline-cfg-options KEY=VALUE ...] [--baseline-attention-kernel KERNEL]
        [--cfg-options KEY=VALUE ...] [--out FILE.json]

What is measured:

* mmdet / mmseg configs: the whole model, as mmdet's and mmseg's own benchmark tools do: one
  batch of real images from the config's test dataloader (its pipeline, its test scale; default
  batch: the dataloader's) through ``model.test_step`` (data preprocessor, backbone, neck,
  heads, post-processing), eval mode, no grad;
* mmpretrain configs: the whole classifier on random input ``(batch, 3, s, s)`` per size ``s``
  of ``--sizes`` (default batch 8);
* ``--backbone-only``: the backbone alone on those random inputs;
* ``--train``: full training steps of any config, ``model.train_step`` on batches of its train
  dataloader: data preprocessor, forward, losses and the config's optim wrapper's
  ``update_params`` (backward, gradient clipping, optimizer step); ``--amp`` turns the wrapper
  into mmengine's ``AmpOptimWrapper`` (CUDA). Weights start from the config's initialisation
  without checkpoints; never fused.

The compared models run interleaved (A, B, A, B, ...) so machine noise hits them alike
(runners and measurements: ``mmvit_ext.analysis.benchmarking``).

* latency: median wall time of one call (a forward, a test step or a training step) over
  ``--repeat`` runs, after ``--warmup`` runs (CUDA: synchronised);
* throughput: ``batch / latency`` (img/s);
* peak memory: the most memory held during one call above what was held right before it
  (weights, optimizer state and the input excluded). CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``. CPU: peak resident set size from ``VmHWM`` of
  ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``; while measuring,
  glibc is told (``mallopt``) to serve blocks over 64 KiB by ``mmap``, so freed tensors return
  to the OS and every forward is measured as in a fresh process;
* ``--oracle``: the copy of the model from ``mmvit_ext.oracles.oracle_for`` (same weights);
  the max abs difference of the outputs is printed per size (random-input modes);
* ``--fuse``: the model runs through ``mmvit_ext.fuse_for_cpu_inference`` (``auto``, the
  default: on the CPU in fp32 where the model has fusable blocks, i.e. RMT and GroupMixFormer;
  the fused kernels are fp32 only, so ``--fuse on --amp`` is refused), and the unfused model is
  timed beside it as ``plain``;
* ``--baseline-cfg-options``: a second model built from the config (or ``--baseline-config``)
  with these overrides applied after ``--cfg-options`` (e.g. ``model.backbone.attn_type=global``);
* ``--attention-kernel`` / ``--baseline-attention-kernel``: how the softmax attentions of the
  model / the baseline are computed (``mmvit_ext.models.layers.attention_kernel``: ``auto``, the
  measured choice; ``explicit``; ``sdpa``); the baseline kernel alone makes the baseline the
  same config, e.g. ``--train --baseline-attention-kernel sdpa`` times the measured choice
  against SDPA everywhere;
* ``--out``: the figures as JSON (read by gather_results.py and plot_results.py);
* ``x vs N``: throughput ratio of every runner against each later one, from the same
  interleaved run;
* scaling: latency at each size relative to the first size, divided by the pixel ratio
  (1.00 = linear in H*W, 2.00 = twice the cost per pixel).
"""
import argparse
import copy
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmvit_ext.analysis.benchmarking import CpuPeakMemory, CudaPeakMemory, Runner, \
    TrainRunner, WholeModelRunner, benchmark, benchmark_cases  # noqa: E402
from mmvit_ext.models.layers.attention_ops import KERNELS  # noqa: E402
from mmvit_ext.utils.cli import backbone_of, use_fused_inference  # noqa: E402
from mmvit_ext.utils.config import build_from_config, load_config, \
    register_modules  # noqa: E402


def build_model(cfg, training=False):
    """The model of ``cfg`` (:func:`build_from_config`, for inference unless ``training``) with
    its toolbox as the default scope, which the dataloaders built for it next need."""
    register_modules(cfg.default_scope, init_default_scope=True)
    return build_from_config(cfg, training=training, inference_only=not training)


# -- models ---------------------------------------------------------------------------------
def build_benchmarked_module(cfg, backbone_only):
    """The module to time: the classifier (mmpretrain, unless backbone_only) or the backbone."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if cfg.default_scope == 'mmpretrain' and not backbone_only:
        return model, 'classifier'
    return backbone_of(model), 'backbone'


def build_oracle(module):
    from mmvit_ext.oracles import oracle_for
    try:
        return oracle_for(module)
    except KeyError as err:
        sys.exit(f'--oracle: {err.args[0]} Run without --oracle.')


# -- whole models and training steps ----------------------------------------------------------
def _first_batches(cfg, loader_name, batch, count):
    """``count`` batches from the config's dataloader (real images through its pipeline)."""
    from mmengine.runner import Runner as MMRunner

    from mmvit_ext.utils.cli import check_data
    check_data(cfg, [loader_name])
    loader_cfg = copy.deepcopy(cfg[loader_name])
    if batch:
        loader_cfg.batch_size = batch
    loader_cfg.num_workers = 0
    loader_cfg.persistent_workers = False
    loader = MMRunner.build_dataloader(loader_cfg, seed=0)
    batches = []
    for data in loader:
        batches.append(data)
        if len(batches) == count:
            break
    if not batches:
        sys.exit(f'{loader_name} of the config yields no data.')
    # img/s counts the images of the first batch; a short last batch would skew it
    return [data for data in batches if len(data['inputs']) == len(batches[0]['inputs'])]


def input_label(data):
    shapes = {tuple(img.shape[-2:]) for img in data['inputs']}
    return ','.join(f'{h}x{w}' for h, w in sorted(shapes))


def build_train_runner(name, cfg, device, batch, amp, steps):
    from mmengine.optim import build_optim_wrapper
    if amp:
        if device.type != 'cuda':
            sys.exit('--train --amp: mmengine\'s AmpOptimWrapper runs on CUDA only; drop --amp '
                     'or use --device cuda.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    torch.manual_seed(0)
    model = build_model(cfg, training=True).to(device)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batches = _first_batches(cfg, 'train_dataloader', batch, steps)
    return TrainRunner(name, model, device, optim_wrapper, batches)


# -- report ---------------------------------------------------------------------------------
def _cell(res):
    if res is None:
        return f'{"OOM":>9} {"-":>8} {"-":>8}'
    peak = 'n/a' if res['peak_mb'] is None else f'{res["peak_mb"]:.1f}'
    return f'{res["ms"]:9.2f} {res["ips"]:8.2f} {peak:>8}'


def format_report(names, sizes, results, diffs, key_name='size'):
    width = max([5] + [len(str(size)) for size in sizes])
    header = f'{key_name:>{width}} | ' + ' | '.join(
        f'{name + " ms":>9} {"img/s":>8} {"peakMB":>8}' for name in names)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    header += ''.join(f' | {a + " vs " + b:>16}' for a, b in pairs)
    if diffs:
        header += f' | {"maxdiff":>9}'  # model vs oracle, max abs difference of the outputs
    lines = [header, '-' * len(header)]
    for size in sizes:
        row = f'{size:>{width}} | ' + ' | '.join(_cell(results[size][n]) for n in names)
        for a, b in pairs:
            ours, theirs = results[size][a], results[size][b]
            ratio = f'{ours["ips"] / theirs["ips"]:.2f}x' if ours and theirs else '-'
            row += f' | {ratio:>16}'
        if diffs:
            row += f' | {diffs[size]:9.2e}' if size in diffs else f' | {"-":>9}'
        lines.append(row)
    if pairs:
        lines.append('(A vs B: throughput of A / throughput of B; >1 means A is faster)')
    if len(sizes) > 1:
        first = sizes[0]
        lines.append('')
        lines.append('Latency scaling vs H*W: (latency / latency at %d) / (pixels / pixels at '
                     '%d); 1.00 = linear' % (first, first))
        lines.append(f'{"size":>5} | ' + ' | '.join(f'{n:>10}' for n in names))
        for size in sizes:
            pixel_ratio = (size / first) ** 2
            cells = []
            for name in names:
                res, base = results[size][name], results[first][name]
                cells.append(f'{res["ms"] / base["ms"] / pixel_ratio:10.2f}'
                             if res and base else f'{"-":>10}')
            lines.append(f'{size:>5} | ' + ' | '.join(cells))
    return '\n'.join(lines)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Latency / throughput / peak memory of a config\'s model (inference or '
        'training steps) vs its oracle or a baseline.')
    parser.add_argument('config')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224],
                        help='input sizes of the random-input modes (classifiers, '
                             '--backbone-only)')
    parser.add_argument('--batch', type=int, default=None,
                        help='images per call (default: 8 on random inputs, else the batch '
                             'size of the config\'s test / train dataloader)')
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on CPU); with --train the '
                             'config\'s optim wrapper becomes an AmpOptimWrapper (CUDA)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time the backbone alone on random inputs of --sizes')
    parser.add_argument('--train', action='store_true',
                        help='time full training steps through the config\'s optim wrapper')
    parser.add_argument('--oracle', action='store_true',
                        help='compare with mmvit_ext.oracles.oracle_for(model)')
    parser.add_argument('--fuse', choices=['auto', 'on', 'off'], default='auto',
                        help='time the model through mmvit_ext.fuse_for_cpu_inference, beside '
                             'the plain one (auto: on CPU fp32 where the model has fusable '
                             'blocks; never with --train)')
    parser.add_argument('--attention-kernel', choices=KERNELS,
                        default='auto', help='how the model computes its softmax attentions '
                        '(auto: the measured choice of mmvit_ext.models.layers.softmax_attention)')
    parser.add_argument('--baseline-attention-kernel', choices=KERNELS,
                        help='the same for the baseline; alone, it makes the baseline the '
                             'config itself')
    parser.add_argument('--baseline-config',
                        help='a second config to compare with (gets --cfg-options too)')
    parser.add_argument('--baseline-cfg-options', nargs='+', action=DictAction,
                        help='overrides that turn the config (or --baseline-config) into the '
                             'baseline model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every compared model')
    parser.add_argument('--out', help='also write the figures to this JSON file')
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.batch is not None and args.batch < 1) or args.warmup < 0:
        parser.error('--repeat and --batch must be >= 1, --warmup >= 0')
    if args.train and (args.oracle or args.fuse == 'on' or args.backbone_only):
        parser.error('--train times whole training steps of the plain model: --oracle, '
                     '--fuse on and --backbone-only do not apply (fused copies cannot train)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA device is available.')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fuse_wanted = not args.train and use_fused_inference(args.fuse, device.type, args.amp)

    cfg = load_config(args.config, args.cfg_options)
    baseline_cfg = None
    if args.baseline_config or args.baseline_cfg_options or args.baseline_attention_kernel:
        baseline_cfg = load_config(args.baseline_config or args.config, args.cfg_options)
        baseline_cfg.merge_from_dict(args.baseline_cfg_options or {})
    whole = cfg.default_scope in ('mmdet', 'mmseg') and not args.backbone_only
    mode = 'train' if args.train else 'whole' if whole else 'tensor'
    if mode == 'whole' and args.oracle:
        sys.exit('--oracle compares backbones on random inputs: add --backbone-only.')
    steps = args.warmup + args.repeat + 2

    from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
    if mode == 'train':
        module, kind = None, 'training step'
        runners = [build_train_runner('model', cfg, device, args.batch, args.amp, steps)]
        if baseline_cfg is not None:
            runners.append(build_train_runner('baseline', baseline_cfg, device, args.batch,
                                              args.amp, steps))
        module = runners[0].module
        fuse = False
    else:
        if mode == 'whole':
            torch.manual_seed(0)
            module, kind = build_model(cfg), 'whole model'
            data = _first_batches(cfg, 'test_dataloader', args.batch, 1)[0]
            make = lambda name, m, d=data: WholeModelRunner(name, m, device, args.amp, d)  # noqa
        else:
            module, kind = build_benchmarked_module(cfg, args.backbone_only)
            make = lambda name, m: Runner(name, m, device, args.amp)  # noqa
        runners = [make('model', module)]
        fuse = fuse_wanted and (args.fuse == 'on' or can_fuse(module))
        if fuse:
            runners.append(make('plain', copy.deepcopy(module)))
        if args.oracle:
            runners.append(Runner('oracle', build_oracle(module), device, args.amp))
        if fuse:
            fuse_for_cpu_inference(runners[0].module)
        if baseline_cfg is not None:
            if mode == 'whole':
                torch.manual_seed(0)
                baseline = build_model(baseline_cfg)
                baseline_data = _first_batches(baseline_cfg, 'test_dataloader', args.batch,
                                               1)[0]
                runners.append(WholeModelRunner('baseline', baseline, device, args.amp,
                                                baseline_data))
            else:
                baseline, _ = build_benchmarked_module(baseline_cfg, args.backbone_only)
                runners.append(make('baseline', baseline))

    for runner in runners:
        runner.attention_kernel = args.attention_kernel
        if runner.name == 'baseline' and args.baseline_attention_kernel:
            runner.attention_kernel = args.baseline_attention_kernel
    memory = CudaPeakMemory() if device.type == 'cuda' else CpuPeakMemory()
    print(f'Config: {args.config}')
    batch = args.batch or (runners[0].images() if mode != 'tensor' else 8)
    print(f'Benchmarked: {kind} {type(getattr(module, "backbone", module)).__name__}; '
          f'device {args.device}' + (f' ({torch.cuda.get_device_name()})'
                                     if device.type == 'cuda' else
                                     f', {torch.get_num_threads()} threads') +
          f'; batch {batch}; {"amp" if args.amp else "fp32"}; median of {args.repeat} '
          f'runs after {args.warmup} warm-up')
    for runner in runners:
        print(f'  {runner.name}: {type(runner.module).__name__}, '
              f'{runner.params / 1e6:.2f} M params')
    if args.baseline_config:
        print(f'  baseline config: {args.baseline_config}')
    if args.baseline_cfg_options:
        print(f'  baseline overrides: {dict(args.baseline_cfg_options)}')
    kernels = {runner.attention_kernel for runner in runners}
    if kernels != {'auto'}:
        print('  attention kernels: ' + ', '.join(f'{runner.name} {runner.attention_kernel}'
                                                  for runner in runners))
    what = {'train': 'one training step (forward, backward, optimizer step)',
            'whole': 'one test_step (data preprocessor, model, post-processing)',
            'tensor': 'one forward'}[mode]
    print(f'peakMB: peak memory of {what} above the memory held before it ('
          + ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
             memory.reason or 'peak RSS via VmHWM') + ')')
    if mode == 'tensor':
        labels = args.sizes
        results, diffs = benchmark(runners, args.sizes, batch, args.repeat, args.warmup,
                                   device, memory,
                                   check_against='oracle' if args.oracle else None)
    else:
        # whole models: the images of the config's test pipeline, at its test scale
        labels = [input_label(runners[0].data if mode == 'whole' else runners[0].batches[0])]
        results, diffs = benchmark_cases(runners, [(labels[0], None)], args.repeat,
                                         args.warmup, device, memory)
    if fuse:
        print('model: fused with mmvit_ext.fuse_for_cpu_inference; plain: the same weights '
              'unfused')
    print(format_report([r.name for r in runners], labels, results, diffs,
                        key_name='size' if mode == 'tensor' else 'input'))
    if args.out:
        import json
        with open(args.out, 'w') as f:
            json.dump(dict(config=osp.abspath(args.config), mode=mode, device=args.device,
                           batch=batch, amp=args.amp,
                           results={str(k): v for k, v in results.items()},
                           diffs={str(k): v for k, v in diffs.items()}), f, indent=1)


if __name__ == '__main__':
    main()
