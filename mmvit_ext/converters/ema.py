"""Take the EMA or the trained (source) weights of a checkpoint saved with mmengine's EMAHook.

While saving, ``EMAHook`` swaps the two sets: ``state_dict`` holds the **EMA** weights (what
validation scored and what a deployment should use) and ``ema_state_dict`` holds the weights
the optimizer trained, each key prefixed ``module.``, plus the averaging counter ``steps``.
A downstream config that loads such a checkpoint with ``init_cfg=dict(type='Pretrained',
prefix='backbone.')`` therefore starts from the EMA weights. The official RMT det/seg code
started from the non-EMA ``model`` entry instead; :func:`extract_weights` writes a plain
checkpoint of whichever set is wanted:

    python tools/model_converters/select_ema_weights.py CKPT DST --weights source|ema
"""
from collections import OrderedDict
from pathlib import Path

WEIGHTS = ('ema', 'source')
EMA_PREFIX = 'module.'


def split_ema_checkpoint(checkpoint):
    """``(ema_state_dict, source_state_dict)`` of a checkpoint saved with ``EMAHook``.

    Raises:
        KeyError: the checkpoint has no ``ema_state_dict`` (it was trained without EMA, so its
            ``state_dict`` is the only set of weights), or the two sets do not have the same keys.
    """
    if 'ema_state_dict' not in checkpoint:
        raise KeyError('The checkpoint has no `ema_state_dict`: it was saved without EMAHook, so '
                       'its `state_dict` holds the only weights; use it as it is.')
    ema = checkpoint['state_dict']
    source = OrderedDict((k[len(EMA_PREFIX):], v) for k, v in checkpoint['ema_state_dict'].items()
                         if k.startswith(EMA_PREFIX))
    if source.keys() != ema.keys():
        only_ema = sorted(set(ema) - set(source))[:5]
        only_source = sorted(set(source) - set(ema))[:5]
        raise KeyError(f'`state_dict` and `ema_state_dict` hold different keys (first ones only '
                       f'in state_dict: {only_ema}, only in ema_state_dict: {only_source}); not '
                       f'a checkpoint of mmengine\'s EMAHook.')
    return ema, source


def select_weights(checkpoint, weights):
    """The ``'ema'`` or ``'source'`` state_dict of an EMAHook checkpoint."""
    if weights not in WEIGHTS:
        raise ValueError(f'weights must be one of {WEIGHTS}, got {weights!r}.')
    ema, source = split_ema_checkpoint(checkpoint)
    return ema if weights == 'ema' else source


def extract_weights(src, dst, weights):
    """Write the ``weights`` (``'ema'`` or ``'source'``) of the checkpoint ``src`` to ``dst``.

    ``dst`` is a plain mmengine checkpoint (``meta`` and ``state_dict`` only, no optimizer or
    EMA state), loadable by ``load_from`` or a ``Pretrained`` init_cfg; ``meta['weights']``
    records the choice.

    Returns:
        int: Number of tensors written.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from mmvit_ext.checkpoint import install_safe_loading

    from .official import save_checkpoint
    install_safe_loading()
    checkpoint = CheckpointLoader.load_checkpoint(src, map_location='cpu')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise KeyError(f'{src} is not an mmengine checkpoint (no `state_dict` entry).')
    try:
        state_dict = select_weights(checkpoint, weights)
    except KeyError as err:
        raise KeyError(f'{src}: {err.args[0]}') from None
    meta = dict(checkpoint.get('meta') or {}, weights=weights, selected_from=str(src))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state_dict, dst, meta=meta)
    return len(state_dict)
