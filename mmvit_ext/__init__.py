"""mmvit_ext: RMT, GroupMixFormer, Pale Transformer and LaViT for the OpenMMLab toolboxes.

Importing the package registers its modules in ``mmvit_ext.registry`` (scope ``mmvit_ext``), so
any mmpretrain / mmdet / mmseg config can say ``type='mmvit_ext.RMT'``.
"""
import os

# torch >= 2.6 defaults torch.load to weights_only=True, which cannot unpickle the mmengine
# objects (HistoryBuffer, ConfigDict, numpy scalars) stored in every mmengine checkpoint, and
# mmengine 0.10.7 does not pass weights_only. Only affects calls that leave weights_only unset.
os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')

from .version import __version__  # noqa: E402
from .registry import MODELS  # noqa: E402

__all__ = ['__version__', 'MODELS']
