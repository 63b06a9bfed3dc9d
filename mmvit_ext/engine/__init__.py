"""Training-engine pieces; imported by ``mmvit_ext.registry.OPTIM_WRAPPER_CONSTRUCTORS`` and
``HOOKS`` on first use (``locations=['mmvit_ext.engine']``)."""
from .checkpoint_hook import SafeCheckpointHook
from .optim_constructor import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor', 'SafeCheckpointHook']
