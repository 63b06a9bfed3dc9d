"""LaViT (Less-Attention Vision Transformer), reconstructed from the paper.

Zhang et al., "You Only Need Less Attention at Each Stage in Vision Transformers", CVPR 2024.
No code was published; this design follows every mechanism the paper states on a PVTv2
skeleton with linear spatial-reduction attention (see ``configs/lavit/README.md``):

* 4 stages, overlapping patch embeddings (7x7/s4, then 3x3/s2), each followed by LayerNorm;
* in each stage the first ``num_va_layers`` blocks use ``VanillaAttention`` and the rest
  ``LessAttention`` (attention logits transformed from the previous block's, no Q/K);
* the last logits of a stage enter the first block of the next stage through
  ``ResidualAttentionDownsample``;
* a LayerNorm closes every stage (``out_norms``); its output is both the dense feature and
  the next stage's input;
* in training the diagonality-preserving loss of the LA layers is computed at every forward
  and handed out by ``pop_aux_losses()``.
"""
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import BaseInit, normal_init, update_init_info

from mmvit_ext.registry import MODELS, WEIGHT_INITIALIZERS
from ..families import AttentionRecording, Family, register
from ..layers.less_attention import LessAttention, VanillaAttention
from ..layers.patch_embed import ConvPatchEmbed
from ..layers.residual_attention_downsample import ResidualAttentionDownsample
from ..losses.diagonality_loss import DiagonalityLoss
from .base import BackboneStage, BaseBackbone, check_drop_path_rate, dense_output

# PVTv2's patch-embedding LayerNorm (torch default eps)
PVT_LN = dict(type='LN', eps=1e-5)


@WEIGHT_INITIALIZERS.register_module(name='FanOutNormal')
class FanOutNormalInit(BaseInit):
    """PVTv2's conv initialisation: ``normal(0, sqrt(2 / fan_out))`` with
    ``fan_out = k_h * k_w * out_channels / groups`` (so depth-wise convs get ``sqrt(2 / k^2)``,
    unlike Kaiming's fan-out), zero bias; ``layer`` names the module types, as in mmengine."""

    def __call__(self, module):
        def init(m):
            if type(m).__name__ in self.layer or self.wholemodule:
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                normal_init(m, mean=0, std=(2.0 / fan_out) ** 0.5, bias=self.bias)

        module.apply(init)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'{type(self).__name__}: bias={self.bias}')


class ConvMlp(nn.Module):
    """PVTv2 MLP: Linear -> depth-wise 3x3 conv -> GELU -> Linear.

    Shapes: x (B, N, C), hw (H, W) -> (B, N, C).
    """

    def __init__(self, embed_dims, hidden_dims):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x, hw):
        x = self.fc1(x)
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, *hw)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class LaViTBlock(nn.Module):
    """Pre-norm transformer block with a vanilla or a less-attention layer.

    Args:
        embed_dims (int), num_heads (int), mlp_ratio (float), drop_path (float).
        less_attention (bool): Use ``LessAttention`` (needs the previous logits) instead of
            ``VanillaAttention`` (takes an optional residual).

    Shapes:
        x: (B, N, C); hw: (H, W); logits: (B, h, N, K) — for an LA block the previous
        block's logits (required), for a VA block the residual logits or None.
        Returns ``(x (B, N, C), logits (B, h, N, K))``.
    """

    def __init__(self, embed_dims, num_heads, mlp_ratio, drop_path, less_attention):
        super().__init__()
        self.less_attention = less_attention
        attn_cls = LessAttention if less_attention else VanillaAttention
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = attn_cls(embed_dims, num_heads)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = ConvMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, hw, logits=None):
        attn_out, logits = self.attn(self.norm1(x), hw, logits)
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x), hw))
        return x, logits


