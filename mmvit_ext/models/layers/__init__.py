from .attention_ops import attention_kernel, softmax_attention
from .conv_pos_enc import ConvPosEnc
from .group_mix_attention import GroupMixAttention
from .less_attention import LessAttention, VanillaAttention
from .manhattan_attention import (DecomposedManhattanSelfAttention, ManhattanRelPos,
                                  ManhattanSelfAttention)
from .pale_attention import PaleShapedAttention
from .patch_embed import ConvPatchEmbed
from .residual_attention_downsample import ResidualAttentionDownsample

__all__ = ['ConvPatchEmbed', 'ConvPosEnc', 'DecomposedManhattanSelfAttention', 'GroupMixAttention',
           'LessAttention', 'ManhattanRelPos', 'ManhattanSelfAttention', 'PaleShapedAttention',
           'ResidualAttentionDownsample', 'VanillaAttention', 'attention_kernel',
           'softmax_attention']
