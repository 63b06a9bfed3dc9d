"""mmvit_ext: RMT, GroupMixFormer, Pale Transformer and LaViT for the OpenMMLab toolboxes.

Importing the package registers its modules in ``mmvit_ext.registry`` (scope ``mmvit_ext``), so
any mmpretrain / mmdet / mmseg config can say ``type='mmvit_ext.RMT'``, and routes mmengine's
loading of local checkpoints through safe loading (``mmvit_ext.utils.checkpoint``).
"""
from .version import __version__
from .registry import MODELS
from .utils import checkpoint as _checkpoint  # noqa: F401  registers the safe loader

__all__ = ['__version__', 'MODELS']
