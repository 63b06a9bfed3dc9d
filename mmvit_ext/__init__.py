"""mmvit_ext: RMT, GroupMixFormer, Pale Transformer and LaViT for the OpenMMLab toolboxes.

Importing the package registers its modules in ``mmvit_ext.registry`` (scope ``mmvit_ext``), so
any mmpretrain / mmdet / mmseg config can say ``type='mmvit_ext.RMT'``. It changes nothing
else in the process: safe checkpoint loading is installed by the entry points that load
checkpoints (``mmvit_ext.checkpoint.install_safe_loading``).
"""
from .version import __version__
from .registry import MODELS

__all__ = ['__version__', 'MODELS']

# The backbones, attention modules, the CPU-inference transform and the model API at the top
# level (``from mmvit_ext import RMT``), imported on first access so that ``import mmvit_ext``
# (which mmengine does for every ``type='mmvit_ext.X'``) stays light.
_LAZY = {
    'mmvit_ext.models.backbones': ['RMT', 'GroupMixFormer', 'PaleTransformer', 'LaViT'],
    'mmvit_ext.models.layers': [
        'ManhattanSelfAttention', 'DecomposedManhattanSelfAttention', 'ManhattanRelPos',
        'GroupMixAttention', 'PaleShapedAttention', 'LessAttention', 'VanillaAttention',
        'ResidualAttentionDownsample', 'ConvPosEnc', 'ConvPatchEmbed'],
    'mmvit_ext.models.necks': ['NormPoolNeck'],
    'mmvit_ext.models.fused': ['fuse_for_cpu_inference'],
    'mmvit_ext.apis': ['get_model', 'list_models', 'register_mmpretrain_models'],
}
_LAZY_ORIGIN = {name: module for module, names in _LAZY.items() for name in names}
__all__ += list(_LAZY_ORIGIN)


def __getattr__(name):
    if name not in _LAZY_ORIGIN:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib
    return getattr(importlib.import_module(_LAZY_ORIGIN[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY_ORIGIN))
