"""A hook for the kill-during-save tests: SIGKILLs the trainer at one file operation of a save;
and a metric that improves at every validation (new best checkpoints for sure).

Imported by the test's config through ``custom_imports`` (PYTHONPATH holds the repo root). The
kill happens at a file operation, not at a time, so the tests do not depend on machine speed.
"""
import builtins
import os
import os.path as osp
import signal

from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, METRICS


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


class _HalfWriter:
    """A file whose first write writes half of its data, then kills the process."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(data[:len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        _die()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.file.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.file, name)


@HOOKS.register_module()
class KillAtFileOpHook(Hook):
    """Kill the process at the ``occurrence``-th matching file operation.

    Args:
        name (str): Files whose base name starts with it.
        op (str): ``'write'``: the file is opened for writing, half of the data is written,
            then the process dies; ``'remove'``: the process dies just before the removal.
        occurrence (int): Which matching operation (1 = the first).
    """

    def __init__(self, name, op='write', occurrence=1):
        count = [0]

        def hit(path):
            if not osp.basename(str(path)).startswith(name):
                return False
            count[0] += 1
            return count[0] == occurrence

        if op == 'write':
            real_open = builtins.open

            def open_(file, mode='r', *args, **kwargs):
                handle = real_open(file, mode, *args, **kwargs)
                if ('w' in mode or 'a' in mode) and hit(file):
                    return _HalfWriter(handle)
                return handle

            builtins.open = open_
        elif op == 'remove':
            real_remove = os.remove

            def remove(path, *args, **kwargs):
                if hit(path):
                    _die()
                return real_remove(path, *args, **kwargs)

            os.remove = remove
        else:
            raise ValueError(f'op must be "write" or "remove", got {op!r}')


@METRICS.register_module()
class EvaluationCountMetric(BaseMetric):
    """``{'count': n}`` at the n-th evaluation: every validation is a new best (``rule='greater'``),
    so that the kill tests meet the replacement of a best checkpoint for sure."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.count += 1
        return {'count': self.count}
