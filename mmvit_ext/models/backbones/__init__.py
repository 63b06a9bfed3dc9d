from .base import BaseBackbone
from .groupmixformer import GroupMixFormer
from .lavit import LaViT
from .pale import PaleTransformer
from .rmt import RMT

__all__ = ['BaseBackbone', 'GroupMixFormer', 'LaViT', 'PaleTransformer', 'RMT']
