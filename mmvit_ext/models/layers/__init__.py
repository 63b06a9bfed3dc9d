from .conv_pos_enc import ConvPosEnc
from .manhattan_attention import (DecomposedManhattanSelfAttention, ManhattanRelPos,
                                  ManhattanSelfAttention)
from .pale_attention import PaleShapedAttention

__all__ = ['ConvPosEnc', 'DecomposedManhattanSelfAttention', 'ManhattanRelPos',
           'ManhattanSelfAttention', 'PaleShapedAttention']
