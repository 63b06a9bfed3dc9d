"""Strict matching of a state_dict against a model, and the one report of its mismatches
(used by the checkpoint hook, the timm ``pretrained`` path, the backbones' ``Pretrained``
init_cfg and the converters)."""
import re

import torch

from .errors import CheckpointMismatchError


def state_dict_mismatches(state_dict, model, revise_keys=((r'^module\.', ''), )):
    """``(missing, unexpected, shape mismatches)`` of ``state_dict`` against ``model``, with
    mmengine's default key revision (a ``module.`` prefix is dropped). A value that is no tensor
    is a shape mismatch (mmengine would only warn and load nothing)."""
    revised = {}
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    own = model.state_dict()
    missing = [k for k in own if k not in revised]
    unexpected = [k for k in revised if k not in own]
    shapes = [f'{k}: checkpoint {tuple(revised[k].shape)} vs model {tuple(v.shape)}'
              if isinstance(revised[k], torch.Tensor) else
              f'{k}: checkpoint holds a {type(revised[k]).__name__}, not a tensor'
              for k, v in own.items()
              if k in revised and (not isinstance(revised[k], torch.Tensor)
                                   or revised[k].shape != v.shape)]
    return missing, unexpected, shapes


def mismatch_report(what, model, missing, unexpected, shapes, hint, shown=5):
    """The message for weights ``what`` that do not fit ``model``: the counts, then the first
    ``shown`` keys of each kind (all of them where ``shown`` is None), then ``hint``."""
    def first(items):
        if not items:
            return 'none'
        listed = items if shown is None else items[:shown]
        more = f' ... ({len(items) - len(listed)} more)' if len(items) > len(listed) else ''
        return ', '.join(listed) + more

    return (f'{what} does not fit the model {type(model).__name__}: {len(missing)} missing, '
            f'{len(unexpected)} unexpected, {len(shapes)} mis-shaped or non-tensor keys.\n'
            f'  missing: {first(missing)}\n  unexpected: {first(unexpected)}\n'
            f'  shape mismatches: {first(shapes)}' + (f'\n{hint}' if hint else ''))


def describe_mismatches(path, model, missing, unexpected, shapes, hint=None):
    """:func:`mismatch_report` for a checkpoint file loaded into a whole model, with what to do
    by default: convert an official checkpoint, or ``--non-strict``."""
    backbone = getattr(model, 'backbone', None)
    converter = getattr(backbone, 'converter', '')
    convert = (f'an official {type(backbone).__name__} checkpoint needs '
               f'`python {converter} SRC DST` first; ' if converter else '')
    hint = hint or (f'Is it the checkpoint of another model or config? {convert}to load only '
                    f'the matching weights on purpose, pass --non-strict.')
    return mismatch_report(path, model, missing, unexpected, shapes, hint)


def check_state_dict(state_dict, model, optional_prefixes=(), what='converted weights',
                     hint=''):
    """Raise :class:`CheckpointMismatchError` (a ``RuntimeError``) listing every missing,
    unexpected or mis-shaped key of ``state_dict`` against ``model`` (keys are taken as they
    are; those starting with ``optional_prefixes`` may be missing).

    ``what`` names the weights in the message, ``hint`` says what to do about a mismatch.
    """
    missing, unexpected, shapes = state_dict_mismatches(state_dict, model, revise_keys=())
    missing = [k for k in missing if not k.startswith(optional_prefixes)]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            mismatch_report(what, model, missing, unexpected, shapes, hint, shown=None))
