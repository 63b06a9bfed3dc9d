"""Conversion of official RMT checkpoints (github qhfan/RMT) to mmvit_ext checkpoints.

Inputs:

* a classification checkpoint of ``classfication_release/main.py`` (entries ``model`` and
  ``model_ema``; ``--entry`` picks one, ``auto`` takes ``model``) or a bare state_dict ->
  an mmpretrain ImageClassifier checkpoint (``backbone.*``, ``neck.proj/norm.*``,
  ``head.fc.*``; see configs/rmt/rmt-*_8xb128_in1k.py). A head-less (backbone-only) official
  state_dict gives ``backbone.*`` keys only.
* an official mmdet/mmseg checkpoint (``state_dict`` with ``backbone.layers...``,
  ``backbone.extra_norms...`` and the neck/heads) -> the same checkpoint with the backbone keys
  renamed; every other key is kept as it is.

The conversion is strict: keys no rule knows (e.g. a token-labelling ``aux_head``) stop it with
the full list, and the result is checked key by key and shape by shape against the model built
from the arch. The derived buffers ``layers.*.Relpos.decay/angle`` are compared with the values
recomputed for the arch, then dropped.

:func:`convert` works on state_dicts, :func:`convert_file` on files; the command line is
``python tools/model_converters/rmt_to_mmvit.py SRC DST [--entry auto|model|model_ema]
[--arch T|S|B|L]``.
"""
import re
from collections import OrderedDict
from pathlib import Path

import torch
from mmengine.config import Config

from mmvit_ext.checkpoint import check_state_dict
from mmvit_ext.converters.official import KeyMap, load_official_state_dict, save_checkpoint
from mmvit_ext.models.backbones.rmt import RMT
from mmvit_ext.models.layers import ManhattanRelPos
from mmvit_ext.utils.config import build_from_config


BLOCK = 'layers.{stage}.blocks.{block}.'
OURS_BLOCK = 'stages.{stage}.blocks.{block}.'
# The official downsample closes stage i; ours opens stage i + 1.
BACKBONE_KEYS = KeyMap([
    ('patch_embed.proj.{layer}.{param}', 'patch_embed.{layer}.{param}'),
    ('layers.{stage}.downsample.reduction.{param}', 'stages.{stage+1}.downsample.conv.{param}'),
    ('layers.{stage}.downsample.norm.{param}', 'stages.{stage+1}.downsample.norm.{param}'),
    (BLOCK + 'pos.conv.{wb}', OURS_BLOCK + 'cpe.proj.{wb}'),
    (BLOCK + 'retention_layer_norm.{wb}', OURS_BLOCK + 'norm1.{wb}'),
    (BLOCK + 'retention.{proj}.{wb}', OURS_BLOCK + 'attn.{proj}.{wb}'),
    (BLOCK + 'retention.lepe.conv.{wb}', OURS_BLOCK + 'attn.lce.{wb}'),
    (BLOCK + 'final_layer_norm.{wb}', OURS_BLOCK + 'norm2.{wb}'),
    (BLOCK + 'ffn.{fc}.{wb}', OURS_BLOCK + 'ffn.{fc}.{wb}'),
    (BLOCK + 'ffn.dwconv.conv.{wb}', OURS_BLOCK + 'ffn.dwconv.proj.{wb}'),
    (BLOCK + 'gamma_1', OURS_BLOCK + 'ls1.weight'),
    (BLOCK + 'gamma_2', OURS_BLOCK + 'ls2.weight'),
    ('extra_norms.{stage}.{wb}', 'out_norms.{stage}.{wb}'),
], fields=dict(layer=r'\d+', stage=r'\d+', block=r'\d+', param='.+', wb='weight|bias',
               proj='q_proj|k_proj|v_proj|out_proj', fc='fc1|fc2'))
HEAD_KEYS = KeyMap([
    ('proj.{wb}', 'neck.proj.{wb}'),
    ('norm.{bn}', 'neck.norm.{bn}'),
    ('head.{wb}', 'head.fc.{wb}'),
], fields=dict(wb='weight|bias', bn='weight|bias|running_mean|running_var|num_batches_tracked'))
DERIVED = r'layers\.(\d+)\.Relpos\.(decay|angle)'
LAYER_SCALE = r'.*\.ls[12]\.weight'  # LayerScale (C); official gamma_1/2 (1, 1, 1, C)


def infer_arch(state_dict):
    """Name of the official variant whose widths and depths match ``state_dict``."""
    dims = [state_dict['patch_embed.proj.9.weight'].shape[0]] + [
        state_dict[f'layers.{i}.downsample.reduction.weight'].shape[0] for i in range(3)
        if f'layers.{i}.downsample.reduction.weight' in state_dict
    ]
    depths = [
        1 + max((int(m.group(1)) for k in state_dict
                 for m in [re.match(rf'layers\.{i}\.blocks\.(\d+)\.', k)] if m), default=-1)
        for i in range(len(dims))
    ]
    for name, arch in RMT.arch_settings.items():
        if arch['embed_dims'] == dims and arch['depths'] == depths:
            return name
    known = {n: (a['embed_dims'], a['depths']) for n, a in RMT.arch_settings.items()}
    raise ValueError(f'No official RMT variant has embed_dims {dims} and depths {depths} '
                     f'(known: {known}); pass the arch explicitly.')


