"""Registries of mmvit_ext.

Children of mmengine's root registries with scope ``mmvit_ext``: a config of any toolbox can
name ``type='mmvit_ext.<Name>'``; mmengine imports ``mmvit_ext.registry`` and then the
``locations`` on first use.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry


class _ListingRegistry(Registry):
    """A registry whose failed lookups list what is available.

    mmengine's own message ("X is not in the mmvit_ext::model registry") does not say what the
    valid names are; a typo in a config deserves the list.
    """

    def get(self, key):
        obj = super().get(key)
        if obj is None and isinstance(key, str):
            scope, name = self.split_scope_key(key)
            if scope in (None, self.scope):
                available = ', '.join(sorted(self.module_dict))
                raise KeyError(f'"{name}" is not a registered mmvit_ext {self.name}. '
                               f'Available: {available}.')
        return obj

    def __contains__(self, key):
        try:
            return super().get(key) is not None
        except KeyError:
            return False


MODELS = _ListingRegistry(
    'model', parent=MMENGINE_MODELS, scope='mmvit_ext', locations=['mmvit_ext.models'])
OPTIM_WRAPPER_CONSTRUCTORS = _ListingRegistry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='mmvit_ext', locations=['mmvit_ext.engine'])
HOOKS = _ListingRegistry(
    'hook', parent=MMENGINE_HOOKS, scope='mmvit_ext', locations=['mmvit_ext.engine'])
