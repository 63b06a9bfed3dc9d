"""Checkpoint files: safe loading, integrity checks, atomic writing, strict matching.

* Every checkpoint is unpickled with ``torch.load(weights_only=True)``: tensors and plain
  containers only. A file that wants anything else (a pickle can call any function while it
  loads) is refused with a message naming the file and the global. Official files that hold
  known harmless objects load through the named allow-list :data:`OFFICIAL_SAFE_GLOBALS`.
* Importing this module registers :func:`load_from_local_weights_only` as mmengine's loader of
  local paths (``CheckpointLoader.register_scheme``, mmengine's public extension point), so
  ``load_from``, ``--resume``, ``tools/test.py`` and ``init_cfg=dict(type='Pretrained')`` all
  load this way. ``mmvit_ext/__init__.py`` imports it.
* Checkpoints written by this package carry a SHA-256 of each entry (weights, optimizer ...)
  in ``meta['sha256']``; it is verified on every load where present.
* Files are written to a temporary file in the same directory, flushed, fsynced and
  ``os.replace``-d into place (:func:`atomic_write_bytes`, :class:`AtomicLocalBackend`), so a
  kill at any moment leaves either the old or the new complete file.
"""
import contextlib
import hashlib
import io
import os
import os.path as osp
import pickle
import re
import zipfile

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, find_latest_checkpoint

CHECKSUM_KEY = 'sha256'  # in meta: entry name -> SHA-256
TEMP_MARK = '.tmp-'  # temporary files are named ``<final name>.tmp-<pid>``
# Objects some official checkpoints hold besides the weights and that are safe to rebuild:
# the training script's argparse arguments.
OFFICIAL_SAFE_GLOBALS = ('argparse.Namespace', )
# Saved message_hub entries: HistoryBuffer objects become this plain form.
PLAIN_HISTORY_MARK = '__mmvit_ext_history_buffer__'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot or must not be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file wants to run or build objects that safe loading does not allow."""


class DamagedCheckpointError(CheckpointError):
    """The file is truncated, empty or corrupted."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model."""


