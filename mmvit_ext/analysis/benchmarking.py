"""Latency, throughput and peak memory of models run interleaved (A, B, A, B, ...), so that
machine noise hits them alike.

* latency: median wall time of one call (a forward, a test step or a training step) over
  ``repeat`` runs, after ``warmup`` runs (CUDA: synchronised);
* throughput: images of one call / latency (img/s);
* peak memory: the most memory held during one call above what was held right before it
  (weights, optimizer state and the input excluded): :class:`CudaPeakMemory`,
  :class:`CpuPeakMemory`.

A runner is one model and one way of calling it: :class:`Runner` (a forward on a tensor, under
no_grad, optionally autocast), :class:`WholeModelRunner` (``test_step`` of an mmdet / mmseg
model on its batch), :class:`TrainRunner` (``train_step`` through an optim wrapper).
"""
import ctypes
import gc
import statistics
import time

import torch

from mmvit_ext.models.layers import attention_kernel


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


def _flatten(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flatten(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flatten(item)]
    return []


def max_abs_diff(out_a, out_b):
    """The largest absolute difference between the tensors of two outputs of one structure
    (tensors, or lists, tuples and dicts of them)."""
    a, b = _flatten(out_a), _flatten(out_b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise RuntimeError('Model and oracle outputs differ in structure: '
                           f'{[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}')
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


# -- running --------------------------------------------------------------------------------
def autocast_for(device, amp):
    """Autocast of ``--amp``: float16 on CUDA, bfloat16 on the CPU (off unless ``amp``)."""
    return torch.autocast(device.type, dtype=torch.float16 if device.type == 'cuda'
                          else torch.bfloat16, enabled=amp)


class Runner:
    """Runs one model on a device under no_grad (and :func:`autocast_for` with ``amp``) on a
    given input."""

    def __init__(self, name, module, device, amp):
        self.name = name
        self.module = module.to(device)
        self.module.eval()  # not chained: some train() overrides (mmpretrain's ResNet) return None
        self.device = device
        self.amp = amp
        self.params = sum(p.numel() for p in module.parameters())
        self.attention_kernel = 'auto'

    def __call__(self, x):
        with torch.no_grad(), autocast_for(self.device, self.amp), \
                attention_kernel(self.attention_kernel):
            return self.module(x)

    def images(self, x):
        """Images processed by one call on ``x``."""
        return x.shape[0]

    def timed(self, x):
        sync = torch.cuda.synchronize if self.device.type == 'cuda' else (lambda: None)
        sync()
        start = time.perf_counter()
        self(x)
        sync()
        return time.perf_counter() - start


class WholeModelRunner(Runner):
    """A whole mmdet / mmseg model on its own batch of real images: ``test_step`` runs the data
    preprocessor, the model and the post-processing, as the toolboxes' test loops do."""

    def __init__(self, name, module, device, amp, data):
        super().__init__(name, module, device, amp)
        self.data = data

    def __call__(self, x=None):
        with torch.no_grad(), autocast_for(self.device, self.amp), \
                attention_kernel(self.attention_kernel):
            return self.module.test_step(self.data)

    def images(self, x=None):
        return len(self.data['inputs'])


class TrainRunner(Runner):
    """Full training steps: ``model.train_step`` (data preprocessor, forward, losses, and
    ``optim_wrapper.update_params``: backward, clipping, optimizer step; AMP inside the wrapper's
    ``optim_context``) on batches from the config's train dataloader, in turn."""

    def __init__(self, name, module, device, optim_wrapper, batches):
        self.name = name
        self.module = module.to(device)
        self.module.train()
        self.device = device
        self.params = sum(p.numel() for p in module.parameters())
        self.optim_wrapper = optim_wrapper
        self.batches = batches
        self.step = 0
        self.attention_kernel = 'auto'

    def __call__(self, x=None):
        data = self.batches[self.step % len(self.batches)]
        self.step += 1
        with attention_kernel(self.attention_kernel):
            return self.module.train_step(data, self.optim_wrapper)

    def images(self, x=None):
        return len(self.batches[self.step % len(self.batches)]['inputs'])


def _is_oom(err):
    return isinstance(err, torch.OutOfMemoryError) or 'out of memory' in str(err)


def benchmark_cases(runners, cases, repeat, warmup, device, memory, check_against=None):
    """Time ``runners`` interleaved on each ``(label, input)`` of ``cases`` (input None: each
    runner's own data). Return ``{label: {runner name: dict(ms, ips, peak_mb) or None (OOM)}}``
    and ``{label: max abs diff}`` of the first runner's output vs ``check_against``'s."""
    results, diffs = {}, {}
    for label, x in cases:
        alive = list(runners)
        outputs, peaks, images = {}, {}, {}
        for runner in list(alive):  # first call: one-time set-up (optimizer state), outputs
            images[runner.name] = runner.images(x)
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
            diffs[label] = max_abs_diff(outputs[first], outputs[check_against])
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
        results[label] = {}
        for runner in runners:
            if runner.name not in times:
                results[label][runner.name] = None
                continue
            seconds = statistics.median(times[runner.name])
            peak = peaks[runner.name]
            results[label][runner.name] = dict(
                ms=seconds * 1e3, ips=images[runner.name] / seconds,
                peak_mb=None if peak is None else peak / 2**20)
    return results, diffs


def benchmark(runners, sizes, batch, repeat, warmup, device, memory, check_against=None):
    """:func:`benchmark_cases` on random ``(batch, 3, s, s)`` inputs, one per size ``s``."""
    cases = []
    for size in sizes:
        torch.manual_seed(size)
        cases.append((size, torch.randn(batch, 3, size, size, device=device)))
    return benchmark_cases(runners, cases, repeat, warmup, device, memory, check_against)
