"""RMT: Retentive Networks Meet Vision Transformers (CVPR 2024).

Numerically equivalent to the official classification model (``VisRetNet``) and the official
mmdet/mmseg backbone; official checkpoints load after
``python tools/model_converters/rmt_to_mmvit.py``. Differences from the official backbone: the
downsample of stage ``i`` is the first module of stage ``i + 1`` here (same function),
``norm_eval`` really freezes the BatchNorm statistics (SyncBN included), ``frozen_stages`` exists,
``with_cp`` uses non-reentrant checkpointing, and the relative-position tables are cached.
For fp32 CPU inference, :func:`mmvit_ext.fuse_for_cpu_inference` turns the blocks, the stem and
the downsamples into fused copies (same numbers up to float rounding).
"""
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from mmvit_ext.registry import MODELS
from ..families import AttentionRecording, Family, register
from ..layers import (ConvPosEnc, DecomposedManhattanSelfAttention, ManhattanRelPos,
                      ManhattanSelfAttention)
from ..layers.layer_scale import LayerScale
from .base import BackboneStage, BaseBackbone, check_drop_path_rate


class RMTStem(nn.Sequential):
    """Four 3x3 convs (strides 2, 1, 2, 1) with norms, GELU after the first three.

    Shapes: (B, 3, H, W) -> (B, ceil(H/4), ceil(W/4), C) (channels-last).
    """

    def __init__(self, in_channels, embed_dims, norm_cfg):
        layers = []
        channels = [in_channels, embed_dims // 2, embed_dims // 2, embed_dims, embed_dims]
        for i, stride in enumerate((2, 1, 2, 1)):
            layers += [nn.Conv2d(channels[i], channels[i + 1], 3, stride, 1),
                       build_norm_layer(norm_cfg, channels[i + 1])[1]]
            if i < 3:
                layers.append(nn.GELU())
        super().__init__(*layers)

    def forward(self, x):
        # Contiguous (B, H, W, C): on a permuted NCHW map every block's norms and linears copy
        # their input and the depth-wise convs' backward takes its slow NCHW path (RMT-S
        # training step 5 % slower on the CPU; the official code has that layout).
        return super().forward(x).permute(0, 2, 3, 1).contiguous()

    def fused_copy(self):
        """Its fused CPU-inference copy, or None with norms other than BatchNorms."""
        from ..fused.rmt import FusedRMTStem
        return FusedRMTStem.from_module(self)


class RMTDownsample(nn.Module):
    """3x3 stride-2 conv + norm between stages (official ``PatchMerging``).

    Shapes: (B, H, W, C_in) -> (B, ceil(H/2), ceil(W/2), C_out).
    """

    def __init__(self, in_channels, out_channels, norm_cfg):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x):
        return self.norm(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    def fused_copy(self):
        """Its fused CPU-inference copy, or None with a norm other than a BatchNorm."""
        from ..fused.rmt import FusedRMTDownsample
        return FusedRMTDownsample.from_module(self)


class RMTFFN(nn.Module):
    """``fc2(h + DWConv3x3(h))`` with ``h = GELU(fc1(x))``. Shapes: (B, H, W, C) -> same."""

    def __init__(self, embed_dims, hidden_dims):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.dwconv = ConvPosEnc(hidden_dims, kernel_size=3)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x):
        return self.fc2(self.dwconv(self.act(self.fc1(x))))


class RMTBlock(nn.Module):
    """``x + CPE(x)``, then pre-norm MaSA and FFN residuals with optional LayerScale.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads of the attention.
        mlp_ratio (float): FFN hidden width ``int(mlp_ratio * C)``.
        decomposed (bool): Decomposed (W then H) or full MaSA.
        drop_path (float): Stochastic depth rate of both residual branches.
        layer_scale (bool): Learnable per-channel scales on both branches.
        layer_scale_init (float): Their initial value.

    Shapes: x (B, H, W, C), rel_pos from the stage's :class:`ManhattanRelPos` -> (B, H, W, C).
    """

    def __init__(self, embed_dims, num_heads, mlp_ratio, decomposed, drop_path=0.,
                 layer_scale=False, layer_scale_init=1e-6):
        super().__init__()
        attn_cls = DecomposedManhattanSelfAttention if decomposed else ManhattanSelfAttention
        self.cpe = ConvPosEnc(embed_dims, kernel_size=3)
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = attn_cls(embed_dims, num_heads)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = RMTFFN(embed_dims, int(mlp_ratio * embed_dims))
        if layer_scale:
            self.ls1 = LayerScale(embed_dims, layer_scale_init)
            self.ls2 = LayerScale(embed_dims, layer_scale_init)
        else:
            self.ls1 = self.ls2 = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, rel_pos):
        x = self.cpe(x)
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rel_pos)))
        return x + self.drop_path(self.ls2(self.ffn(self.norm2(x))))

    def fused_copy(self):
        """Its fused CPU-inference copy (:func:`mmvit_ext.fuse_for_cpu_inference`)."""
        from ..fused.rmt import FusedRMTBlock
        return FusedRMTBlock.from_module(self)