@MODELS.register_module()
class LaViT(BaseBackbone):
    """LaViT backbone (a reconstruction; see the module docstring).

    Args:
        arch (str | dict): ``'t'``, ``'s'``, ``'b'`` or a dict with keys ``embed_dims``,
            ``depths``, ``num_heads``, ``mlp_ratios``, ``num_va_layers`` (per-stage lists;
            ``1 <= num_va_layers[i] <= depths[i]``; ``num_va_layers == depths`` gives the
            all-vanilla skeleton).
        num_va_layers (Sequence[int], optional): Overrides ``arch['num_va_layers']``, e.g.
            ``num_va_layers=[3, 4, 6, 3]`` (the depths of ``'s'``) for LaViT-S's all-vanilla
            skeleton, one ``--cfg-options`` away from any config.
        in_channels (int): Input channels.
        drop_path_rate (float): Stochastic depth, linearly increasing over all blocks.
        dp_loss_weight (float): Weight of the diagonality-preserving loss; 0 switches it off.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg, pretrained: see
            ``BaseBackbone``.

    Shapes:
        (B, in_channels, H, W), any H, W -> tuple of (B, embed_dims[i], H_i, W_i) for
        ``out_indices`` with ``H_1 = ceil(H / 4)`` and ``H_{i+1} = ceil(H_i / 2)``.

    Auxiliary loss:
        Every forward in training mode with ``dp_loss_weight > 0`` (and at least one LA
        layer) stores ``{'loss_diag': loss}`` for that forward, replacing whatever was stored
        before; any other forward clears it. ``pop_aux_losses()`` returns the stored dict and
        clears it, so a value is never handed out twice or after a later forward. The loss is
        computed from the logits the blocks return, outside activation checkpointing, and is
        part of the same autograd graph as the features (DDP sees one graph).
    """
    arch_settings = {
        't': dict(embed_dims=[64, 128, 320, 512], depths=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_va_layers=[1, 1, 1, 1]),
        's': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                  mlp_ratios=[8, 8, 4, 4], num_va_layers=[1, 1, 1, 1]),
        'b': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 18, 3],
                  num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4], num_va_layers=[1, 1, 1, 1]),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'num_va_layers')
    converter = ''  # no official weights were published
    default_init_cfg = BaseBackbone.default_init_cfg + [
        dict(type='mmvit_ext.FanOutNormal', layer='Conv2d', bias=0.)]
    pretrained_optional_keys = ()  # out_norms are part of the network, also in classification

    def __init__(self, arch='s', num_va_layers=None, in_channels=3, drop_path_rate=0.1,
                 dp_loss_weight=1.0, out_indices=(3, ), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, pretrained=None):
        super().__init__(arch, out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, with_cp=with_cp, init_cfg=init_cfg,
                         pretrained=pretrained)
        check_drop_path_rate(drop_path_rate, type(self).__name__)
        if num_va_layers is not None:
            if len(num_va_layers) != len(self.arch['depths']):
                raise ValueError(f'num_va_layers needs one entry per stage '
                                 f'({len(self.arch["depths"])}), got {list(num_va_layers)}.')
            self.arch['num_va_layers'] = list(num_va_layers)
        dims, depths = self.arch['embed_dims'], self.arch['depths']
        heads, va = self.arch['num_heads'], self.arch['num_va_layers']
        for i, (n_va, depth) in enumerate(zip(va, depths)):
            if not 1 <= n_va <= depth:
                raise ValueError(f'LaViT stage {i}: num_va_layers must be in [1, depth={depth}] '
                                 f'(the first block of a stage computes attention), got {n_va}.')
        self.embed_dims = list(dims)
        self.dp_loss = DiagonalityLoss(loss_weight=dp_loss_weight)
        self._aux_losses = {}

        self.patch_embed = ConvPatchEmbed(in_channels, dims[0], 7, 4, norm_cfg=PVT_LN)
        # on the CPU also when built under another default device (timm builds on 'meta')
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [
                LaViTBlock(dims[i], heads[i], self.arch['mlp_ratios'][i],
                           rates[sum(depths[:i]) + j], less_attention=j >= va[i])
                for j in range(depth)
            ]
            stage = BackboneStage(blocks, ConvPatchEmbed(dims[i - 1], dims[i], 3, 2, PVT_LN)
                                  if i > 0 else None)
            # the residual attention of the previous stage, None in stage 1
            stage.attn_downsample = (ResidualAttentionDownsample(heads[i - 1], heads[i])
                                     if i > 0 else None)
            self.stages.append(stage)
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self._freeze_stages()

    @property
    def dp_loss_weight(self):
        return self.dp_loss.loss_weight

    def forward(self, x):
        self._aux_losses = {}
        with_dp_loss = self.training and self.dp_loss_weight > 0
        la_logits, la_hws = [], []
        outs = []
        logits = None
        for i, stage in enumerate(self.stages):
            if i == 0:
                x = self.patch_embed(x)
                incoming = None
            else:
                incoming = stage.attn_downsample(logits, hw)
                x = stage.downsample(x)
            B, H, W, C = x.shape
            hw = (H, W)
            x = x.flatten(1, 2)  # tokens (B, N, C): a view of the channels-last map
            for j, block in enumerate(stage.blocks):
                if block.less_attention:
                    incoming = logits
                elif j > 0:  # only the first VA block of a stage gets the residual
                    incoming = None
                x, logits = self.run_block(block, x, hw, incoming)
                if with_dp_loss and block.less_attention:
                    la_logits.append(logits)
                    la_hws.append(hw)
            # NCHW view of the channels-last map: the next conv takes it without a copy
            x = self.out_norms[i](x).view(B, H, W, C).permute(0, 3, 1, 2)
            if i in self.out_indices:
                outs.append(dense_output(x))
        if la_logits:
            self._aux_losses = {self.dp_loss.loss_name: self.dp_loss(la_logits, la_hws)}
        return tuple(outs)

    def pop_aux_losses(self):
        """Auxiliary losses of the latest forward (``{'loss_diag': tensor}`` or ``{}``);
        cleared on return."""
        losses, self._aux_losses = self._aux_losses, {}
        return losses


FAMILY = register(Family(
    name='lavit',
    backbone=LaViT,
    tiny_arch=dict(embed_dims=[8, 16, 24, 32], depths=[2, 3, 2, 2], num_heads=[1, 2, 3, 4],
                   mlp_ratios=[2, 2, 2, 2], num_va_layers=[1, 2, 1, 1]),
    oracle='mmvit_ext.oracles.lavit:oracle_model',
    attention=AttentionRecording(
        kinds={VanillaAttention: 'lavit_va', LessAttention: 'lavit_la'},
        weights='mmvit_ext.visualization.attention_weights:lavit_weights',
        figures='mmvit_ext.visualization.maps:lavit_figures', per_stage=True),
    timm_variants={f'lavit_{v}': f'lavit-{v}_8xb128_in1k' for v in 'tsb'},
    timm_first_conv='backbone.patch_embed.proj',
    notrace=(VanillaAttention, LessAttention, ResidualAttentionDownsample, DiagonalityLoss),
))
