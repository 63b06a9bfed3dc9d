from .diagonality_loss import DiagonalityLoss, cell_pooled_attention, diagonality_loss

__all__ = ['DiagonalityLoss', 'cell_pooled_attention', 'diagonality_loss']
