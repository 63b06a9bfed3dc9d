"""Inference latency, throughput and peak memory of a config's model, side by side with its
oracle (plain reference implementation) and/or a baseline built from the same config.

Usage::

    python tools/analysis_tools/benchmark.py CONFIG [--sizes 224 448 896] [--batch 8]
        [--repeat 10] [--warmup 2] [--device cpu|cuda] [--amp] [--threads N]
        [--backbone-only] [--oracle] [--baseline-cfg-options KEY=VALUE ...]
        [--fuse auto|on|off] [--cfg-options KEY=VALUE ...]

What is measured: mmpretrain configs run the whole classifier (``--backbone-only``: the
backbone), mmdet/mmseg configs run the backbone; eval mode, no grad, random input
``(batch, 3, s, s)`` per size ``s``. The compared models run interleaved (A, B, A, B, ...) so
machine noise hits them alike.

* latency: median wall time of one forward of a batch over ``--repeat`` runs, after
  ``--warmup`` runs (CUDA: synchronised);
* throughput: ``batch / latency``;
* peak memory: the most memory held during one forward above what was held right before it
  (weights and the input excluded). CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``. CPU: peak resident set size from ``VmHWM`` of
  ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``; while measuring,
  glibc is told (``mallopt``) to serve blocks over 64 KiB by ``mmap``, so freed tensors return
  to the OS and every forward is measured as in a fresh process;
* ``--oracle``: the copy of the model from ``mmvit_ext.oracles.oracle_for`` (same weights);
  the max abs difference of the outputs is printed per size;
* ``--fuse``: the model runs through ``mmvit_ext.fuse_for_cpu_inference`` (``auto``, the
  default: on the CPU in fp32 where the model has fusable blocks, i.e. RMT and GroupMixFormer),
  and the unfused model is timed beside it as ``plain``;
* ``--baseline-cfg-options``: a second model built from the config with these overrides applied
  after ``--cfg-options`` (e.g. ``model.backbone.attn_type=global``);
* ``x vs N``: throughput ratio of every runner against each later one, from the same
  interleaved run;
* scaling: latency at each size relative to the first size, divided by the pixel ratio
  (1.00 = linear in H*W, 2.00 = twice the cost per pixel).
"""
import argparse
import copy
import ctypes
import gc
import importlib.util
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _load_get_flops():
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'get_flops.py')
    spec = importlib.util.spec_from_file_location('mmvit_get_flops', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


get_flops = _load_get_flops()


# -- peak memory ----------------------------------------------------------------------------
class CpuPeakMemory:
    """Peak resident memory of one call on Linux (``VmHWM`` reset through ``clear_refs``)."""
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self):
        self.reason = None
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self._status('VmHWM')
            self.libc = ctypes.CDLL(None)
            self.libc.mallopt, self.libc.malloc_trim  # glibc only
        except (OSError, AttributeError, TypeError) as err:
            self.reason = f'peak RSS not measurable here ({err})'

    @staticmethod
    def _status(key):
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise OSError(f'{key} missing from /proc/self/status')

    def _mmap_threshold(self, nbytes):
        self.libc.mallopt(self.M_MMAP_THRESHOLD, nbytes)
        self.libc.mallopt(self.M_TRIM_THRESHOLD, 2 * nbytes)

    def measure(self, fn):
        """Run ``fn()``; return ``(result, peak bytes above the resident memory before)``."""
        if self.reason:
            return fn(), None
        self._mmap_threshold(64 * 1024)
        gc.collect()
        self.libc.malloc_trim(0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        before = self._status('VmRSS')
        try:
            result = fn()
            peak = self._status('VmHWM') - before
        finally:
            # glibc's own steady state for the timed runs (freed blocks up to 32 MiB reused).
            self._mmap_threshold(32 * 1024 * 1024)
        return result, max(peak, 0)


class CudaPeakMemory:
    reason = None

    @staticmethod
    def measure(fn):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        return result, torch.cuda.max_memory_allocated() - before


# -- models ---------------------------------------------------------------------------------
def build_benchmarked_module(cfg, backbone_only):
    """The module to time: the classifier (mmpretrain, unless backbone_only) or the backbone."""
    torch.manual_seed(0)
    model = get_flops.build_model(cfg)
    if cfg.default_scope == 'mmpretrain' and not backbone_only:
        return model, 'classifier'
    return get_flops.backbone_of(model), 'backbone'


def build_oracle(module):
    from mmvit_ext.oracles import oracle_for
    try:
        return oracle_for(module)
    except KeyError as err:
        sys.exit(f'--oracle: {err.args[0]} Run without --oracle.')


def _flatten(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flatten(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flatten(item)]
    return []


def max_abs_diff(out_a, out_b):
    a, b = _flatten(out_a), _flatten(out_b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise RuntimeError('Model and oracle outputs differ in structure: '
                           f'{[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}')
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


# -- running --------------------------------------------------------------------------------
class Runner:
    """Runs one model on a device under no_grad (and autocast with --amp)."""

    def __init__(self, name, module, device, amp):
        self.name = name
        self.module = module.to(device).eval()
        self.device = device
        self.amp = amp
        self.params = sum(p.numel() for p in module.parameters())

    def __call__(self, x):
        with torch.no_grad(), torch.autocast(
                self.device.type, dtype=torch.float16 if self.device.type == 'cuda'
                else torch.bfloat16, enabled=self.amp):
            return self.module(x)

    def timed(self, x):
        sync = torch.cuda.synchronize if self.device.type == 'cuda' else (lambda: None)
        sync()
        start = time.perf_counter()
        self(x)
        sync()
        return time.perf_counter() - start


def _is_oom(err):
    return isinstance(err, torch.OutOfMemoryError) or 'out of memory' in str(err)


def benchmark(runners, sizes, batch, repeat, warmup, device, memory, check_against=None):
    """Return ``{size: {runner name: dict(ms, ips, peak_mb) or None (OOM)}}`` and
    ``{size: max abs diff}`` of the first runner's output vs ``check_against``'s."""
    results, diffs = {}, {}
    for size in sizes:
        torch.manual_seed(size)
        x = torch.randn(batch, 3, size, size, device=device)
        alive = list(runners)
        outputs, peaks = {}, {}
        for runner in list(alive):  # first call at this size: one-time set-up, outputs
            try:
                outputs[runner.name] = runner(x)
            except RuntimeError as err:
                if not _is_oom(err):
                    raise
                alive.remove(runner)
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
        first = runners[0].name
        if check_against in outputs and first in outputs:
            diffs[size] = max_abs_diff(outputs[first], outputs[check_against])
        del outputs
        for runner in alive:
            peaks[runner.name] = memory.measure(lambda: runner(x))[1]
        for _ in range(warmup):
            for runner in alive:
                runner(x)
        times = {runner.name: [] for runner in alive}
        for _ in range(repeat):
            for runner in alive:
                times[runner.name].append(runner.timed(x))
        results[size] = {}
        for runner in runners:
            if runner.name not in times:
                results[size][runner.name] = None
                continue
            seconds = statistics.median(times[runner.name])
            peak = peaks[runner.name]
            results[size][runner.name] = dict(
                ms=seconds * 1e3, ips=batch / seconds,
                peak_mb=None if peak is None else peak / 2**20)
    return results, diffs


# -- report ---------------------------------------------------------------------------------
def _cell(res):
    if res is None:
        return f'{"OOM":>9} {"-":>8} {"-":>8}'
    peak = 'n/a' if res['peak_mb'] is None else f'{res["peak_mb"]:.1f}'
    return f'{res["ms"]:9.2f} {res["ips"]:8.2f} {peak:>8}'


def format_report(names, sizes, results, diffs):
    header = f'{"size":>5} | ' + ' | '.join(
        f'{name + " ms":>9} {"img/s":>8} {"peakMB":>8}' for name in names)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    header += ''.join(f' | {a + " vs " + b:>16}' for a, b in pairs)
    if diffs:
        header += f' | {"maxdiff":>9}'  # model vs oracle, max abs difference of the outputs
    lines = [header, '-' * len(header)]
    for size in sizes:
        row = f'{size:>5} | ' + ' | '.join(_cell(results[size][n]) for n in names)
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
        description='Latency / throughput / peak memory of a config\'s model vs its oracle or '
        'a baseline.')
    parser.add_argument('config')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--backbone-only', action='store_true',
                        help='classification configs: time the backbone, not the classifier')
    parser.add_argument('--oracle', action='store_true',
                        help='compare with mmvit_ext.oracles.oracle_for(model)')
    parser.add_argument('--fuse', choices=['auto', 'on', 'off'], default='auto',
                        help='time the model through mmvit_ext.fuse_for_cpu_inference, beside '
                             'the plain one (auto: on CPU fp32 where the model has fusable '
                             'blocks)')
    parser.add_argument('--baseline-cfg-options', nargs='+', action=DictAction,
                        help='overrides that turn the config into the baseline model')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every compared model')
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.batch < 1 or args.warmup < 0:
        parser.error('--repeat and --batch must be >= 1, --warmup >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA device is available.')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = get_flops.load_config(args.config, args.cfg_options)
    module, kind = build_benchmarked_module(cfg, args.backbone_only)
    runners = [Runner('model', module, device, args.amp)]
    from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
    fuse = args.fuse == 'on' or (args.fuse == 'auto' and device.type == 'cpu' and not args.amp
                                 and can_fuse(module))
    if fuse:
        runners.append(Runner('plain', copy.deepcopy(module), device, args.amp))
    if args.oracle:
        runners.append(Runner('oracle', build_oracle(module), device, args.amp))
    if fuse:
        fuse_for_cpu_inference(runners[0].module)
    if args.baseline_cfg_options:
        baseline_cfg = get_flops.load_config(args.config, args.cfg_options)
        baseline_cfg.merge_from_dict(args.baseline_cfg_options)
        baseline, _ = build_benchmarked_module(baseline_cfg, args.backbone_only)
        runners.append(Runner('baseline', baseline, device, args.amp))

    memory = CudaPeakMemory() if device.type == 'cuda' else CpuPeakMemory()
    print(f'Config: {args.config}')
    print(f'Benchmarked: {kind} {type(getattr(module, "backbone", module)).__name__}; '
          f'device {args.device}' + (f' ({torch.cuda.get_device_name()})'
                                     if device.type == 'cuda' else
                                     f', {torch.get_num_threads()} threads') +
          f'; batch {args.batch}; {"amp" if args.amp else "fp32"}; median of {args.repeat} '
          f'runs after {args.warmup} warm-up')
    for runner in runners:
        print(f'  {runner.name}: {type(runner.module).__name__}, '
              f'{runner.params / 1e6:.2f} M params')
    if args.baseline_cfg_options:
        print(f'  baseline overrides: {dict(args.baseline_cfg_options)}')
    print('peakMB: peak memory of one forward above the memory held before it ('
          + ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
             memory.reason or 'peak RSS via VmHWM') + ')')
    results, diffs = benchmark(runners, args.sizes, args.batch, args.repeat, args.warmup,
                               device, memory, check_against='oracle' if args.oracle else None)
    if fuse:
        print('model: fused with mmvit_ext.fuse_for_cpu_inference; plain: the same weights '
              'unfused')
    print(format_report([r.name for r in runners], args.sizes, results, diffs))


if __name__ == '__main__':
    main()
