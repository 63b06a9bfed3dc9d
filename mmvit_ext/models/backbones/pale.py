"""Pale Transformer (Wu et al., "Pale Transformer: A General Vision Transformer Backbone with
Pale-Shaped Attention", AAAI 2022), built from the paper (the choices it leaves open are listed
in configs/pale/README.md): no official code or weights exist.
"""
import math

import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import FFN

from mmvit_ext.registry import MODELS
from ..families import AttentionRecording, Family, register
from ..layers.conv_pos_enc import ConvPosEnc
from ..layers.pale_attention import PaleShapedAttention, pale_pair
from ..layers.patch_embed import ConvPatchEmbed
from .base import BackboneStage, BaseBackbone, check_drop_path_rate


class PaleBlock(nn.Module):
    """``x + CPE(x)``, then pre-norm PS-Attention and MLP, each with DropPath.

    Shapes:
        x: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, embed_dims, num_heads, pale_size, mlp_ratio=4., drop_path=0.):
        super().__init__()
        self.cpe = ConvPosEnc(embed_dims, kernel_size=3)
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = PaleShapedAttention(embed_dims, num_heads, pale_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = FFN(embed_dims, int(embed_dims * mlp_ratio), act_cfg=dict(type='GELU'),
                       dropout_layer=dict(type='DropPath', drop_prob=drop_path))

    def forward(self, x):
        x = self.cpe(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return self.ffn(self.norm2(x), identity=x)


@MODELS.register_module()
class PaleTransformer(BaseBackbone):
    """Pale Transformer backbone: 4 stages (strides 4/8/16/32) of CPE + PS-Attention blocks.

    Args:
        arch (str | dict): ``'t'``, ``'s'``, ``'b'`` (any case; also ``'tiny'``, ``'small'``,
            ``'base'``) or a dict with keys ``embed_dims``, ``depths``, ``num_heads`` (per-stage
            lists), ``pale_size`` (as the ``pale_size`` argument) and ``mlp_ratio``.
        in_channels (int): Image channels.
        pale_size (int | tuple | list, optional): Overrides the arch's pale size: an int or a
            (rows, columns) tuple for all stages, or a list with one entry per stage. A size
            larger than every map side makes the attention global.
        drop_path_rate (float): Stochastic depth, linearly increasing over all blocks.
        with_out_norms (bool): Apply a per-stage LayerNorm to every returned map (dense
            prediction). Classifiers set ``False``: their neck holds the head's LayerNorm.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg, pretrained: see
            :class:`BaseBackbone`.

    Shapes:
        x: (B, in_channels, H, W), any H, W -> tuple of (B, C_i, ceil(H / 2^(i+2)), ...) maps
        for ``i`` in ``out_indices``.
    """
    arch_settings = {
        't': dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 16, 2],
                  num_heads=[2, 4, 8, 16], pale_size=7, mlp_ratio=4),
        's': dict(embed_dims=[96, 192, 384, 768], depths=[2, 2, 16, 2],
                  num_heads=[4, 8, 16, 32], pale_size=7, mlp_ratio=4),
        'b': dict(embed_dims=[128, 256, 512, 1024], depths=[2, 2, 16, 2],
                  num_heads=[4, 8, 16, 32], pale_size=7, mlp_ratio=4),
    }
    arch_settings.update(tiny=arch_settings['t'], small=arch_settings['s'],
                         base=arch_settings['b'])
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'pale_size', 'mlp_ratio')
    converter = ''  # no official weights exist: train with configs/pale/

    def __init__(self, arch='t', in_channels=3, pale_size=None, drop_path_rate=0.,
                 with_out_norms=True, out_indices=(3, ), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None, pretrained=None):
        super().__init__(arch, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         pretrained)
        check_drop_path_rate(drop_path_rate, type(self).__name__)
        dims, depths, heads = (self.arch[k] for k in ('embed_dims', 'depths', 'num_heads'))
        num_stages = len(depths)
        pale_sizes = self._per_stage(self.arch['pale_size'] if pale_size is None else pale_size,
                                     num_stages)
        self.pale_sizes = pale_sizes
        drop_rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]

        self.patch_embed = ConvPatchEmbed(in_channels, dims[0], 7, 4)
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            first = sum(depths[:i])
            blocks = [PaleBlock(dims[i], heads[i], pale_sizes[i], self.arch['mlp_ratio'],
                                drop_rates[first + j]) for j in range(depths[i])]
            downsample = ConvPatchEmbed(dims[i - 1], dims[i], 3, 2) if i > 0 else None
            self.stages.append(BackboneStage(blocks, downsample))
        self.out_norms = nn.ModuleList(
            nn.LayerNorm(dims[i], eps=1e-6) if i in self.out_indices else nn.Identity()
            for i in range(num_stages)) if with_out_norms else None
        self._freeze_stages()

    @property
    def size_divisor(self):
        """Multiples of the output stride whose map sides at every stage are multiples of the
        stage's pale size (stride ``2 ** (i + 2)``): e.g. 224 for pale size 7. Other sides pad
        the groups of some stage (:class:`PaleShapedAttention`), another graph."""
        sizes = [pale_pair(s, 'pale_size') for s in self.pale_sizes]
        return tuple(math.lcm(32, *(2**(i + 2) * s[axis] for i, s in enumerate(sizes)))
                     for axis in (0, 1))

    @staticmethod
    def _per_stage(pale_size, num_stages):
        """An int or a (rows, columns) tuple applies to every stage; a list has one entry per
        stage."""
        if isinstance(pale_size, (int, tuple)):
            return [pale_size] * num_stages
        if not isinstance(pale_size, list) or len(pale_size) != num_stages:
            raise ValueError(f'pale_size must be an int, a (rows, columns) tuple or a list with '
                             f'one entry per stage ({num_stages}), got {pale_size!r}.')
        return list(pale_size)

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x = stage.downsample(x.permute(0, 3, 1, 2))
            for block in stage.blocks:
                x = self.run_block(block, x)
            if i in self.out_indices:
                outs.append(self.channels_last_output(i, x))
        return tuple(outs)


FAMILY = register(Family(
    name='pale',
    backbone=PaleTransformer,
    tiny_arch=dict(embed_dims=[8, 16, 32, 32], depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                   pale_size=3, mlp_ratio=2),
    oracle='mmvit_ext.oracles.pale:oracle_model',
    attention=AttentionRecording(
        kinds={PaleShapedAttention: 'pale'},
        weights='mmvit_ext.visualization.attention_weights:pale_weights',
        figures='mmvit_ext.visualization.maps:pale_figures'),
    timm_variants={f'pale_{v}': f'pale-{v}_8xb128_in1k' for v in 'tsb'},
    timm_first_conv='backbone.patch_embed.proj',
    notrace=(PaleShapedAttention, ),
))
