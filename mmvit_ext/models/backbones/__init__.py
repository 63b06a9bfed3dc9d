from .base import BaseBackbone
from .groupmixformer import GroupMixFormer
from .pale import PaleTransformer
from .rmt import RMT

__all__ = ['BaseBackbone', 'GroupMixFormer', 'PaleTransformer', 'RMT']
