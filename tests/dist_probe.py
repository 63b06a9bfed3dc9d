"""A hook for the distributed test: each rank records what it trained on and its final weights.

Imported by the test's config through ``custom_imports`` (PYTHONPATH holds the repo root).
"""
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.sample_ids = []
        self.initial = None

    @staticmethod
    def _state(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def before_train(self, runner):
        self.initial = self._state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.sample_ids += [s.metainfo['img_path'] for s in data_batch['data_samples']]

    def after_train(self, runner):
        torch.save(dict(rank=get_rank(), world_size=get_world_size(),
                        wrapped=type(runner.model).__name__, samples=self.sample_ids,
                        initial_state_dict=self.initial, state_dict=self._state(runner)),
                   osp.join(self.out_dir, f'rank{get_rank()}.pt'))