def check_derived_buffers(state_dict, arch):
    """Compare the official decay/angle buffers with the values recomputed for the arch."""
    for key, value in state_dict.items():
        match = re.fullmatch(DERIVED, key)
        if not match:
            continue
        i, name = int(match.group(1)), match.group(2)
        rel_pos = ManhattanRelPos(arch['embed_dims'][i], arch['num_heads'][i],
                                  arch['init_values'][i], arch['heads_ranges'][i])
        expected = getattr(rel_pos, name)
        if value.shape != expected.shape or not torch.allclose(
                value.float(), expected, rtol=1e-5, atol=1e-7):
            raise ValueError(
                f'{key} = {value.tolist()} differs from the value recomputed for the arch '
                f'{arch} ({expected.tolist()}). mmvit_ext derives these buffers from the arch '
                f'(num_heads, init_values, heads_ranges); this checkpoint was trained with other '
                f'settings: give the right --arch, or build a custom arch dict that matches.')


def convert_backbone(state_dict, arch):
    """Official backbone keys (no prefix) -> ``mmvit_ext.RMT`` keys (``arch``: a dict)."""
    check_derived_buffers(state_dict, arch)
    out = BACKBONE_KEYS.rename(state_dict, drop=(DERIVED, ))
    for key in out:
        if re.fullmatch(LAYER_SCALE, key):
            out[key] = out[key].reshape(-1)
    return out


def backbone_to_official(state_dict):
    """``mmvit_ext.RMT`` keys -> official backbone keys: the reverse of
    :func:`convert_backbone` (the derived Relpos buffers are not produced)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if re.fullmatch(LAYER_SCALE, key):
            value = value.view(1, 1, 1, -1)
        out[key] = value
    return BACKBONE_KEYS.rename(out, reverse=True)


def build_classifier(arch, num_classes):
    """The mmpretrain classifier of the official classification checkpoints, in eval mode."""
    c4 = arch['embed_dims'][-1]
    return build_from_config(Config(dict(default_scope='mmpretrain', model=dict(
        type='ImageClassifier', backbone=dict(type='mmvit_ext.RMT', arch=arch),
        neck=dict(type='mmvit_ext.NormPoolNeck', in_channels=c4, proj_channels=1024,
                  norm_cfg=dict(type='BN'), act_cfg=dict(type='Swish')),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=1024)))))


def convert(state_dict, arch=None):
    """Convert an official state_dict.

    Args:
        state_dict (dict): Official keys (classification or ``backbone.``-prefixed det/seg).
        arch (str | dict, optional): Variant name (T/S/B/L), a custom arch dict of
            ``mmvit_ext.RMT``, or None to infer the official variant from the shapes.

    Returns:
        tuple: ``(new_state_dict, arch, kind)`` with ``arch`` the resolved arch dict and ``kind``
        ``'classifier'``, ``'backbone'`` (head-less input) or ``'dense'`` (mmdet/mmseg input).
    """
    dense = any(k.startswith('backbone.') for k in state_dict)
    if dense:
        backbone = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                               if k.startswith('backbone.'))
    else:
        head_keys = [k for k in state_dict if HEAD_KEYS.rename_key(k) is not None]
        backbone = OrderedDict((k, v) for k, v in state_dict.items() if k not in head_keys)
    arch = RMT.resolve_arch(arch if arch is not None else infer_arch(backbone))
    converted = OrderedDict(
        ('backbone.' + k, v) for k, v in convert_backbone(backbone, arch).items())
    has_out_norms = any(k.startswith('backbone.out_norms.') for k in converted)
    # The models are only compared key by key and shape by shape: build them without memory.
    with torch.device('meta'):
        model = RMT(arch, out_norm_cfg=dict(type='LN', eps=1e-5) if has_out_norms else None)
    if dense:
        check_state_dict({k[len('backbone.'):]: v for k, v in converted.items()}, model)
        out = OrderedDict()
        for key, value in state_dict.items():  # keep the original key order
            if key.startswith('backbone.'):
                continue
            out[key] = value
        return OrderedDict(list(converted.items()) + list(out.items())), arch, 'dense'
    if not head_keys:
        check_state_dict({k[len('backbone.'):]: v for k, v in converted.items()}, model)
        return converted, arch, 'backbone'
    converted.update(HEAD_KEYS.rename({k: state_dict[k] for k in head_keys}))
    if 'head.fc.weight' not in converted:
        raise KeyError(f'Official head incomplete: found only {head_keys}.')
    with torch.device('meta'):
        classifier = build_classifier(arch, converted['head.fc.weight'].shape[0])
    check_state_dict(converted, classifier)
    return converted, arch, 'classifier'


def convert_file(src, dst, entry='auto', arch=None, trust=False):
    """Convert the official checkpoint ``src`` into the mmengine checkpoint ``dst``.

    ``entry`` picks the weights of ``src`` (``auto``: ``state_dict``, then ``model``;
    ``model_ema`` for the EMA weights), ``arch`` as in :func:`convert`. Returns a one-line
    summary. ``trust=True`` loads ``src`` with ``weights_only=False`` (only for files you
    trust: unpickling may run code).
    """
    state_dict = load_official_state_dict(src, entry, trust=trust)
    converted, arch, kind = convert(state_dict, arch)
    arch_name = next((n for n, a in RMT.arch_settings.items() if a == arch), 'custom')
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(converted, dst, meta=dict(converted_from=str(src), entry=entry,
                                              arch=f'RMT-{arch_name}', kind=kind))
    return f'RMT-{arch_name} {kind} checkpoint ({len(converted)} tensors) -> {dst}'
