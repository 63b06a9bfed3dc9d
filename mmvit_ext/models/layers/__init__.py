from .conv_pos_enc import ConvPosEnc
from .group_mix_attention import GroupMixAttention
from .manhattan_attention import (DecomposedManhattanSelfAttention, ManhattanRelPos,
                                  ManhattanSelfAttention)
from .pale_attention import PaleShapedAttention

__all__ = ['ConvPosEnc', 'GroupMixAttention', 'DecomposedManhattanSelfAttention', 'ManhattanRelPos',
           'ManhattanSelfAttention', 'PaleShapedAttention']
