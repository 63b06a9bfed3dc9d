"""Plain GroupMixFormer, transcribed from the official code, in the OFFICIAL
module layout and key names (``conv_stem``, ``patch_embed_layers``, ``groupmixformer_backbone``,
``att.aggregator.agg1.conv1`` ...): separate convs per kernel, q/k/v stacked as a 3B batch,
explicit reshapes. Only the official input-size assertion is fixed (real conv output sizes).

``oracle_model(model)`` returns a copy of our backbone or classifier whose backbone is this
official-layout model loaded with our weights, renamed by the converter's reverse key map
(key renaming is not part of the reference; the converter's own tests check the map against
this official-layout model).
"""
import copy
from collections import OrderedDict

import torch
import torch.nn as nn

from mmvit_ext.converters.groupmixformer import backbone_to_official, block_to_official


def batch_norm(dims):
    return nn.BatchNorm2d(dims)


class SeparableConv2d(nn.Module):

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, kernel_size, stride, padding, groups=cin, bias=False)
        self.pointwise_conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise_conv(self.conv1(x))


class ConvStem(nn.Module):

    def __init__(self, in_dim, embed_dim):
        super().__init__()
        mid = embed_dim // 2
        self.proj1 = nn.Conv2d(in_dim, mid, 3, 2, 1)
        self.norm1 = batch_norm(mid)
        self.act1 = nn.Hardswish()
        self.proj2 = nn.Conv2d(mid, embed_dim, 3, 2, 1)
        self.norm2 = batch_norm(embed_dim)
        self.act2 = nn.Hardswish()

    def forward(self, x):
        x = self.act1(self.norm1(self.proj1(x)))
        return self.act2(self.norm2(self.proj2(x)))


class PatchEmbedLayer(nn.Module):

    def __init__(self, cin, cout, is_first_layer):
        super().__init__()
        self.proj = SeparableConv2d(cin, cout, 3, 1 if is_first_layer else 2, 1)
        self.norm = batch_norm(cout)
        self.act = nn.Hardswish()

    def forward(self, x):
        x = self.act(self.norm(self.proj(x)))
        H, W = x.shape[2:]  # the real conv output size (the official code floors here)
        return x.flatten(2).transpose(1, 2), (H, W)


class CPE(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, size):
        B, N, C = x.shape
        H, W = size
        assert N == H * W
        feat = x.transpose(1, 2).reshape(B, C, H, W)
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


class Agg0(nn.Module):

    def __init__(self, seg_dim):
        super().__init__()
        self.conv = SeparableConv2d(seg_dim * 3, seg_dim, 3, 1, 1)
        self.norm = nn.LayerNorm(seg_dim)
        self.act = nn.Hardswish()

    def forward(self, x):
        x = self.conv(x)
        B, C, H, W = x.shape
        return self.act(self.norm(x.reshape(B, C, -1).permute(0, 2, 1)))