# -- integrity ------------------------------------------------------------------------------
def entry_sha256(value):
    """SHA-256 of one checkpoint entry: its keys, its tensors' dtypes, shapes and bytes, and the
    ``repr`` of its other values, in (pickle-preserved) insertion order."""
    digest = hashlib.sha256()

    def visit(obj):
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu().contiguous()
            digest.update(f'T{tensor.dtype}{tuple(tensor.shape)}'.encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            digest.update(b'{')
            for key, item in obj.items():
                digest.update(repr(key).encode())
                visit(item)
            digest.update(b'}')
        elif isinstance(obj, (list, tuple)):
            digest.update(b'[')
            for item in obj:
                visit(item)
            digest.update(b']')
        else:
            digest.update(repr(obj).encode())

    visit(value)
    return digest.hexdigest()


def add_checksum(checkpoint):
    """Store in ``meta['sha256']`` the SHA-256 of every other entry (weights, optimizer ...)
    of ``checkpoint``; per entry, so that a checkpoint stripped of some entries (mmengine's
    ``published_keys``) still verifies."""
    checkpoint.setdefault('meta', {})[CHECKSUM_KEY] = {
        name: entry_sha256(value) for name, value in checkpoint.items() if name != 'meta'}


def verify_checksum(checkpoint, path):
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    expected = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if not isinstance(expected, dict):
        return
    damaged = [name for name, sha in expected.items()
               if name in checkpoint and entry_sha256(checkpoint[name]) != sha]
    if damaged:
        raise DamagedCheckpointError(
            f'{path} is damaged: the SHA-256 of its {", ".join(damaged)} differs from the one '
            f'stored when it was saved. Copy or download it again.')


# -- loading --------------------------------------------------------------------------------
def _resolve_globals(names):
    objects = []
    for name in names:
        module, _, attr = name.rpartition('.')
        objects.append(getattr(__import__(module, fromlist=[attr]), attr))
    return objects


def load_checkpoint_file(path, map_location='cpu', allowed_globals=(), refusal_hint=None):
    """Load ``path`` with ``weights_only=True`` and verify its checksum.

    Args:
        path (str): A local file.
        map_location: As for ``torch.load``.
        allowed_globals (Sequence[str]): Dotted names of further classes that may be rebuilt
            (an explicit allow-list, e.g. :data:`OFFICIAL_SAFE_GLOBALS`).
        refusal_hint (str, optional): What to tell the user when the file is refused.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, DamagedCheckpointError.
    """
    path = osp.expanduser(str(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    try:
        with torch.serialization.safe_globals(_resolve_globals(allowed_globals)):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.search(r'GLOBAL (\S+)', str(err))
        if wanted is None:  # the weights-only unpickler met bytes that are no valid pickle
            raise DamagedCheckpointError(
                f'{path} is damaged or not a PyTorch checkpoint (unpickling failed). Copy or '
                f'download it again.') from None
        if refusal_hint:
            hint = refusal_hint
        elif wanted.group(1).startswith(('mmengine.', 'numpy.')):
            hint = ('A checkpoint of a plain mmengine run pickles its message_hub; if you trust '
                    'the file, keep only its weights: python -c "import torch; c = torch.load('
                    '\'SRC\', weights_only=False); torch.save({\'state_dict\': '
                    'c[\'state_dict\']}, \'DST\')"')
        else:
            hint = ('A checkpoint should hold only tensors and plain data. If this is an '
                    'official checkpoint from a source you trust, convert it with '
                    'tools/model_converters/<family>_to_mmvit.py --trust-checkpoint.')
        raise UnsafeCheckpointError(
            f'{path}: refused to load: unpickling it would import or call '
            f'`{wanted.group(1)}`, which safe loading (weights_only=True) does not allow; '
            f'loading it could run code from the file. {hint}') from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as err:
        if isinstance(err, RuntimeError) and 'PytorchStreamReader' not in str(err):
            raise  # e.g. a map_location device that does not exist here: not the file's fault
        raise DamagedCheckpointError(
            f'{path} is damaged (truncated, empty or corrupted: '
            f'{(str(err).splitlines() or [type(err).__name__])[0][:80]}). Copy or download it '
            f'again; a checkpoint of an interrupted run: resume from the one before it.'
        ) from None
    verify_checksum(checkpoint, path)
    return checkpoint


def load_from_local_weights_only(filename, map_location):
    """mmengine's local-path checkpoint loader, with safe loading and checksum verification."""
    return load_checkpoint_file(filename, map_location=map_location)


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)


def unsafe_globals(path):
    """The globals unpickling ``path`` would import (for a zip-format ``torch.save`` file)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError):
        return ['(not a zip-format torch.save file: the globals cannot be listed)']


# -- writing --------------------------------------------------------------------------------
def atomic_write_bytes(data, path):
    """Write ``data`` to ``path`` so that ``path`` is never seen incomplete."""
    path = str(path)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f'{path}{TEMP_MARK}{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint_file(checkpoint, path):
    """Add the checksum to ``checkpoint['meta']`` and write it atomically."""
    add_checksum(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


@register_backend('mmvit_ext_atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic writes (what our checkpoint hook uses)."""

    def put(self, obj, filepath):
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write_bytes(obj.encode(encoding), filepath)


def stale_temp_files(directory):
    """Temporary files left in ``directory`` by saves that were interrupted."""
    if not osp.isdir(directory):
        return []
    return sorted(osp.join(directory, f) for f in os.listdir(directory) if TEMP_MARK in f)


# -- message_hub ----------------------------------------------------------------------------
def _plain(value):
    """numpy scalars -> Python numbers (safe loading rebuilds no numpy objects)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def plain_message_hub(state):
    """``MessageHub.state_dict()`` in a form that loads with ``weights_only=True``."""
    state = dict(state)
    state['log_scalars'] = {
        key: {PLAIN_HISTORY_MARK: True, 'log_history': buf._log_history.tolist(),
              'count_history': buf._count_history.tolist(), 'max_length': buf.max_length}
        for key, buf in state['log_scalars'].items()}
    state['runtime_info'] = _plain(state['runtime_info'])
    return state


def restore_message_hub(state):
    """Undo :func:`plain_message_hub` (a checkpoint saved by plain mmengine passes through)."""
    scalars = state.get('log_scalars', {})
    for key, value in scalars.items():
        if isinstance(value, dict) and value.get(PLAIN_HISTORY_MARK):
            scalars[key] = HistoryBuffer(value['log_history'], value['count_history'],
                                         value['max_length'])
    return state


# -- matching -------------------------------------------------------------------------------
def state_dict_mismatches(state_dict, model, revise_keys=((r'^module\.', ''), )):
    """``(missing, unexpected, shape mismatches)`` of ``state_dict`` against ``model``, with
    mmengine's default key revision (a ``module.`` prefix is dropped)."""
    revised = {}
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    own = model.state_dict()
    missing = [k for k in own if k not in revised]
    unexpected = [k for k in revised if k not in own]
    shapes = [f'{k}: checkpoint {tuple(revised[k].shape)} vs model {tuple(v.shape)}'
              for k, v in own.items()
              if k in revised and hasattr(revised[k], 'shape') and revised[k].shape != v.shape]
    return missing, unexpected, shapes


def describe_mismatches(path, model, missing, unexpected, shapes, shown=5):
    def first(items):
        more = f' ... ({len(items) - shown} more)' if len(items) > shown else ''
        return ', '.join(items[:shown]) + more if items else 'none'

    backbone = getattr(model, 'backbone', None)
    converter = getattr(backbone, 'converter', '')
    convert = (f'an official {type(backbone).__name__} checkpoint needs '
               f'`python {converter} SRC DST` first; ' if converter else '')
    return (f'{path} does not fit the model {type(model).__name__}: {len(missing)} missing, '
            f'{len(unexpected)} unexpected, {len(shapes)} mis-shaped keys.\n'
            f'  missing: {first(missing)}\n  unexpected: {first(unexpected)}\n'
            f'  shape mismatches: {first(shapes)}\n'
            f'Is it the checkpoint of another model or config? {convert}to load only the '
            f'matching weights on purpose, pass --non-strict.')


# -- work dirs ------------------------------------------------------------------------------
def check_work_dir(work_dir, resume, load_from, overwrite):
    """Stop before a run silently restarts or overwrites: ``--resume`` with nothing to resume,
    or a new run into a work dir that holds checkpoints (unless ``overwrite``)."""
    stale = stale_temp_files(work_dir)
    if resume and load_from is None and find_latest_checkpoint(work_dir) is None:
        partial = (f' It holds only incomplete files of an interrupted save: '
                   f'{", ".join(stale)}.' if stale else '')
        raise SystemExit(f'--resume: there is no checkpoint to resume from in {work_dir} (no '
                         f'last_checkpoint file).{partial} Give the checkpoint as --resume CKPT, '
                         f'the right --work-dir, or start a new run without --resume.')
    if resume or overwrite or not osp.isdir(work_dir):
        return
    existing = sorted(f for f in os.listdir(work_dir)
                      if f.endswith('.pth') or f == 'last_checkpoint')
    if existing:
        shown = ', '.join(existing[:5]) + (' ...' if len(existing) > 5 else '')
        raise SystemExit(f'{work_dir} already holds checkpoints of an earlier run ({shown}); a '
                         f'new run would overwrite them. Continue it with --resume, choose '
                         f'another --work-dir, or pass --overwrite to replace them.')


@contextlib.contextmanager
def checkpoint_errors_exit():
    """Turn a :class:`CheckpointError` of the block into a one-message exit (no traceback)."""
    try:
        yield
    except CheckpointError as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None


# -- command-line options of tools/train.py and tools/test.py --------------------------------
SAFE_HOOK = 'mmvit_ext.SafeCheckpointHook'


def add_checkpoint_args(parser, training):
    parser.add_argument('--non-strict', action='store_true',
                        help='load a checkpoint whose keys or shapes do not all fit the model '
                             '(only the matching weights; the mismatches are logged)')
    if training:
        parser.add_argument('--overwrite', action='store_true',
                            help='start a new run in a work dir that holds checkpoints of an '
                                 'earlier run, replacing them')


def apply_checkpoint_args(cfg, args, training):
    """``--non-strict`` and, for training, the work-dir checks of :func:`check_work_dir`."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('type') not in (SAFE_HOOK, 'SafeCheckpointHook'):
        print(f'Warning: default_hooks.checkpoint is {hook and hook.get("type")}, not '
              f'{SAFE_HOOK}: checkpoints are written in place and loaded without strict key '
              f'checks. Inherit configs/_base_/default_runtime_*.py or set its type.')
    elif args.non_strict:
        hook['strict_load'] = False
    if training:
        check_work_dir(cfg.work_dir, cfg.get('resume'), cfg.get('load_from'), args.overwrite)
