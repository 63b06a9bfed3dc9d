"""Per-channel learnable scaling of a residual branch (CaiT's LayerScale)."""
import torch
import torch.nn as nn


class LayerScale(nn.Module):
    """``x * weight`` over the last axis, ``weight`` initialised to ``init_value``.

    Args:
        dims (int): Channels C.
        init_value (float): Initial scale. Defaults to 1e-5.

    Shapes:
        x: (..., C) -> (..., C).
    """

    def __init__(self, dims, init_value=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dims, ), float(init_value)))

    def forward(self, x):
        return x * self.weight
