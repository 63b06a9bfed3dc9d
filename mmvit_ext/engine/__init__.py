"""Training-engine pieces; imported by the ``OPTIM_WRAPPER_CONSTRUCTORS`` and ``HOOKS``
registries of ``mmvit_ext.registry`` on first use (``locations=['mmvit_ext.engine']``)."""
from .checkpoint_hook import SafeCheckpointHook
from .fuse_hook import FuseForCPUInferenceHook
from .optim_constructor import LayerDecayOptimWrapperConstructor

__all__ = ['FuseForCPUInferenceHook', 'LayerDecayOptimWrapperConstructor', 'SafeCheckpointHook']
