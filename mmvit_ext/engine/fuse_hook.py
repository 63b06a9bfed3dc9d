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
    fused model is not swapped back: use the hook for test runs only (``tools/test.py --fuse``),
    without weight-swapping hooks such as EMAHook (a test checkpoint's ``state_dict`` already
    holds the EMA weights, so such a swap changes nothing there).
    """
    priority = 'LOWEST'

    def before_test_epoch(self, runner):
        from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not can_fuse(model):
            print_log('FuseForCPUInferenceHook: nothing to fuse in this model.', 'current')
            return
        fuse_for_cpu_inference(model.eval())
        print_log('Fused the model for CPU inference (mmvit_ext.fuse_for_cpu_inference).',
                  'current')
