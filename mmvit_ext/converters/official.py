"""Shared machinery of the official-checkpoint converters in ``tools/model_converters/``.

A converter is a list of ``(regex, replacement)`` rename rules plus optional tensor fix-ups;
these helpers load the official file, apply the rules strictly and save an mmengine checkpoint
(:func:`mmvit_ext.checkpoint.check_state_dict` checks the result against the model).
"""
import re
from collections import OrderedDict

import torch

from mmvit_ext.checkpoint import (OFFICIAL_SAFE_GLOBALS, load_checkpoint_file, save_checkpoint_file,
                                  unsafe_globals)
from mmvit_ext.checkpoint.loading import check_checkpoint_structure


def load_official_state_dict(path, entry='auto', trust=False):
    """Return the state_dict stored in an official checkpoint file.

    Args:
        path (str): The file.
        entry (str): ``'auto'`` takes ``state_dict``, then ``model``, then the bare dict;
            any other value names the entry (``'model_ema'`` for EMA weights).
        trust (bool): Load with ``weights_only=False`` (after printing every global the file
            will import; a file whose globals cannot all be listed is refused). Otherwise only
            tensors, plain data and ``OFFICIAL_SAFE_GLOBALS`` load; anything else is refused.

    Raises:
        CheckpointError (one line naming the file), KeyError for a missing ``entry``.
    """
    if trust:
        wanted = unsafe_globals(path)
        print(f'--trust-checkpoint: loading {path} with weights_only=False; unpickling it '
              f'imports and may call: {", ".join(wanted) or "nothing beyond tensors"}')
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
        check_checkpoint_structure(ckpt, path)
    else:
        ckpt = load_checkpoint_file(path, allowed_globals=OFFICIAL_SAFE_GLOBALS)
    if entry == 'auto':
        for name in ('state_dict', 'model'):
            if isinstance(ckpt.get(name), dict):
                ckpt = ckpt[name]
                break
    elif entry not in ckpt:
        entries = [k for k, v in ckpt.items() if isinstance(v, dict)]
        raise KeyError(f'{path} has no entry "{entry}"; its dict entries are {entries}.')
    else:
        ckpt = ckpt[entry]
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                       for k, v in ckpt.items())


def rename_keys(state_dict, rules, drop=()):
    """Rename every key with the first matching ``(pattern, replacement)`` rule.

    Keys matching a pattern of ``drop`` are discarded. Raises ``KeyError`` listing every key that
    no rule matched, so that a checkpoint of another model never converts half-way.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped = [re.compile(p) for p in drop]
    out, unmatched = OrderedDict(), []
    for key, value in state_dict.items():
        if any(d.fullmatch(key) for d in dropped):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise KeyError(f'{len(unmatched)} keys match no conversion rule (is this the right '
                       f'model family?): {unmatched}')
    return out


def save_checkpoint(state_dict, path, meta=None):
    """Save as an mmengine checkpoint (``{'meta': ..., 'state_dict': ...}``), atomically and
    with the SHA-256 of the weights in ``meta``."""
    save_checkpoint_file({'meta': dict(meta or {}), 'state_dict': state_dict}, path)
