"""Safe loading: every checkpoint is unpickled with ``torch.load(weights_only=True)``,
tensors and plain containers only.

A file that wants anything else (a pickle can call any function while it loads) is refused
with a message naming the file and every global it wants, read from the pickle without importing
anything. Official files that hold known harmless objects load through the named allow-list
:data:`OFFICIAL_SAFE_GLOBALS`. A file must be a dict (with a dict ``state_dict`` if it has one),
and its SHA-256 entries (:mod:`.integrity`) are verified.
"""
import _compat_pickle
import io
import os.path as osp
import pickle
import pickletools
import sys
import zipfile
from collections import deque

import torch

from .errors import (CheckpointError, DamagedCheckpointError, MissingCheckpointError,
                     UnsafeCheckpointError)
from .integrity import CHECKSUM_KEY, NAMES_CHECKSUM_KEY, verify_checksum
from .saving import save_checkpoint_file

# Objects some official checkpoints hold besides the weights and that are safe to rebuild:
# the training script's argparse arguments.
OFFICIAL_SAFE_GLOBALS = ('argparse.Namespace', )
# What a checkpoint saved by plain mmengine holds besides plain data: its message_hub's
# HistoryBuffer objects with their numpy arrays and bound statistics methods (getattr), numpy
# scalars (numpy 1 and 2 names). Never allowed as such (getattr reaches anything); only
# replaced by an inert placeholder in keep_weights().
MMENGINE_CHECKPOINT_GLOBALS = (
    'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr', 'numpy.ndarray',
    'builtins.bytes', 'numpy.dtype', 'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar', 'numpy.core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar')


class _Inert:
    """Stands in for a global that :func:`keep_weights` must not import or call: it accepts
    any arguments and state and does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _resolve_globals(names):
    objects = []
    for name in names:
        module, _, attr = name.rpartition('.')
        objects.append(getattr(__import__(module, fromlist=[attr]), attr))
    return objects


def _scan_pickle(stream, found):
    """Append to ``found`` the globals one pickle of ``stream`` imports (read up to its STOP)."""
    # the last two values pushed (strings, else None) and the memo: what STACK_GLOBAL names
    recent, memo = deque([None, None], maxlen=2), {}
    proto = 2
    for opcode, arg, _ in pickletools.genops(stream):
        op = opcode.name
        if op == 'PROTO':
            proto = arg
        if op in ('GLOBAL', 'INST'):
            module, name = arg.split(' ', 1)
            if proto < 3:  # what pickle's fix_imports does: Python 2 names of protocol 0-2
                module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            found.append(f'{module}.{name}')
        elif op == 'STACK_GLOBAL':
            found.append('.'.join(recent) if None not in recent else
                         '(a global whose name is computed while unpickling)')
        if op in ('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'):
            memo[len(memo) if op == 'MEMOIZE' else arg] = recent[-1]
        elif op in ('GET', 'BINGET', 'LONG_BINGET'):
            recent.append(memo.get(arg))
        else:
            recent.append(arg if isinstance(arg, str) and op.endswith(('STRING', 'UNICODE'))
                          else None)


def pickle_globals(path):
    """``(names, complete)``: every global (``module.name``) that unpickling the ``torch.save``
    file ``path`` would import, in order, read statically (nothing is imported); zip and legacy
    formats. ``complete`` is False when the file could not be read to its end (damaged)."""
    found = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
                _scan_pickle(io.BytesIO(archive.read(pkl)), found)
        else:  # legacy: magic number, protocol, sys_info, the object, its storage keys
            with open(path, 'rb') as f:
                for _ in range(5):
                    _scan_pickle(f, found)
    except Exception:  # noqa: BLE001  any malformed byte: report what was found
        return list(dict.fromkeys(found)), False
    return list(dict.fromkeys(found)), True


def _allowed_global_names(allowed_globals):
    """What ``torch.load(weights_only=True)`` rebuilds here: torch's own allow-list (the one
    ``get_unsafe_globals_in_checkpoint`` compares with), the user's and ``allowed_globals``."""
    from torch import _weights_only_unpickler
    names = set(_weights_only_unpickler._get_allowed_globals()) | set(allowed_globals)
    for item in torch.serialization.get_safe_globals():
        names.add(item[1] if isinstance(item, tuple) else
                  f'{item.__module__}.{item.__qualname__}')
    return names


def _exists(name):
    """False for a global of an imported module that has no such attribute (a name a damaged
    byte produced); True where it may exist (its module is not imported: nothing is imported
    here)."""
    module, _, attr = name.rpartition('.')
    return module not in sys.modules or hasattr(sys.modules[module], attr)


