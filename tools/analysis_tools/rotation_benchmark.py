"""RMT's rotation of q and k: this package's real cos/sin form against the complex product of the
official code, per stage and in the whole backbone, in one interleaved run.

Usage::

    python tools/analysis_tools/rotation_benchmark.py [--arch s] [--batch 8] [--size 224]
        [--rounds 12] [--threads N] [--skip-model]

* per stage: one rotation of the stage's packed q and k, (batch, H, W, N, 2, d), forward (no
  grad) and forward + backward, each the median over ``--rounds`` alternating rounds, then the
  sum over the arch's blocks (what one forward / training step spends in rotations);
* model: the RMT backbone's forward (eval, no grad) and training step (forward + backward of the
  summed stage outputs), the same model and weights with ``rotate_pairs`` replaced by the complex
  product during the complex runs, the order alternating every round; the per-round ratio
  real / complex with its quartiles.

The complex product pairs channels (2j, 2j + 1) where this package pairs (j, j + d/2), so in the
model it rotates other pairs than the real form: it is a timing probe with the official kernel's
cost, not a reference (the tests check the rotation against the official formula).
"""
import argparse
import contextlib
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmvit_ext.models.backbones.rmt import RMT  # noqa: E402
from mmvit_ext.models.layers import ManhattanRelPos  # noqa: E402
from mmvit_ext.models.layers import manhattan_attention  # noqa: E402


class ComplexRotation:
    """The official rotation as one complex product, with its complex tables cached per real
    table as the complex version of this package cached them per stage."""

    def __init__(self):
        self._tables = {}

    def __call__(self, x, cos, sin):
        key = (cos.data_ptr(), sin.data_ptr(), tuple(cos.shape))
        if key not in self._tables:
            half = cos.shape[-1] // 2
            self._tables[key] = torch.complex(cos[..., :half], sin[..., half:])
        pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * self._tables[key]).flatten(-2)


@contextlib.contextmanager
def rotation_as(rotate):
    """Within the block, MaSA rotates q and k with ``rotate`` (a module-level swap)."""
    previous = manhattan_attention.rotate_pairs
    manhattan_attention.rotate_pairs = rotate
    try:
        yield
    finally:
        manhattan_attention.rotate_pairs = previous


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values):
    return sorted(values)[len(values) // 2]


def alternating(rounds, forms):
    """The names of ``forms`` once per round, the order reversed every other round, so that
    neither form always runs first (warm caches, a drifting machine)."""
    names = list(forms)
    for r in range(rounds):
        yield from (names if r % 2 else names[::-1])


def stage_rotations(settings, batch, size, rounds):
    """Per stage: ms of one rotation by each form, forward and forward + backward."""
    rows = []
    for i, (dims, heads, blocks) in enumerate(zip(settings['embed_dims'], settings['num_heads'],
                                                  settings['depths'])):
        side = size // 2**(i + 2)
        (cos, sin), _ = ManhattanRelPos(dims, heads)(side, side, True, like=torch.zeros(1))
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        shape = (batch, side, side, heads, 2, dims // heads)
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        forms = {'complex': ComplexRotation(), 'real': manhattan_attention.rotate_pairs}
        times = {(form, kind): [] for form in forms for kind in ('forward', 'train')}
        for form in alternating(rounds, forms):
            rotate = forms[form]
            with torch.no_grad():
                times[form, 'forward'].append(seconds(lambda: rotate(x, cos, sin)))
            times[form, 'train'].append(seconds(lambda: rotate(x, cos, sin).backward(grad)))
        rows.append((f'{side}x{side}, N={heads}, d={dims // heads}', blocks,
                     {key: median(v) * 1e3 for key, v in times.items()}))
    return rows


def model_steps(arch, batch, size, rounds):
    """Per-round times of the backbone with each rotation, forward and training step."""
    torch.manual_seed(0)
    model = RMT(arch=arch)
    x = torch.randn(batch, 3, size, size)
    forms = {'complex': ComplexRotation(), 'real': manhattan_attention.rotate_pairs}

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        sum(out.mean() for out in model(x)).backward()
        model.zero_grad(set_to_none=True)

    results = {}
    for kind, step in (('forward', forward), ('training step', train_step)):
        for rotate in forms.values():  # warm-up: caches, allocator
            with rotation_as(rotate):
                step()
        times = {form: [] for form in forms}
        for form in alternating(rounds, forms):
            with rotation_as(forms[form]):
                times[form].append(seconds(step))
        results[kind] = times
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='s', choices=[a.lower() for a in RMT.arch_settings])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224,
                        help='input side; a multiple of 32')
    parser.add_argument('--rounds', type=int, default=12)
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s)')
    parser.add_argument('--skip-model', action='store_true',
                        help='only the per-stage rotations')
    args = parser.parse_args(argv)
    if args.size % 32 or args.size < 32:
        parser.error(f'--size {args.size}: use a multiple of 32 (the backbone\'s output stride).')
    if args.batch < 1 or args.rounds < 2:
        parser.error('--batch must be at least 1 and --rounds at least 2.')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = RMT.arch_settings[args.arch.upper()]
    print(f'RMT-{args.arch.upper()}, batch {args.batch}, {args.size}x{args.size}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}')
    print('one rotation of q and k (ms): complex forward / forward+backward | '
          'real forward / forward+backward')
    totals = {key: 0. for key in (('complex', 'forward'), ('complex', 'train'),
                                  ('real', 'forward'), ('real', 'train'))}
    for name, blocks, ms in stage_rotations(settings, args.batch, args.size, args.rounds):
        print(f'  stage {name} (x{blocks} blocks): {ms["complex", "forward"]:.2f} / '
              f'{ms["complex", "train"]:.2f} | {ms["real", "forward"]:.2f} / '
              f'{ms["real", "train"]:.2f}')
        for key in totals:
            totals[key] += blocks * ms[key]
    for form in ('complex', 'real'):
        print(f'  all rotations of one step, {form}: forward {totals[form, "forward"]:.1f} ms, '
              f'forward+backward {totals[form, "train"]:.1f} ms')
    if args.skip_model:
        return
    for kind, times in model_steps(args.arch, args.batch, args.size, args.rounds).items():
        ratios = sorted(r / c for r, c in zip(times['real'], times['complex']))
        n = len(ratios)
        print(f'backbone {kind}: complex {median(times["complex"]) * 1e3:.1f} ms, real '
              f'{median(times["real"]) * 1e3:.1f} ms; per-round real / complex '
              f'{ratios[n // 2]:.3f} (quartiles {ratios[n // 4]:.3f}-{ratios[3 * n // 4]:.3f}, '
              f'{n} rounds)')


if __name__ == '__main__':
    main()
