"""Checkpoint files: safe loading, integrity checks, atomic writing, strict matching.

* Every checkpoint is unpickled with ``torch.load(weights_only=True)``: tensors and plain
  containers only. A file that wants anything else (a pickle can call any function while it
  loads) is refused with a message naming the file and every global it wants (read from the
  pickle without importing anything). Official files that hold known harmless objects load
  through the named allow-list :data:`OFFICIAL_SAFE_GLOBALS`. A file must be a dict (with a
  dict ``state_dict`` if it has one).
* Importing this module registers a loader of this kind for every scheme of mmengine's
  ``CheckpointLoader`` (local paths, ``http(s)://``, ``torchvision://``, ``open-mmlab://``,
  ``mmcls://``, ``pavi://``, ``s3://`` ...; ``register_scheme``, mmengine's public extension
  point): each downloads or finds the file as mmengine does and loads it as above. So
  ``load_from``, ``--resume``, ``tools/test.py``, ``init_cfg=dict(type='Pretrained')``,
  ``get_model(pretrained=...)`` and the timm models' ``pretrained`` all load this way.
  ``mmvit_ext/__init__.py`` imports it.
* Checkpoints written by this package carry a SHA-256 of each entry (weights, optimizer ...)
  in ``meta['sha256']``; it is verified on every load where present.
* Files are written to a temporary file in the same directory, flushed, fsynced and
  ``os.replace``-d into place (:func:`atomic_write_bytes`, :class:`AtomicLocalBackend`), so a
  kill at any moment leaves either the old or the new complete file.
"""
import _compat_pickle
import contextlib
import hashlib
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import sys
import tempfile
import zipfile
from collections import OrderedDict, deque
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import (DEFAULT_CACHE_DIR, ENV_MMENGINE_HOME, ENV_XDG_CACHE_HOME,
                                        CheckpointLoader, get_deprecated_model_names,
                                        get_external_models, get_mmcls_models,
                                        get_torchvision_models)

CHECKSUM_KEY = 'sha256'  # in meta: entry name -> SHA-256
# in meta: SHA-256 of the entry names of CHECKSUM_KEY. Pickle writes each name once and refers
# to it from the map and the checkpoint alike: one damaged byte renames both consistently.
NAMES_CHECKSUM_KEY = 'sha256_names'
TEMP_MARK = '.tmp-'  # temporary files are named ``<final name>.tmp-<pid>``
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
# Saved message_hub entries: HistoryBuffer objects become this plain form.
PLAIN_HISTORY_MARK = '__mmvit_ext_history_buffer__'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot or must not be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file wants to run or build objects that safe loading does not allow."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint file (or model name) does not exist."""


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
    meta = checkpoint.setdefault('meta', {})
    meta[CHECKSUM_KEY] = {
        name: entry_sha256(value) for name, value in checkpoint.items() if name != 'meta'}
    meta[NAMES_CHECKSUM_KEY] = entry_sha256(list(meta[CHECKSUM_KEY]))


def verify_checksum(checkpoint, path):
    """Entries whose SHA-256 differs from ``meta['sha256']``, entries it does not cover (a
    damaged entry name) and a missing ``state_dict`` make the file damaged; other entries it
    covers may be missing (mmengine's ``published_keys`` strip some)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    expected = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if not isinstance(expected, dict):
        return
    names = meta.get(NAMES_CHECKSUM_KEY)
    if names is not None and names != entry_sha256(list(expected)):
        raise DamagedCheckpointError(
            f'{path} is damaged: the names of its entries differ from those stored when it was '
            f'saved. Copy or download it again.')
    damaged = [name for name, sha in expected.items()
               if name in checkpoint and entry_sha256(checkpoint[name]) != sha]
    if damaged:
        raise DamagedCheckpointError(
            f'{path} is damaged: the SHA-256 of its {", ".join(damaged)} differs from the one '
            f'stored when it was saved. Copy or download it again.')
    unknown = [repr(name) for name in checkpoint if name != 'meta' and name not in expected]
    unknown += ["'state_dict' (missing)"] * ('state_dict' in expected
                                             and 'state_dict' not in checkpoint)
    if unknown:
        raise DamagedCheckpointError(
            f'{path} is damaged: its entries {", ".join(unknown)} differ from those whose '
            f'SHA-256 was stored when it was saved. Copy or download it again.')


# -- loading --------------------------------------------------------------------------------
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


# mmengine's checkpoint loaders (CheckpointLoader schemes), each downloading or finding the file
# as mmengine does and loading it with load_checkpoint_file.
def load_from_local_weights_only(filename, map_location):
    return load_checkpoint_file(filename, map_location=map_location)


def _download(url, progress):
    """torch.hub's cache of ``url``, ``<hub dir>/checkpoints/<file name>`` (where mmengine's
    and torch.hub's loaders keep it), downloaded if not there yet."""
    model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        print_log(f'Downloading {url} to {cached}', logger='current')
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return cached