@MODELS.register_module()
class RMT(BaseBackbone):
    """RMT backbone (``type='mmvit_ext.RMT'``).

    Args:
        arch (str | dict): ``'t'``, ``'s'``, ``'b'``, ``'l'`` or a dict with the keys of
            ``arch_keys`` (per-stage lists): ``embed_dims``, ``depths``, ``num_heads``,
            ``mlp_ratios``, ``init_values`` and ``heads_ranges`` (decay exponents, see
            :class:`ManhattanRelPos`), ``decomposed`` (decomposed or full MaSA per stage),
            ``layer_scales`` (LayerScale per stage).
        in_channels (int): Input channels. Defaults to 3.
        drop_path_rate (float): Stochastic depth, linear from 0 (first block) to this value
            (last block). The official variants use 0.1 / 0.15 / 0.4 / 0.5. Defaults to 0.
        layer_scale_init (float): Initial LayerScale value. Defaults to 1e-6.
        norm_cfg (dict): Norm of the stem and downsample convs; ``SyncBN`` in the official
            det/seg backbone. Defaults to ``dict(type='BN')``.
        out_norm_cfg (dict, optional): Norm of every stage output for dense prediction (the
            official det/seg ``extra_norms``: ``dict(type='LN', eps=1e-5)``); None (the
            classification model) returns the raw stage outputs.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg, pretrained: see
            :class:`BaseBackbone`.

    Shapes:
        (B, in_channels, H, W) -> tuple of (B, C_i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) for
        ``i`` in ``out_indices``. Any H, W.
    """
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'init_values',
                 'heads_ranges', 'decomposed', 'layer_scales')
    arch_settings = {
        'T': dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 8, 2], num_heads=[4, 4, 8, 16],
                  mlp_ratios=[3, 3, 3, 3], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                  decomposed=[True, True, False, False],
                  layer_scales=[False, False, False, False]),
        'S': dict(embed_dims=[64, 128, 256, 512], depths=[3, 4, 18, 4], num_heads=[4, 4, 8, 16],
                  mlp_ratios=[4, 4, 3, 3], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                  decomposed=[True, True, True, False],
                  layer_scales=[False, False, False, False]),
        'B': dict(embed_dims=[80, 160, 320, 512], depths=[4, 8, 25, 8],
                  num_heads=[5, 5, 10, 16], mlp_ratios=[4, 4, 3, 3], init_values=[2, 2, 2, 2],
                  heads_ranges=[5, 5, 6, 6], decomposed=[True, True, True, False],
                  layer_scales=[False, False, True, True]),
        'L': dict(embed_dims=[112, 224, 448, 640], depths=[4, 8, 25, 8],
                  num_heads=[7, 7, 14, 20], mlp_ratios=[4, 4, 3, 3], init_values=[2, 2, 2, 2],
                  heads_ranges=[6, 6, 6, 6], decomposed=[True, True, True, False],
                  layer_scales=[False, False, True, True]),
    }
    converter = 'tools/model_converters/rmt_to_mmvit.py'

    def __init__(self, arch='s', in_channels=3, drop_path_rate=0., layer_scale_init=1e-6,
                 norm_cfg=dict(type='BN'), out_norm_cfg=None, out_indices=(3, ),
                 frozen_stages=-1, norm_eval=False, with_cp=False, init_cfg=None,
                 pretrained=None):
        super().__init__(arch, out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, init_cfg=init_cfg,
                         pretrained=pretrained)
        arch = self.arch
        check_drop_path_rate(drop_path_rate, type(self).__name__)
        dims = arch['embed_dims']
        num_blocks = sum(arch['depths'])
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]

        self.patch_embed = RMTStem(in_channels, dims[0], norm_cfg)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(arch['depths']):
            downsample = RMTDownsample(dims[i - 1], dims[i], norm_cfg) if i > 0 else None
            rel_pos = ManhattanRelPos(dims[i], arch['num_heads'][i], arch['init_values'][i],
                                      arch['heads_ranges'][i])
            first = sum(arch['depths'][:i])
            blocks = [
                RMTBlock(dims[i], arch['num_heads'][i], arch['mlp_ratios'][i],
                         arch['decomposed'][i], rates[first + j], arch['layer_scales'][i],
                         layer_scale_init) for j in range(depth)
            ]
            stage = BackboneStage(blocks, downsample)
            stage.rel_pos = rel_pos
            stage.decomposed = arch['decomposed'][i]
            self.stages.append(stage)
        if out_norm_cfg is not None:
            self.out_norms = nn.ModuleList(build_norm_layer(out_norm_cfg, c)[1] for c in dims)
        else:
            self.out_norms = None
        self._freeze_stages()

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x = stage.downsample(x)
            rel_pos = stage.rel_pos(x.shape[1], x.shape[2], stage.decomposed, like=x)
            for block in stage.blocks:
                x = self.run_block(block, x, rel_pos)
            if i in self.out_indices:
                outs.append(self.channels_last_output(i, x))
        return tuple(outs)


FAMILY = register(Family(
    name='rmt',
    backbone=RMT,
    # both attention forms, layer scales and non-square head splits
    tiny_arch=dict(embed_dims=[16, 32, 32, 48], depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 3],
                   mlp_ratios=[2, 3, 2, 2], init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6],
                   decomposed=[True, False, True, False],
                   layer_scales=[False, False, True, True]),
    oracle='mmvit_ext.oracles.rmt:oracle_model',
    attention=AttentionRecording(
        kinds={ManhattanSelfAttention: 'rmt_full',
               DecomposedManhattanSelfAttention: 'rmt_decomposed'},
        weights='mmvit_ext.visualization.attention_weights:rmt_weights',
        figures='mmvit_ext.visualization.maps:rmt_figures'),
    timm_variants={f'rmt_{v}': f'rmt-{v}_8xb128_in1k' for v in 'tsbl'},
    timm_first_conv='backbone.patch_embed.0',
    notrace=(ManhattanRelPos, ManhattanSelfAttention, DecomposedManhattanSelfAttention),
))
