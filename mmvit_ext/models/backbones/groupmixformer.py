"""GroupMixFormer (Ge et al., "Advancing Vision Transformers with Group-Mix Attention",
arXiv 2311.15157), numerically equivalent to the official code (official checkpoints load after
``python tools/model_converters/groupmixformer_to_mmvit.py``).

Layout: ``patch_embed`` is the official conv stem (two stride-2 3x3 convs + BN + Hardswish);
``stages[i].downsample`` the official ``patch_embed_layers.i`` (separable 3x3 conv, stride 1 in
stage 0 and 2 after, + BN + Hardswish); ``stages[i].blocks`` the GMA blocks. Stage outputs are
the raw block outputs (no output norms), as officially. Tokens stay channels-last
``(B, H, W, C)`` inside a stage, so every size the strided convs accept works (the official
code asserts on sizes that are not multiples of 32). For fp32 CPU inference,
:func:`mmvit_ext.fuse_for_cpu_inference` turns the blocks and embeddings into fused copies.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from mmvit_ext.models.layers.conv_pos_enc import ConvPosEnc
from mmvit_ext.models.layers.group_mix_attention import GroupMixAttention, check_gma_dims
from mmvit_ext.registry import MODELS
from ..families import AttentionRecording, Family, register
from .base import BackboneStage, BaseBackbone, check_drop_path_rate, dense_output


class ConvBNAct(nn.Sequential):
    """3x3 conv (pad 1, with bias) + norm + Hardswish: one half of the official conv stem."""

    def __init__(self, in_channels, out_channels, norm_cfg):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]
        self.act = nn.Hardswish()


class SeparableDownsample(nn.Sequential):
    """Official patch embedding: depth-wise 3x3 (stride 1 or 2, no bias) + point-wise conv (no
    bias) + norm + Hardswish."""

    def __init__(self, in_channels, out_channels, stride, norm_cfg):
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels,
                            bias=False)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]
        self.act = nn.Hardswish()

    def forward(self, x):
        # The point-wise conv as a GEMM over the channels-last pixels (a 1x1 conv on
        # channels-last memory falls back to a slow non-oneDNN kernel on CPU).
        x = F.linear(self.dw(x).permute(0, 2, 3, 1), self.pw.weight.flatten(1))
        return self.act(self.bn(x.permute(0, 3, 1, 2)))

    def fused_copy(self):
        """Its fused CPU-inference copy, or None with a norm other than a BatchNorm."""
        from ..fused.groupmixformer import FusedSeparableDownsample
        return FusedSeparableDownsample.from_module(self)


class GroupMixFFN(nn.Module):
    """``fc2(drop(GELU(fc1(x))))`` then drop. Shapes: (..., C) -> (..., C)."""

    def __init__(self, embed_dims, hidden_dims, drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class GroupMixBlock(nn.Module):
    """``x = x + DWConv3x3(x)``; ``x += DropPath(GMA(LN(x)))``; ``x += DropPath(FFN(LN(x)))``.

    LayerNorms use eps 1e-6; no layer scale. Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, embed_dims, num_heads, mlp_ratio, drop_path=0., drop_rate=0.,
                 qkv_bias=True, qk_scale=None, norm_cfg=dict(type='BN')):
        super().__init__()
        self.cpe = ConvPosEnc(embed_dims, 3)
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = GroupMixAttention(embed_dims, num_heads, qkv_bias, qk_scale, drop_rate,
                                      norm_cfg)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = GroupMixFFN(embed_dims, int(embed_dims * mlp_ratio), drop_rate)

    def forward(self, x):
        x = self.cpe(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def fused_copy(self):
        """Its fused CPU-inference copy, or None with an aggregator norm other than a
        BatchNorm."""
        from ..fused.groupmixformer import FusedGroupMixBlock
        return FusedGroupMixBlock.from_module(self)


@MODELS.register_module()
class GroupMixFormer(BaseBackbone):
    """GroupMixFormer backbone.

    Args:
        arch (str | dict): ``'m'``/``'t'``/``'s'``/``'b'``/``'l'`` (or ``'mini'``, ``'tiny'``,
            ``'small'``, ``'base'``, ``'large'``) or a dict with ``embed_dims``, ``depths`` and
            ``mlp_ratios`` (4 stages; widths multiples of 10). ``'l'`` is the released L config
            (71.8M classifier parameters; the paper reports 70.3M).
        in_channels (int): Image channels. Defaults to 3.
        num_heads (int): Heads of every stage; only 8 is supported (official). Defaults to 8.
        drop_path_rate (float): Stochastic depth, linear over all blocks. Defaults to 0.
        drop_rate (float): Dropout after the attention projection and in the FFN.
        qkv_bias (bool): Defaults to True.
        qk_scale (float, optional): Overrides the official ``(C // 8) ** -0.5``.
        norm_cfg (dict): BatchNorm of the stem, embeddings and aggregators (official
            SyncBN); block norms are LayerNorm(eps 1e-6) as officially.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg, pretrained: see
            :class:`BaseBackbone`.

    Shapes:
        x: (B, in_channels, H, W), any H, W >= 1 -> tuple of (B, C_i, H_i, W_i) for
        ``out_indices``, strides 4, 8, 16, 32 (sizes rounded up by the stride-2 convs).
    """
    arch_settings = {
        'm': dict(embed_dims=[40, 80, 160, 160], depths=[3, 3, 12, 4], mlp_ratios=[4, 4, 4, 4]),
        't': dict(embed_dims=[80, 160, 200, 240], depths=[4, 4, 12, 4], mlp_ratios=[4, 4, 4, 4]),
        's': dict(embed_dims=[80, 160, 320, 320], depths=[2, 4, 12, 4], mlp_ratios=[4, 4, 4, 4]),
        'b': dict(embed_dims=[200, 240, 320, 480], depths=[8, 8, 12, 8],
                  mlp_ratios=[2, 2, 4, 4]),
        'l': dict(embed_dims=[240, 320, 360, 480], depths=[8, 10, 30, 10],
                  mlp_ratios=[4, 4, 2, 2]),
    }
    for _short, _long in zip('mtsbl', ('mini', 'tiny', 'small', 'base', 'large')):
        arch_settings[_long] = arch_settings[_short]
    del _short, _long
    arch_keys = ('embed_dims', 'depths', 'mlp_ratios')
    converter = 'tools/model_converters/groupmixformer_to_mmvit.py'

    def __init__(self, arch='s', in_channels=3, num_heads=8, drop_path_rate=0., drop_rate=0.,
                 qkv_bias=True, qk_scale=None, norm_cfg=dict(type='BN'), out_indices=(3, ),
                 frozen_stages=-1, norm_eval=False, with_cp=False, init_cfg=None,
                 pretrained=None):
        super().__init__(arch, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         pretrained)
        check_drop_path_rate(drop_path_rate, type(self).__name__)
        embed_dims, depths = self.arch['embed_dims'], self.arch['depths']
        mlp_ratios = self.arch['mlp_ratios']
        if len(depths) != 4:
            raise ValueError(f'GroupMixFormer has 4 stages, got arch {self.arch}.')
        for dims in embed_dims:
            check_gma_dims(dims, num_heads)
        self.embed_dims = list(embed_dims)

        self.patch_embed = nn.Sequential(
            ConvBNAct(in_channels, embed_dims[0] // 2, norm_cfg),
            ConvBNAct(embed_dims[0] // 2, embed_dims[0], norm_cfg))
        # on the CPU also when built under another default device (timm builds on 'meta')
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.stages.append(BackboneStage(
                [GroupMixBlock(embed_dims[i], num_heads, mlp_ratios[i], dpr[first + j], drop_rate,
                               qkv_bias, qk_scale, norm_cfg) for j in range(depth)],
                SeparableDownsample(embed_dims[max(i - 1, 0)], embed_dims[i], 1 if i == 0 else 2,
                                    norm_cfg)))
        self._freeze_stages()

    def forward(self, x):
        # Channels-last memory end to end: the NCHW <-> (B, H, W, C) permutes are free views.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage.downsample(x).permute(0, 2, 3, 1)
            for block in stage.blocks:
                x = self.run_block(block, x)
            x = x.permute(0, 3, 1, 2)
            if i in self.out_indices:
                outs.append(dense_output(x))
        return tuple(outs)


FAMILY = register(Family(
    name='groupmixformer',
    backbone=GroupMixFormer,
    tiny_arch=dict(embed_dims=[20, 40, 60, 80], depths=[1, 2, 1, 1], mlp_ratios=[4, 4, 2, 2]),
    oracle='mmvit_ext.oracles.groupmixformer:oracle_model',
    attention=AttentionRecording(
        kinds={GroupMixAttention: 'group_mix'},
        weights='mmvit_ext.visualization.attention_weights:group_mix_weights',
        figures='mmvit_ext.visualization.maps:group_mix_figures'),
    timm_variants={f'groupmixformer_{v}': f'groupmixformer-{v}_8xb128_in1k' for v in 'mtsbl'},
    timm_first_conv='backbone.patch_embed.0.conv',
))
