"""The checkpoint hook of the shipped ``default_runtime`` configs.

mmengine's ``CheckpointHook`` writes checkpoints in place, deletes the oldest kept checkpoint
before the new one exists, saves the ``message_hub`` as pickled ``HistoryBuffer``/numpy objects
(which safe loading refuses) and loads other models' checkpoints with warnings only. This
subclass keeps its options and fixes those four things; it also writes a new best checkpoint
before it removes the previous one (mmengine removes first).
"""
import inspect
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint

from ..checkpoint import (CheckpointMismatchError, add_checksum, atomic_write_bytes,
                          describe_mismatches, install_safe_loading, plain_message_hub,
                          restore_message_hub, stale_temp_files, state_dict_mismatches)
from ..registry import HOOKS


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic saving, a safe message_hub, checksums, strict loading.

    * Files are written to a temporary file in the same directory and ``os.replace``-d into
      place (the ``mmvit_ext_atomic_local`` file backend), ``last_checkpoint`` is updated only
      once the checkpoint is complete, and the checkpoint falling out of ``max_keep_ckpts`` (or
      the previous best checkpoint) is removed only after that. Temporary files of an
      interrupted save are removed (with a warning) when training starts again.
    * The saved ``message_hub`` holds plain lists instead of ``HistoryBuffer`` objects, and
      ``meta['sha256']`` the SHA-256 of each entry (weights, optimizer ...); both are undone /
      verified on load.
    * Building the hook installs safe loading (``weights_only=True`` for every checkpoint the
      run loads: ``mmvit_ext.checkpoint.install_safe_loading``).
    * ``strict_load=True`` (default): ``load_from``, ``--resume`` and ``tools/test.py`` refuse a
      checkpoint whose keys or shapes do not fit the model, listing the first mismatches;
      ``False`` (``--non-strict``) loads the matching weights and warns.

    Args:
        strict_load (bool): See above. Defaults to True.
        **kwargs: Those of ``mmengine.hooks.CheckpointHook``.
    """

    def __init__(self, *args, strict_load=True, backend_args=None, **kwargs):
        _check_overridden_internals()
        if backend_args is None and kwargs.get('file_client_args') is None:
            backend_args = dict(backend='mmvit_ext_atomic_local')
        super().__init__(*args, backend_args=backend_args, **kwargs)
        self.strict_load = strict_load
        # built with the runner, before it loads anything (init_cfg, load_from, resume)
        install_safe_loading()

    def before_train(self, runner):
        super().before_train(runner)
        if not is_main_process():
            return
        for path in stale_temp_files(self.out_dir) + stale_temp_files(runner.work_dir):
            if osp.isfile(path):
                os.remove(path)
                runner.logger.warning(f'Removed {path}: an incomplete file of a checkpoint save '
                                      f'that was interrupted.')

    def before_save_checkpoint(self, runner, checkpoint):
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = plain_message_hub(checkpoint['message_hub'])
        add_checksum(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint):
        if 'message_hub' in checkpoint:
            restore_message_hub(checkpoint['message_hub'])
        model = runner.model
        # what mmengine loads the weights into: the module inside DDP and inside a TTA model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        state_dict = checkpoint.get('state_dict', checkpoint)
        missing, unexpected, shapes = state_dict_mismatches(state_dict, model)
        if not (missing or unexpected or shapes):
            return
        path = runner.cfg.get('load_from') or find_latest_checkpoint(runner.work_dir)
        message = describe_mismatches(path or 'The checkpoint', model, missing, unexpected,
                                      shapes)
        if self.strict_load:
            raise CheckpointMismatchError(message)
        runner.logger.warning(f'--non-strict: loading only the matching weights. {message}')

    def _save_best_checkpoint(self, runner, metrics):
        # mmengine removes the previous best checkpoint before it writes the new one: a kill
        # in between leaves none. Its removals are recorded here and done after the save.
        backend = self.file_backend
        self.file_backend = deferred = _DeferredRemoval(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        best = {getattr(self, 'best_ckpt_path', None),
                *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in deferred.removed:
            if path not in best:
                _remove(backend, path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # Overrides mmengine's method for the order of the file operations: save the new
        # checkpoint (atomically), then point last_checkpoint at it, then remove the one that
        # falls out of max_keep_ckpts. mmengine removes first and writes in place.
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            # The saved list still names the outdated checkpoint: after a kill before its
            # removal, mmengine's before_train of the resumed run removes it.
            kept = list(self.keep_ckpt_ids) + [step]
            runner.message_hub.update_info('keep_ckpt_ids', kept)
            if len(kept) > self.max_keep_ckpts:
                outdated = kept[0]
            self.keep_ckpt_ids.append(step)  # a deque of maxlen max_keep_ckpts

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_bytes(self.last_ckpt.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None:
            _remove(self.file_backend,
                    self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated)))
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))


def _check_overridden_internals():
    """``_save_checkpoint_with_step`` is mmengine-internal (0.10 series, the range setup.cfg
    accepts): a release that renames or reshapes it would make the override below dead code,
    silently back to in-place saving, so a mismatch stops the run."""
    base = getattr(CheckpointHook, '_save_checkpoint_with_step', None)
    if base is None or list(inspect.signature(base).parameters) != ['self', 'runner', 'step',
                                                                     'meta']:
        import mmengine
        raise RuntimeError(
            f'SafeCheckpointHook overrides CheckpointHook._save_checkpoint_with_step(runner, '
            f'step, meta) of mmengine 0.10, which mmengine {mmengine.__version__} does not have '
            f'in that form. Install an mmengine 0.10.x release (pip install "mmengine>=0.10,'
            f'<0.11", or the onedl-mmengine 0.10.x of the fork stack).')


def _remove(backend, path):
    if backend.isfile(path):
        backend.remove(path)
    elif backend.isdir(path):  # deepspeed checkpoints are directories
        backend.rmtree(path)


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` only record the path."""

    def __init__(self, backend):
        self.backend, self.removed = backend, []

    def remove(self, path):
        self.removed.append(path)

    rmtree = remove

    def __getattr__(self, name):
        return getattr(self.backend, name)
