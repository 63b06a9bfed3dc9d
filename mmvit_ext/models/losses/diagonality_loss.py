"""LaViT's diagonality-preserving loss on the attention of less-attention layers."""
import torch.nn as nn

from mmvit_ext.registry import MODELS
from ..layers.less_attention import adaptive_avg_pool_tokens


def cell_pooled_attention(attn, hw, pool_size=7):
    """Average the attention rows of the queries that fall in each key cell.

    The cell grid is the ``pool_size x pool_size`` grid the keys were pooled to; the queries
    of a cell are those of its adaptive-average-pooling window (the same windows that made
    the keys), so the result is square: one row per cell, one column per key.

    Shapes:
        attn: (B, h, H * W, K) probabilities with ``K = pool_size ** 2``; hw: (H, W)
        -> (B, h, K, K), rows summing to 1.
    """
    N, K = attn.shape[-2:]
    if K != pool_size ** 2 or N != hw[0] * hw[1]:
        raise ValueError(f'attention must be (B, h, H*W={hw[0] * hw[1]}, '
                         f'{pool_size ** 2}), got {tuple(attn.shape)}.')
    return adaptive_avg_pool_tokens(attn, hw, pool_size)


def diagonality_loss(attn, hw, pool_size=7):
    """``mean|A - A^T| + mean_i(1 - A_ii)`` of the cell-pooled attention ``A``.

    Shapes:
        attn: (B, h, H * W, pool_size ** 2) probabilities; hw: (H, W) -> scalar.
    """
    pooled = cell_pooled_attention(attn, hw, pool_size)
    symmetry = (pooled - pooled.transpose(-2, -1)).abs().mean()
    diagonal = (1 - pooled.diagonal(dim1=-2, dim2=-1)).mean()
    return symmetry + diagonal


@MODELS.register_module()
class DiagonalityLoss(nn.Module):
    """Diagonality-preserving loss of LaViT, averaged over layers and weighted.

    Args:
        loss_weight (float): Multiplies the mean over layers; 0 disables the loss (callers
            then skip computing it, see ``LaViT``).
        pool_size (int): Side of the key grid.
        loss_name (str): Key of the loss in the model's loss dict.

    Shapes:
        attn_logits: a sequence of (B, h_l, H_l * W_l, pool_size ** 2) pre-softmax logits,
        hws: the matching (H_l, W_l) -> scalar.
    """

    def __init__(self, loss_weight=1.0, pool_size=7, loss_name='loss_diag'):
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}.')
        self.loss_weight = loss_weight
        self.pool_size = pool_size
        self.loss_name = loss_name

    def forward(self, attn_logits, hws):
        if len(attn_logits) == 0 or len(attn_logits) != len(hws):
            raise ValueError(f'Need one (H, W) per attention map and at least one map; got '
                             f'{len(attn_logits)} maps and {len(hws)} sizes.')
        losses = [diagonality_loss(logits.softmax(dim=-1), hw, self.pool_size)
                  for logits, hw in zip(attn_logits, hws)]
        return self.loss_weight * sum(losses) / len(losses)
