"""The linear scaling rule, checked when training starts.

Every training config states, in ``auto_scale_lr.base_batch_size``, the total batch its lr was
set for (ImageNet 1024 = 8 GPUs x 128, COCO / ADE20K 16 = 8 x 2). A run on fewer GPUs keeps
that lr, e.g. 8x the linearly scaled value on one GPU, and mmengine says nothing. So
``tools/train.py`` calls :func:`apply_batch_scaling`, which

* without ``--auto-scale-lr`` prints one warning with the factor and the flag to add, and
* with it, scales the lr by ``total / base`` and the momentum of every ``EMAHook`` so that the
  average spans the same number of images (``decay_total = decay_base ** (total / base)``, the
  rule of the RMT/DeiT code, ``0.99996 ** (batch / 512)``).

This replaces mmengine's own ``auto_scale_lr`` (switched off afterwards so nothing is scaled
twice) because mmengine ignores gradient accumulation and the EMA. Not rescaled: absolute lr
floors such as ``eta_min`` (DeiT keeps its min lr, the Swin code scales it; it matters only in
the last epochs), and iteration-based schedules (``max_iters`` covers ``total / base`` of the
reference run's images; the warning says so).
"""
import inspect
import os
import sys

# launcher -> environment variables with the number of processes and this process's rank
LAUNCHER_ENV = {
    'pytorch': ('WORLD_SIZE', 'RANK'),
    'slurm': ('SLURM_NTASKS', 'SLURM_PROCID'),
    'mpi': ('OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK'),
}
MISSING_BASE = ('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` in the config '
                '(the batch size its lr was set for).')


def process_count_and_rank(launcher):
    """``(number of training processes, rank of this one)`` for ``--launcher``.

    Read before the Runner starts the process group, from what the launcher put in the
    environment (torchrun, srun, mpirun); an already started group wins.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    if launcher in (None, 'none'):
        return 1, 0
    size_key, rank_key = LAUNCHER_ENV[launcher]
    return int(os.environ.get(size_key, 1)), int(os.environ.get(rank_key, 0))


def _ema_hooks(cfg):
    """The momentum-based EMA hooks of ``cfg.custom_hooks``, with their momentum."""
    from mmengine.model import ExponentialMovingAverage
    default = inspect.signature(ExponentialMovingAverage).parameters['momentum'].default
    for hook in cfg.get('custom_hooks') or []:
        if str(hook.get('type', '')).split('.')[-1] != 'EMAHook':
            continue
        ema_type = str(hook.get('ema_type', 'ExponentialMovingAverage')).split('.')[-1]
        if ema_type in ('ExponentialMovingAverage', 'MomentumAnnealingEMA'):
            yield hook, hook.get('momentum', default)


def scaled_ema_momentum(momentum, factor):
    """Momentum that decays the average by the same amount per image at ``factor`` x the batch:
    ``1 - (1 - m) ** factor`` (mmengine momentum = 1 - timm decay)."""
    return 1.0 - (1.0 - momentum) ** factor


def apply_batch_scaling(cfg, auto_scale=False):
    """Warn about, or with ``auto_scale`` correct, a total batch that differs from the config's.

    Args:
        cfg (Config): The training config (``cfg.launcher`` set).
        auto_scale (bool): ``--auto-scale-lr`` (``auto_scale_lr.enable=True`` counts as well).

    Returns:
        float | None: ``total / base_batch_size``, or None when the config states no base.
    """
    scale_cfg = cfg.get('auto_scale_lr')
    if not scale_cfg or 'base_batch_size' not in scale_cfg:
        if auto_scale:
            raise SystemExit(MISSING_BASE)
        return None
    auto_scale = auto_scale or bool(scale_cfg.get('enable', False))
    scale_cfg.enable = False  # done here; mmengine must not scale the lr a second time
    num_processes, rank = process_count_and_rank(cfg.get('launcher'))
    per_process = cfg.train_dataloader.batch_size
    accumulation = cfg.optim_wrapper.get('accumulative_counts', 1)
    total = num_processes * per_process * accumulation  # images per optimizer step
    base = scale_cfg.base_batch_size
    factor = total / base
    if factor == 1:
        return factor
    optimizer = cfg.optim_wrapper.get('optimizer')
    if optimizer is None or 'lr' not in optimizer:
        raise SystemExit(f'The total batch ({total}) differs from auto_scale_lr.base_batch_size '
                         f'({base}), but this config has no single optim_wrapper.optimizer.lr '
                         f'to check or scale; scale its learning rates by {factor:g} by hand.')
    lr = optimizer.lr
    hooks = list(_ema_hooks(cfg))
    batch = (f'{num_processes} process{"es" if num_processes > 1 else ""} x {per_process}'
             + (f' x {accumulation} accumulation steps' if accumulation > 1 else ''))
    if auto_scale:
        optimizer.lr = lr * factor
        changes = [f'lr {lr:g} -> {optimizer.lr:g}']
        for hook, momentum in hooks:
            hook.momentum = scaled_ema_momentum(momentum, factor)
            changes.append(f'EMAHook momentum {momentum:g} -> {hook.momentum:g}')
        message = (f'Batch scaling (--auto-scale-lr): total batch {total} ({batch}) instead of '
                   f'the {base} the config was set for: {", ".join(changes)}.')
    else:
        what = f'lr ({lr:g})' + ''.join(f' and EMA momentum ({m:g})' for _, m in hooks[:1])
        verb = 'are' if hooks else 'is'
        message = (f'WARNING: the total batch is {total} ({batch}), but the {what} of this '
                   f'config {verb} set for a batch of {base} (auto_scale_lr.base_batch_size): '
                   f'this run would train at {1 / factor:g}x the lr that linear scaling gives '
                   f'for {total}. Add --auto-scale-lr to scale to this batch (lr x{factor:g} = '
                   f'{lr * factor:g})')
        step = per_process * accumulation
        if base % step == 0:
            message += f', or launch {base // step} processes of {per_process}'
        message += '.'
    max_iters = cfg.get('train_cfg', {}).get('max_iters')
    if max_iters:
        message += (f' The schedule counts iterations (max_iters={max_iters}): at this batch it '
                    f'sees {factor:g}x the images of the reference run; --auto-scale-lr does '
                    f'not change that.')
    if rank == 0:
        print(message, file=sys.stderr, flush=True)
    return factor
