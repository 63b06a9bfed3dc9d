from .conv_pos_enc import ConvPosEnc
from .pale_attention import PaleShapedAttention

__all__ = ['ConvPosEnc', 'PaleShapedAttention']