def load_from_http_weights_only(filename, map_location=None, progress=os.isatty(0)):
    rank, world_size = get_dist_info()
    if rank == 0:  # as mmengine: local rank 0 downloads, the others wait and use its file
        cached = _download(filename, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download(filename, progress)
    return load_checkpoint_file(cached, map_location=map_location,
                                name=f'{filename} (downloaded to {cached})')


def _model_url(filename, urls, what):
    model = filename.split('://', 1)[1]
    if model not in urls:
        raise MissingCheckpointError(f'{filename}: {what} has no model named {model}.')
    return urls[model]


def load_from_torchvision_weights_only(filename, map_location=None):
    url = _model_url(filename, get_torchvision_models(), 'torchvision')
    return load_from_http_weights_only(url, map_location=map_location)


def load_from_openmmlab_weights_only(filename, map_location=None):
    prefix, model = filename.split('://', 1)
    model = get_deprecated_model_names().get(model, model)
    url = _model_url(f'{prefix}://{model}', get_external_models(), 'the OpenMMLab model zoo')
    if url.startswith(('http://', 'https://')):
        return load_from_http_weights_only(url, map_location=map_location)
    home = osp.expanduser(os.getenv(ENV_MMENGINE_HOME, osp.join(
        os.getenv(ENV_XDG_CACHE_HOME, DEFAULT_CACHE_DIR), 'mmengine')))
    return load_checkpoint_file(osp.join(home, url), map_location=map_location, name=filename)


def load_from_mmcls_weights_only(filename, map_location=None):
    url = _model_url(filename, get_mmcls_models(), 'mmcls')
    checkpoint = load_from_http_weights_only(url, map_location=map_location)
    weights = checkpoint.get('state_dict', checkpoint)
    return {'state_dict': OrderedDict((k[len('backbone.'):], v) for k, v in weights.items()
                                      if k.startswith('backbone.'))}


def load_from_pavi_weights_only(filename, map_location=None):
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_checkpoint_file(downloaded, map_location=map_location, name=filename)


def load_from_ceph_weights_only(filename, map_location=None, backend='petrel'):
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    with tempfile.TemporaryDirectory() as tmp_dir:
        copy = osp.join(tmp_dir, 'checkpoint.pth')
        with open(copy, 'wb') as f:
            f.write(data)
        return load_checkpoint_file(copy, map_location=map_location, name=filename)


# every scheme mmengine registers, replaced (mmengine's public extension point)
SAFE_LOADERS = {
    '': load_from_local_weights_only,
    ('http://', 'https://'): load_from_http_weights_only,
    ('modelzoo://', 'torchvision://'): load_from_torchvision_weights_only,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab_weights_only,
    'mmcls://': load_from_mmcls_weights_only,
    'pavi://': load_from_pavi_weights_only,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph_weights_only,
}
for _prefixes, _loader in SAFE_LOADERS.items():
    CheckpointLoader.register_scheme(prefixes=_prefixes, loader=_loader, force=True)


def load_timm_pretrained(model, path):
    """The ``pretrained`` weights of a timm model of this package (timm's ``custom_load``),
    loaded as every checkpoint is and strictly, except for a classifier of another number of
    classes, which stays as initialised (as timm does it)."""
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    weights = dict(checkpoint.get('state_dict', checkpoint))
    own = model.state_dict()
    classifier = model.pretrained_cfg['classifier']
    replaced = [k for k in (f'{classifier}.weight', f'{classifier}.bias') if k in weights
                and (k not in own or own[k].shape != getattr(weights[k], 'shape', None))]
    for key in replaced:
        del weights[key]
    missing, unexpected, shapes = state_dict_mismatches(weights, model)
    missing = [k for k in missing if k not in replaced]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(describe_mismatches(
            path, model, missing, unexpected, shapes, hint='Is it the checkpoint of another '
                                                             'model?'))
    model.load_state_dict(weights, strict=False)


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


def describe_mismatches(path, model, missing, unexpected, shapes, shown=5, hint=None):
    def first(items):
        more = f' ... ({len(items) - shown} more)' if len(items) > shown else ''
        return ', '.join(items[:shown]) + more if items else 'none'

    backbone = getattr(model, 'backbone', None)
    converter = getattr(backbone, 'converter', '')
    convert = (f'an official {type(backbone).__name__} checkpoint needs '
               f'`python {converter} SRC DST` first; ' if converter else '')
    hint = hint or (f'Is it the checkpoint of another model or config? {convert}to load only '
                    f'the matching weights on purpose, pass --non-strict.')
    return (f'{path} does not fit the model {type(model).__name__}: {len(missing)} missing, '
            f'{len(unexpected)} unexpected, {len(shapes)} mis-shaped or non-tensor keys.\n'
            f'  missing: {first(missing)}\n  unexpected: {first(unexpected)}\n'
            f'  shape mismatches: {first(shapes)}\n{hint}')


# -- work dirs ------------------------------------------------------------------------------
def _saved_checkpoints(work_dir):
    """The complete checkpoint files of ``work_dir`` (saves are atomic), newest first, and
    the newest one to resume from (best checkpoints hold no optimizer state)."""
    paths = sorted((osp.join(work_dir, f) for f in os.listdir(work_dir)
                    if f.endswith('.pth') and TEMP_MARK not in f), key=osp.getmtime,
                   reverse=True)
    return paths, next((p for p in paths if not osp.basename(p).startswith('best_')), None)


def _resume_point(work_dir):
    """``(checkpoint or None, why not)``: what ``--resume`` without a path continues from."""
    last_file = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last_file):
        return None, 'no last_checkpoint file, which names the checkpoint to resume from'
    with open(last_file) as f:
        last = f.read().strip()  # as mmengine's find_latest_checkpoint reads it
    if not osp.isfile(last):
        return None, f'its last_checkpoint names {last}, which does not exist'
    return last, None


