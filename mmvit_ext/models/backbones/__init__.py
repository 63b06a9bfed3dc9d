from .base import BaseBackbone
from .pale import PaleTransformer

__all__ = ['BaseBackbone', 'PaleTransformer']
