"""Shared machinery of the official-checkpoint converters in ``tools/model_converters/``.

A converter is a :class:`KeyMap` of rename rules plus optional tensor fix-ups; these helpers
load the official file, apply the rules strictly and save an mmengine checkpoint
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


_PLACEHOLDER = re.compile(r'\{(\w+)([+-]\d+)?\}')


class _KeyTemplate:
    """One side of a :class:`KeyMap` rule: a key with ``{name}`` / ``{name+k}`` placeholders."""

    def __init__(self, template, fields):
        self.template, self.fields = template, fields
        pattern, end = '', 0
        for m in _PLACEHOLDER.finditer(template):
            name, shift = m[1], m[2]
            # a shifted index is matched as any number, checked once shifted back
            value = r'0|[1-9]\d*' if shift else fields[name]
            pattern += re.escape(template[end:m.start()]) + f'(?P<{name}>{value})'
            end = m.end()
        self.regex = re.compile(pattern + re.escape(template[end:]))

    def match(self, key):
        """The field values of ``key`` (dict), or None when it does not fit the template."""
        m = self.regex.fullmatch(key)
        if m is None:
            return None
        values = m.groupdict()
        for name, shift in _PLACEHOLDER.findall(self.template):
            if shift:
                values[name] = str(int(values[name]) - int(shift))
                if not re.fullmatch(self.fields[name], values[name]):
                    return None
        return values

    def format(self, values):
        """The key of the field ``values``."""
        return _PLACEHOLDER.sub(
            lambda m: str(int(values[m[1]]) + int(m[2])) if m[2] else values[m[1]],
            self.template)


class KeyMap:
    """Key renaming between an official layout and ours, both directions from one table.

    Each rule is a pair of key templates ``(official, ours)``. A placeholder ``{name}`` stands
    for a part that the key carries over, a value matching the regex ``fields[name]``;
    ``{name+k}`` (or ``{name-k}``) writes that value plus k (an index that differs between the
    layouts). A key is renamed by the first rule it fits. The converters rename official keys
    to ours and the oracles ours to official with the same rules, so the two directions cannot
    drift apart.
    """

    def __init__(self, rules, fields):
        self.rules = [(_KeyTemplate(official, fields), _KeyTemplate(ours, fields))
                      for official, ours in rules]

    def rename_key(self, key, reverse=False):
        """``key`` renamed (``reverse``: ours -> official), or None when no rule fits it."""
        for official, ours in self.rules:
            source, target = (ours, official) if reverse else (official, ours)
            values = source.match(key)
            if values is not None:
                return target.format(values)
        return None

    def rename(self, state_dict, reverse=False, drop=()):
        """Rename every key (official -> ours, or ours -> official with ``reverse``).

        Keys matching a regex of ``drop`` are discarded. Raises ``KeyError`` listing every key
        that no rule fits, so that a checkpoint of another model never converts half-way.
        """
        dropped = [re.compile(p) for p in drop]
        out, unmatched = OrderedDict(), []
        for key, value in state_dict.items():
            if any(d.fullmatch(key) for d in dropped):
                continue
            new_key = self.rename_key(key, reverse)
            if new_key is None:
                unmatched.append(key)
            else:
                out[new_key] = value
        if unmatched:
            raise KeyError(f'{len(unmatched)} keys match no conversion rule (is this the right '
                           f'model family?): {unmatched}')
        return out


def save_checkpoint(state_dict, path, meta=None):
    """Save as an mmengine checkpoint (``{'meta': ..., 'state_dict': ...}``), atomically and
    with the SHA-256 of the weights in ``meta``."""
    save_checkpoint_file({'meta': dict(meta or {}), 'state_dict': state_dict}, path)
