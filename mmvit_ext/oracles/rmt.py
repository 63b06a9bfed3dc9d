"""Plain reference of RMT, written from the official code, in the OFFICIAL layout.

Module and parameter names are those of the official code, so ``VisRetNet(...).state_dict()``
has the official keys (the converter tests start from it). Everything is computed plainly:
masks built on every call, explicit scores, explicit softmax, K scaled before the product.

``oracle_model(model)`` returns an oracle copy of an ``mmvit_ext.RMT`` backbone or of a
classifier holding one (its neck and head are kept; they are plain layers), its weights renamed
by the converter's reverse key map (key renaming is not part of the reference; the converter
tests check the map against this official-layout model).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvit_ext.converters.rmt import backbone_to_official


class DWConv2d(nn.Module):
    """Depth-wise conv on channels-last maps, official key ``conv``."""

    def __init__(self, dim, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x):  # (B, H, W, C)
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def rotation_tables(angle, H, W):
    """Sines and cosines of the rotation of every token: ``(y * W + x) * angle_c`` for channel c.

    Args:
        angle (Tensor): (d) per-channel frequencies (each pair's frequency twice).

    Returns:
        tuple[Tensor]: sin, cos: (H, W, d) each.
    """
    index = torch.arange(H * W).to(angle)
    theta = index[:, None] * angle[None, :]
    return torch.sin(theta).reshape(H, W, -1), torch.cos(theta).reshape(H, W, -1)


def decay_masks(decay, H, W, chunkwise):
    """The log-decay added to the scores, per head n: ``decay_n * distance``.

    Args:
        decay (Tensor): (N) ``log(gamma_n)``.
        chunkwise (bool): Masks of the two passes of the decomposed form instead of the 2-D one.

    Returns:
        Tensor | tuple[Tensor]: chunkwise: ``(mask_h (N, H, H), mask_w (N, W, W))`` over
        ``|dy|`` and ``|dx|``; else (N, L, L) over ``|dy| + |dx|`` (tokens row-major).
    """
    if chunkwise:
        ih = torch.arange(H).to(decay)
        iw = torch.arange(W).to(decay)
        mask_h = (ih[:, None] - ih[None, :]).abs() * decay[:, None, None]
        mask_w = (iw[:, None] - iw[None, :]).abs() * decay[:, None, None]
        return mask_h, mask_w
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    grid = torch.stack([yy, xx], dim=-1).reshape(H * W, 2).to(decay)
    dist = (grid[:, None, :] - grid[None, :, :]).abs().sum(-1)
    return dist * decay[:, None, None]


class RetNetRelPos2d(nn.Module):
    """Spec 1.6: decay (N), angle (d) buffers; returns ((sin, cos), masks) for (H, W)."""

    def __init__(self, embed_dim, num_heads, initial_value, heads_range):
        super().__init__()
        d = embed_dim // num_heads
        angle = 1.0 / (10000**torch.linspace(0, 1, d // 2))
        angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
        n = torch.arange(num_heads, dtype=torch.float)
        decay = torch.log(1 - 2**(-initial_value - heads_range * n / num_heads))
        self.register_buffer('angle', angle)
        self.register_buffer('decay', decay)

    def forward(self, H, W, chunkwise):
        return rotation_tables(self.angle, H, W), decay_masks(self.decay, H, W, chunkwise)


def rotate_every_two(x):
    out = torch.empty_like(x)
    out[..., 0::2] = -x[..., 1::2]
    out[..., 1::2] = x[..., 0::2]
    return out


def theta_shift(x, sin, cos):
    return x * cos + rotate_every_two(x) * sin


def rotated_qk(x, q_proj, k_proj, num_heads, sin, cos, scaling):
    """Projected and rotated queries and keys of a retention layer.

    Args:
        x (Tensor): (B, H, W, C) input.
        q_proj, k_proj (nn.Linear): The projections, official channel order.
        sin, cos (Tensor): (H, W, d) from :func:`rotation_tables`.
        scaling (float): Factor of the keys (``d ** -0.5``).

    Returns:
        tuple[Tensor]: q, k: (B, N, H, W, d).
    """
    B, H, W, C = x.shape
    q = q_proj(x).view(B, H, W, num_heads, -1).permute(0, 3, 1, 2, 4)
    k = (k_proj(x) * scaling).view(B, H, W, num_heads, -1).permute(0, 3, 1, 2, 4)
    return theta_shift(q, sin, cos), theta_shift(k, sin, cos)


def retention_weights(q, k, mask):
    """``softmax(q k^T + mask)`` over the keys.

    Shapes: q (..., Lq, d), k (..., L, d) (already scaled), mask broadcastable to
    (..., Lq, L) -> (..., Lq, L).
    """
    return torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)


def decomposed_retention_weights(q, k, mask_h, mask_w):
    """Weights of the two passes of the decomposed form: inside every row (W pass), then
    inside every column (H pass), with the same q and k.

    Args:
        q, k (Tensor): (B, N, H, W, d), k scaled.
        mask_h, mask_w (Tensor): (N, H, H), (N, W, W) from :func:`decay_masks`.

    Returns:
        tuple[Tensor]: ``w_pass`` (B, H, N, W, W) and ``h_pass`` (B, W, N, H, H).
    """
    w_pass = retention_weights(q.transpose(1, 2), k.transpose(1, 2), mask_w)
    h_pass = retention_weights(q.permute(0, 3, 1, 2, 4), k.permute(0, 3, 1, 2, 4), mask_h)
    return w_pass, h_pass


class _Retention(nn.Module):

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.lepe = DWConv2d(embed_dim, 5)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def qkv(self, x, sin, cos):
        q, k = rotated_qk(x, self.q_proj, self.k_proj, self.num_heads, sin, cos, self.scaling)
        v = self.v_proj(x)
        return q, k, v, self.lepe(v)


class VisionRetentionChunk(_Retention):
    """Spec 1.8: W pass then H pass, explicit scores and softmax."""

    def forward(self, x, rel_pos):
        B, H, W, C = x.shape
        (sin, cos), (mask_h, mask_w) = rel_pos
        q, k, v, lepe = self.qkv(x, sin, cos)  # q, k: (B, N, H, W, d)
        v = v.view(B, H, W, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)  # B,H,N,W,d
        w_pass, h_pass = decomposed_retention_weights(q, k, mask_h, mask_w)
        v1 = w_pass @ v  # (B, H, N, W, d)
        out = h_pass @ v1.permute(0, 3, 2, 1, 4)  # (B, W, N, H, d)
        out = out.permute(0, 3, 1, 2, 4).reshape(B, H, W, C)
        return self.out_proj(out + lepe)


class VisionRetentionAll(_Retention):
    """Spec 1.9: full attention with the 2-D Manhattan log-decay."""

    def forward(self, x, rel_pos):
        B, H, W, C = x.shape
        (sin, cos), mask = rel_pos
        q, k, v, lepe = self.qkv(x, sin, cos)
        q = q.flatten(2, 3)  # (B, N, L, d)
        k = k.flatten(2, 3)
        v = v.view(B, H * W, self.num_heads, self.head_dim).transpose(1, 2)
        out = retention_weights(q, k, mask) @ v  # (B, N, L, d)
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.out_proj(out + lepe)


class FeedForwardNetwork(nn.Module):

    def __init__(self, embed_dim, ffn_dim):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.dwconv = DWConv2d(ffn_dim, 3)

    def forward(self, x):
        x = F.gelu(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(x)


def drop_path(x, p, training):
    if p == 0. or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class RetBlock(nn.Module):

    def __init__(self, chunkwise, embed_dim, num_heads, ffn_dim, drop_path=0.,
                 layerscale=False, layer_init_value=1e-6):
        super().__init__()
        self.drop_path_rate = drop_path
        self.layerscale = layerscale
        self.retention_layer_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        retention = VisionRetentionChunk if chunkwise else VisionRetentionAll
        self.retention = retention(embed_dim, num_heads)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ffn = FeedForwardNetwork(embed_dim, ffn_dim)
        self.pos = DWConv2d(embed_dim, 3)
        if layerscale:
            self.gamma_1 = nn.Parameter(layer_init_value * torch.ones(1, 1, 1, embed_dim))
            self.gamma_2 = nn.Parameter(layer_init_value * torch.ones(1, 1, 1, embed_dim))

    def forward(self, x, rel_pos):
        x = x + self.pos(x)
        a = self.retention(self.retention_layer_norm(x), rel_pos)
        if self.layerscale:
            a = self.gamma_1 * a
        x = x + drop_path(a, self.drop_path_rate, self.training)
        f = self.ffn(self.final_layer_norm(x))
        if self.layerscale:
            f = self.gamma_2 * f
        return x + drop_path(f, self.drop_path_rate, self.training)


class PatchMerging(nn.Module):

    def __init__(self, dim, out_dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class BasicLayer(nn.Module):

    def __init__(self, embed_dim, out_dim, depth, num_heads, init_value, heads_range, ffn_dim,
                 drop_paths, chunkwise, downsample, layerscale, layer_init_value):
        super().__init__()
        self.chunkwise = chunkwise
        self.Relpos = RetNetRelPos2d(embed_dim, num_heads, init_value, heads_range)
        self.blocks = nn.ModuleList(
            RetBlock(chunkwise, embed_dim, num_heads, ffn_dim, drop_paths[i], layerscale,
                     layer_init_value) for i in range(depth))
        self.downsample = PatchMerging(embed_dim, out_dim) if downsample else None

    def forward(self, x):
        """Returns (features before downsampling, features after downsampling)."""
        _, H, W, _ = x.shape
        rel_pos = self.Relpos(H, W, self.chunkwise)
        for block in self.blocks:
            x = block(x, rel_pos)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):

    def __init__(self, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 3, 2, 1), nn.BatchNorm2d(embed_dim // 2),
            nn.GELU(), nn.Conv2d(embed_dim // 2, embed_dim // 2, 3, 1, 1),
            nn.BatchNorm2d(embed_dim // 2), nn.GELU(),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.GELU(),
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1), nn.BatchNorm2d(embed_dim))

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class VisRetNet(nn.Module):
    """Official layout. ``num_classes`` set: the classification model (returns logits);
    ``num_classes=None``: the det/seg backbone with ``extra_norms`` (returns a tuple of NCHW
    maps for ``out_indices``; ``extra_norms=False`` returns the raw stage outputs).
    """

    def __init__(self, arch, in_chans=3, num_classes=1000, drop_path_rate=0.,
                 layer_init_values=1e-6, projection=1024, out_indices=(0, 1, 2, 3),
                 extra_norms=True):
        super().__init__()
        dims, depths = arch['embed_dims'], arch['depths']
        self.num_classes = num_classes
        self.out_indices = out_indices
        self.patch_embed = PatchEmbed(in_chans, dims[0])
        dpr = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            self.layers.append(
                BasicLayer(dims[i], dims[i + 1] if i < len(depths) - 1 else None, depths[i],
                           arch['num_heads'][i], arch['init_values'][i],
                           arch['heads_ranges'][i], int(arch['mlp_ratios'][i] * dims[i]),
                           dpr[sum(depths[:i]):sum(depths[:i + 1])], arch['decomposed'][i],
                           i < len(depths) - 1, arch['layer_scales'][i], layer_init_values))
        if num_classes is not None:
            self.proj = nn.Linear(dims[-1], projection)
            self.norm = nn.BatchNorm2d(projection)
            self.head = nn.Linear(projection, num_classes)
        elif extra_norms:
            self.extra_norms = nn.ModuleList(nn.LayerNorm(c) for c in dims)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x_out, x = layer(x)
            if i in self.out_indices:
                if hasattr(self, 'extra_norms'):
                    x_out = self.extra_norms[i](x_out)
                outs.append(x_out.permute(0, 3, 1, 2))
        if self.num_classes is None:
            return tuple(outs)
        z = self.norm(self.proj(x).permute(0, 3, 1, 2)).flatten(2)
        z = z * torch.sigmoid(z)
        return self.head(z.mean(-1))


class OracleBackbone(nn.Module):
    """The official-layout network standing in for an ``mmvit_ext.RMT`` backbone."""

    def __init__(self, backbone):
        super().__init__()
        self.net = VisRetNet(backbone.arch, in_chans=backbone.patch_embed[0].in_channels,
                             num_classes=None, out_indices=backbone.out_indices,
                             extra_norms=backbone.out_norms is not None)
        missing, unexpected = self.net.load_state_dict(
            backbone_to_official(backbone.state_dict()), strict=False)
        # Only the derived Relpos buffers are not in our state_dict.
        assert not unexpected and all('Relpos' in k for k in missing), (missing, unexpected)
        out_norms = backbone.out_norms
        if out_norms is not None:
            for norm, ours in zip(self.net.extra_norms, out_norms):
                norm.eps = ours.eps
        self.train(backbone.training)

    def forward(self, x):
        return self.net(x)


def oracle_model(model):
    """Oracle copy of an RMT backbone, or of a model with ``.backbone`` (neck/head kept)."""
    if hasattr(model, 'backbone'):
        oracle = copy.deepcopy(model)
        oracle.backbone = OracleBackbone(model.backbone)
        return oracle
    return OracleBackbone(model)
