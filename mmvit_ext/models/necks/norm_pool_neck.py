"""Classification neck shared by the families: optional token projection, norm, pooling."""
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer

from mmvit_ext.registry import MODELS


@MODELS.register_module()
class NormPoolNeck(nn.Module):
    """``GAP(act(norm(proj(x))))`` on the last backbone map.

    Covers the official heads: RMT (``proj_channels=1024``, BN, Swish), GroupMixFormer (BN),
    Pale and LaViT (LN over channels).

    Args:
        in_channels (int): Channels C of the input map.
        proj_channels (int, optional): If set, a per-token Linear(C, P) comes first.
        norm_cfg (dict): ``dict(type='BN')`` normalises NCHW maps, ``dict(type='LN')`` the
            channel vector of every token.
        act_cfg (dict, optional): Activation after the norm.

    Shapes:
        inputs: tuple of (B, C, H, W) maps; the last one is used -> tuple of one (B, P or C).
    """

    def __init__(self, in_channels, proj_channels=None, norm_cfg=dict(type='BN'), act_cfg=None):
        super().__init__()
        out_channels = proj_channels or in_channels
        self.proj = nn.Linear(in_channels, proj_channels) if proj_channels else None
        self.norm_type = norm_cfg['type']
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.act = build_activation_layer(act_cfg) if act_cfg else None

    def forward(self, inputs):
        return (self.pre_pool(inputs[-1]).mean(dim=(2, 3)), )

    def pre_pool(self, x):
        """``act(norm(proj(x)))`` of a (B, C, H, W) map -> (B, P or C, H, W)."""
        if self.proj is not None:
            x = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.norm_type in ('LN', 'LayerNorm'):
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x