def check_work_dir(work_dir, resume, load_from, overwrite):
    """Stop before a run silently restarts or overwrites: ``--resume`` with nothing to resume,
    or a new run into a work dir that holds checkpoints (unless ``overwrite``, which removes
    ``last_checkpoint`` first, so that an interrupted new run is not resumed as the old one)."""
    exists = osp.isdir(work_dir)
    saved, resumable = _saved_checkpoints(work_dir) if exists else ([], None)
    last, why_not = _resume_point(work_dir) if exists else (None, 'no last_checkpoint file')
    if resume and load_from is None and last is None:
        if resumable:
            shown = ', '.join(osp.basename(p) for p in saved[:3])
            raise SystemExit(
                f'--resume: {work_dir} has {why_not} (a save or an --overwrite run was '
                f'interrupted before writing it). It holds {shown}{" ..." * (len(saved) > 3)}: '
                f'to continue from the newest, give it: --resume {resumable}; to start anew, '
                f'run without --resume and with --overwrite.')
        stale = stale_temp_files(work_dir)
        partial = (f' It holds only incomplete files of an interrupted save: '
                   f'{", ".join(stale)}.' if stale else '')
        raise SystemExit(f'--resume: there is no checkpoint to resume from in {work_dir} '
                         f'({why_not}).{partial} Give the checkpoint as --resume CKPT, the '
                         f'right --work-dir, or start a new run without --resume.')
    if resume or not exists:
        return
    last_file = osp.join(work_dir, 'last_checkpoint')
    if overwrite:
        with contextlib.suppress(FileNotFoundError):  # another process of the run was first
            os.remove(last_file)
        return
    if saved or osp.exists(last_file):
        shown = ', '.join(osp.basename(p) for p in saved[:5]) or 'last_checkpoint'
        resume_as = '--resume' if last else (f'--resume {resumable}' if resumable else None)
        continue_it = f'Continue it with {resume_as}, choose' if resume_as else 'Choose'
        raise SystemExit(f'{work_dir} already holds checkpoints of an earlier run ({shown}'
                         f'{" ..." * (len(saved) > 5)}); a new run would overwrite them. '
                         f'{continue_it} another --work-dir, or pass --overwrite to replace '
                         f'them.')


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

