from .base import BaseBackbone
# One line per family: importing its module registers the backbone (MODELS) and its FAMILY
# (mmvit_ext.models.families), in this order, the families' order in listings and messages.
# isort: off
from .rmt import RMT
from .groupmixformer import GroupMixFormer
from .pale import PaleTransformer
from .lavit import LaViT
# isort: on

__all__ = ['BaseBackbone', 'GroupMixFormer', 'LaViT', 'PaleTransformer', 'RMT']
