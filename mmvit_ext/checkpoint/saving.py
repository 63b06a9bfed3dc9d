"""Atomic writing: a temporary file in the same directory, flushed, fsynced and
``os.replace``-d into place, so a kill at any moment leaves either the old or the new complete
file."""
import contextlib
import io
import os
import os.path as osp

import torch
from mmengine.fileio import LocalBackend, register_backend

from .integrity import add_checksum

TEMP_MARK = '.tmp-'  # temporary files are named ``<final name>.tmp-<pid>``


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
