"""Fuse the model for CPU inference once its test weights are in place."""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmvit_ext.registry import HOOKS


@HOOKS.register_module()
class FuseForCPUInferenceHook(Hook):
    """Apply :func:`mmvit_ext.fuse_for_cpu_inference` before the test epoch.

    It runs last among the ``before_test_epoch`` hooks, after the checkpoint is loaded and any
    weight swap is done, so the fused copies are made from the weights that are tested. The
    fused model is not swapped back: use the hook for fp32 test runs only (``tools/test.py
    --fuse``; not with ``test_cfg.fp16``), without weight-swapping hooks such as EMAHook (a
    test checkpoint's ``state_dict`` already holds the EMA weights, so such a swap changes
    nothing there).
    """
    priority = 'LOWEST'

    def before_test_epoch(self, runner):
        from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
        if getattr(runner.test_loop, 'fp16', False):
            raise RuntimeError('FuseForCPUInferenceHook: the test loop runs under autocast '
                               '(test_cfg.fp16) and the fused CPU kernels compute in fp32 only; '
                               'remove the hook, or set test_cfg.fp16=False.')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not can_fuse(model):
            print_log('FuseForCPUInferenceHook: nothing to fuse in this model.', 'current')
            return
        fuse_for_cpu_inference(model.eval())
        print_log('Fused the model for CPU inference (mmvit_ext.fuse_for_cpu_inference).',
                  'current')
