from .conv_pos_enc import ConvPosEnc

__all__ = ['ConvPosEnc']
