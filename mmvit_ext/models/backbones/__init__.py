from .base import BaseBackbone
from .pale import PaleTransformer
from .rmt import RMT

__all__ = ['BaseBackbone', 'PaleTransformer', 'RMT']