class Aggregator(nn.Module):

    def __init__(self, dim, seg=5):
        super().__init__()
        self.dim, self.seg = dim, seg
        s = dim // seg
        self.norm0 = batch_norm(s)
        self.act0 = nn.Hardswish()
        for i, k in enumerate((3, 5, 7), 1):
            setattr(self, f'agg{i}', SeparableConv2d(s, s, k, 1, k // 2))
            setattr(self, f'norm{i}', batch_norm(s))
            setattr(self, f'act{i}', nn.Hardswish())
        self.agg0 = Agg0(s)

    def forward(self, x, size, num_head):
        B, N, C = x.shape  # B here is 3 * batch: q, k, v stacked
        H, W = size
        x = x.transpose(1, 2).view(B, C, H, W)
        s = C // self.seg
        x = x.split([s] * self.seg, dim=1)
        x_local = x[4].reshape(3, B // 3, s, H, W).permute(1, 0, 2, 3, 4).reshape(B // 3, 3 * s, H, W)
        x_local = self.agg0(x_local)
        x0 = self.act0(self.norm0(x[0]))
        x1 = self.act1(self.norm1(self.agg1(x[1])))
        x2 = self.act2(self.norm2(self.agg2(x[2])))
        x3 = self.act3(self.norm3(self.agg3(x[3])))
        x = torch.cat([x0, x1, x2, x3], dim=1)
        C = C // 5 * 4
        x = x.reshape(3, B // 3, num_head, C // num_head, H * W).permute(0, 1, 2, 4, 3)
        return x, x_local


class ConvRelPosEnc(nn.Module):

    def __init__(self, Ch, h, window={3: 2, 5: 3, 7: 3}):
        super().__init__()
        self.conv_list = nn.ModuleList()
        self.head_splits = []
        for k, heads in window.items():
            self.conv_list.append(nn.Conv2d(heads * Ch, heads * Ch, k, 1, k // 2, groups=heads * Ch))
            self.head_splits.append(heads)
        self.channel_splits = [x * Ch for x in self.head_splits]

    def forward(self, q, v, size):
        B, h, N, Ch = q.shape
        H, W = size
        v_img = v.transpose(-1, -2).reshape(B, h * Ch, H, W)
        v_list = torch.split(v_img, self.channel_splits, dim=1)
        conv_v = torch.cat([conv(x) for conv, x in zip(self.conv_list, v_list)], dim=1)
        conv_v = conv_v.reshape(B, h, Ch, H * W).transpose(-1, -2)
        return q * conv_v


class EfficientAtt(nn.Module):

    def __init__(self, dim, num_heads=8, qkv_bias=True, qk_scale=None, proj_drop=0.):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.aggregator = Aggregator(dim=dim, seg=5)
        trans_dim = dim // 5 * 4
        self.crpe = ConvRelPosEnc(Ch=trans_dim // num_heads, h=num_heads)

    def proxies(self, x, size):
        """q, k, v of the four attention segments (B, heads, N, Ch), segment-major (two heads
        per segment), and the non-attention branch (B, N, C / 5), for x (B, N, C)."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, C).permute(2, 0, 1, 3).reshape(3 * B, N, C)
        qkv, x_agg0 = self.aggregator(qkv, size, self.num_heads)
        return qkv[0], qkv[1], qkv[2], x_agg0

    def forward(self, x, size):
        B, N, C = x.shape
        q, k, v, x_agg0 = self.proxies(x, size)
        k_softmax = k.softmax(dim=2)
        k_softmax_T_dot_v = torch.einsum('b h n k, b h n v -> b h k v', k_softmax, v)
        eff_att = torch.einsum('b h n k, b h k v -> b h n v', q, k_softmax_T_dot_v)
        crpe = self.crpe(q, v, size=size)
        x = self.scale * eff_att + crpe
        x = x.transpose(1, 2).reshape(B, N, C // 5 * 4)
        x = torch.cat([x, x_agg0], dim=-1)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0. or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class GMABlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio, drop_path):
        super().__init__()
        self.cpe = CPE(dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.att = EfficientAtt(dim, num_heads)
        self.drop_path_rate = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, size):
        x = self.cpe(x, size)
        x = x + self.drop_path_rate(self.att(self.norm1(x), size))
        return x + self.drop_path_rate(self.mlp(self.norm2(x)))


class GMAStage(nn.Module):

    def __init__(self, dim, depth, num_heads, mlp_ratio, dpr):
        super().__init__()
        self.gma_stage = nn.ModuleList(
            GMABlock(dim, num_heads, mlp_ratio, dpr[i]) for i in range(depth))

    def forward(self, x, size):
        for block in self.gma_stage:
            x = block(x, size)
        return x


class OfficialGroupMixFormer(nn.Module):
    """The official ``GroupMixFormer``: with ``num_classes`` it has ``norm4`` (BN) and ``head``
    and returns logits; without, it returns the stage maps of ``out_indices``."""

    def __init__(self, embed_dims, depths, mlp_ratios, num_heads=8, drop_path_rate=0.,
                 num_classes=None, out_indices=(0, 1, 2, 3)):
        super().__init__()
        self.out_indices = out_indices
        self.conv_stem = ConvStem(3, embed_dims[0])
        self.patch_embed_layers = nn.ModuleList(
            PatchEmbedLayer(embed_dims[max(i - 1, 0)], embed_dims[i], i == 0) for i in range(4))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        starts = [sum(depths[:i]) for i in range(4)]
        self.groupmixformer_backbone = nn.ModuleList(
            GMAStage(embed_dims[i], depths[i], num_heads, mlp_ratios[i],
                     dpr[starts[i]:starts[i] + depths[i]]) for i in range(4))
        self.num_classes = num_classes
        if num_classes:
            self.norm4 = batch_norm(embed_dims[3])
            self.head = nn.Linear(embed_dims[3], num_classes)

    def forward_features(self, x):
        B = x.shape[0]
        x = self.conv_stem(x)
        outs = []
        for embed, stage in zip(self.patch_embed_layers, self.groupmixformer_backbone):
            x, size = embed(x)
            x = stage(x, size)
            x = x.reshape(B, size[0], size[1], -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs

    def forward(self, x):
        outs = self.forward_features(x)
        if self.num_classes:
            return self.head(self.norm4(outs[-1]).mean(dim=(2, 3)))
        return tuple(outs[i] for i in self.out_indices)


class OracleGroupMixAttention(nn.Module):
    """Official ``EfficientAtt`` behind our ``GroupMixAttention`` interface ((B, H, W, C))."""

    def __init__(self, attn):
        super().__init__()
        self.att = EfficientAtt(attn.embed_dims, attn.num_heads,
                                qkv_bias=attn.qkv.bias is not None, qk_scale=attn.scale)
        block = OrderedDict(('attn.' + k, v) for k, v in attn.state_dict().items())
        self.load_state_dict(block_to_official(block), strict=True)

    def forward(self, x):
        B, H, W, C = x.shape
        return self.att(x.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)


class OracleBackbone(nn.Module):
    """Our backbone's interface (tuple of ``out_indices`` maps) over the official model."""

    def __init__(self, backbone):
        super().__init__()
        arch = backbone.arch
        dpr = backbone.stages[-1].blocks[-1].drop_path.drop_prob  # the last block's: the rate
        self.model = OfficialGroupMixFormer(arch['embed_dims'], arch['depths'], arch['mlp_ratios'],
                                            drop_path_rate=dpr, out_indices=backbone.out_indices)
        self.model.load_state_dict(backbone_to_official(backbone.state_dict()), strict=True)
        self.train(backbone.training)

    def forward(self, x):
        return self.model(x)


def oracle_model(model):
    """Copy of ``model`` (GroupMixFormer backbone, or a classifier with ``.backbone``) whose
    backbone is the official-layout oracle with the same weights."""
    if hasattr(model, 'backbone'):
        oracle = copy.deepcopy(model)
        oracle.backbone = OracleBackbone(model.backbone)
        return oracle
    return OracleBackbone(model)
