"""LaViT residual attention downsampling: carries a stage's last attention logits into the
first vanilla-attention layer of the next stage."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.registry import MODELS


@MODELS.register_module()
class ResidualAttentionDownsample(nn.Module):
    """Average-pool the query grid of attention logits by 2 and mix the heads.

    The query grid (H, W) becomes ``(ceil(H / 2), ceil(W / 2))``, the output size of the
    stride-2 patch embedding between stages; a window that hangs over an odd border averages
    only the queries inside the map. The key axis is untouched (every stage uses the same
    ``K``-key pooled grid). The heads are mixed by ``Linear(in_heads, out_heads)``.

    Args:
        in_heads (int): Heads of the previous stage.
        out_heads (int): Heads of the next stage.

    Shapes:
        logits: (B, in_heads, H * W, K), hw: (H, W) -> (B, out_heads, H' * W', K).
    """

    def __init__(self, in_heads, out_heads):
        super().__init__()
        self.in_heads = in_heads
        self.out_heads = out_heads
        self.head_mix = nn.Linear(in_heads, out_heads)

    def forward(self, logits, hw):
        B, h, N, K = logits.shape
        if h != self.in_heads or N != hw[0] * hw[1]:
            raise ValueError(f'logits must be (B, {self.in_heads}, H*W={hw[0] * hw[1]}, K), '
                             f'got {tuple(logits.shape)}.')
        pad = (0, 0, 0, hw[1] % 2, 0, hw[0] % 2)  # odd sides: one zero row/column at the end

        def window_sums(grid):  # (.., .., 2H', 2W', ..) -> sums over the 2x2 query windows
            return grid.unflatten(2, (-1, 2)).unflatten(4, (-1, 2)).sum((3, 5))

        # the mean over the queries inside the map only
        inside = window_sums(F.pad(logits.new_ones(1, 1, hw[0], hw[1], 1), pad))
        pooled = window_sums(F.pad(logits.reshape(B, h, hw[0], hw[1], K), pad)) / inside
        pooled = pooled.flatten(2, 3)  # (B, h, H'*W', K); no -1, so that B = 0 works
        return torch.einsum('bhnk,oh->bonk', pooled, self.head_mix.weight) + \
            self.head_mix.bias.view(1, -1, 1, 1)