def _refusal(path, name, allowed_globals, error):
    """The error for a file that ``torch.load(weights_only=True)`` refused with ``error``."""
    wanted, complete = pickle_globals(path)
    allowed = _allowed_global_names(allowed_globals)
    unsafe = [g for g in wanted if g not in allowed]
    if not any(_exists(g) for g in unsafe):
        return DamagedCheckpointError(
            f'{name} is damaged or not a PyTorch checkpoint (unpickling failed: '
            f'{_first_line(error)}). Copy or download it again.')
    listed = ', '.join(f'`{g}`' for g in unsafe)
    if not complete:
        listed += ' (and maybe more: the rest of the file is unreadable)'
    unknown = [f'`{g}`' for g in unsafe if g not in MMENGINE_CHECKPOINT_GLOBALS]
    if complete and not unknown:
        hint = ('These are what a checkpoint of a plain mmengine run holds besides its weights '
                '(its message_hub). To keep its weights and meta, loaded with weights_only=True '
                'and those objects replaced by inert placeholders: python '
                f'tools/model_converters/keep_mmengine_weights.py {path} NEW.pth')
    else:
        hint = (f'No checkpoint format this project knows holds {", ".join(unknown)}; do not '
                f'load the file. Get the checkpoint again from its publisher, or a weights-only '
                f'copy of it.')
    return UnsafeCheckpointError(
        f'{name}: refused to load: unpickling it would import {listed}, which safe loading '
        f'(weights_only=True) does not allow; loading it could run code from the file. {hint}')


def _first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0][:80]


def check_checkpoint_structure(checkpoint, name):
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'{name} is not a model checkpoint: it holds a {type(checkpoint).__name__}, not a '
            f'dict of weights or of entries such as "state_dict".')
    weights = checkpoint.get('state_dict', checkpoint)
    if not isinstance(weights, dict):
        raise CheckpointError(
            f'{name} is not a model checkpoint: its "state_dict" is a '
            f'{type(weights).__name__}, not a dict of weights.')


def load_checkpoint_file(path, map_location='cpu', allowed_globals=(), name=None):
    """Load ``path`` with ``weights_only=True``, check it is a dict (with a dict
    ``state_dict`` if it has one) and verify its checksum.

    Args:
        path (str): A local file.
        map_location: As for ``torch.load``.
        allowed_globals (Sequence[str]): Dotted names of further classes that may be rebuilt
            (an explicit allow-list, e.g. :data:`OFFICIAL_SAFE_GLOBALS`).
        name (str, optional): How messages name the file (e.g. its URL); default ``path``.

    Raises:
        MissingCheckpointError, UnsafeCheckpointError, DamagedCheckpointError, CheckpointError:
        one-line messages that name the file.
    """
    path = osp.expanduser(str(path))
    name = name or path
    if not osp.isfile(path):
        raise MissingCheckpointError(f'Checkpoint not found: {name}')
    try:
        with torch.serialization.safe_globals(_resolve_globals(allowed_globals)):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, name, allowed_globals, err) from None
    except Exception as err:  # noqa: BLE001  a damaged file fails in many ways
        if map_location not in (None, 'cpu') and _loads_on_cpu(path, allowed_globals):
            raise  # e.g. a map_location device that does not exist here: not the file's fault
        raise DamagedCheckpointError(
            f'{name} is damaged (truncated, empty or corrupted: {_first_line(err)}). Copy or '
            f'download it again; a checkpoint of an interrupted run: resume from the one '
            f'before it.') from None
    check_checkpoint_structure(checkpoint, name)
    verify_checksum(checkpoint, name)
    return checkpoint


def _loads_on_cpu(path, allowed_globals):
    try:
        with torch.serialization.safe_globals(_resolve_globals(allowed_globals)):
            torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001
        return False
    return True


def _holds_inert(value):
    if isinstance(value, dict):
        return any(_holds_inert(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_inert(v) for v in value)
    return isinstance(value, _Inert)


def keep_weights(src, dst):
    """Write the weights and meta of the checkpoint ``src`` of a plain mmengine run (which
    safe loading refuses for its message_hub) to ``dst``, which loads safely.

    ``src`` is loaded with ``weights_only=True``; the globals of
    :data:`MMENGINE_CHECKPOINT_GLOBALS` are not imported but replaced by an inert placeholder,
    so nothing of the file runs. Anything else the file wants is refused as usual.
    """
    stubs = [(_Inert, global_name) for global_name in MMENGINE_CHECKPOINT_GLOBALS]
    with torch.serialization.safe_globals(stubs):
        checkpoint = load_checkpoint_file(src)
    weights = checkpoint.get('state_dict', checkpoint)
    others = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise CheckpointError(f'{src}: its weights {", ".join(others[:5])} are no tensors.')
    meta = {k: v for k, v in (checkpoint.get('meta') or {}).items()
            if k not in (CHECKSUM_KEY, NAMES_CHECKSUM_KEY) and not _holds_inert(v)}
    save_checkpoint_file({'meta': meta, 'state_dict': weights}, dst)
    return len(weights)

def unsafe_globals(path):
    """The globals unpickling ``path`` would import beyond what safe loading rebuilds (both
    ``torch.save`` formats). Raises DamagedCheckpointError when they cannot all be listed."""
    path = osp.expanduser(str(path))
    if not osp.isfile(path):
        raise MissingCheckpointError(f'Checkpoint not found: {path}')
    wanted, complete = pickle_globals(path)
    if not complete:
        raise DamagedCheckpointError(
            f'{path}: the globals it would import cannot all be listed (the file is damaged or '
            f'no torch.save file); not loading it.')
    allowed = _allowed_global_names(())
    return [g for g in wanted if g not in allowed]
