"""Training-engine pieces; imported by ``mmvit_ext.registry.OPTIM_WRAPPER_CONSTRUCTORS`` on
first use (``locations=['mmvit_ext.engine']``)."""
from .optim_constructor import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor']
