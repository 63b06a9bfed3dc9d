"""Conversion of official GroupMixFormer checkpoints (github AILab-CVC/GroupMixFormer) to mmvit_ext.

Inputs: the released ``{'model': state_dict}`` files or a bare state_dict (a ``module.`` prefix
is removed). With ``norm4``/``head`` keys the output is an mmpretrain ImageClassifier checkpoint
(``backbone.*``, ``neck.norm.*``, ``head.fc.*``; configs/groupmixformer/*_in1k.py); a
backbone-only state_dict (official ``return_interm_layers=True``) gives ``backbone.*`` keys.

Renaming is strict (unknown keys stop the conversion with the full list) and the result is
checked key by key and shape by shape against the model built from the arch (inferred from the
widths and depths, or ``--arch``). The only tensor change: the aggregator's four segment BNs
``norm0..norm3`` (``s`` channels each) become our single BN over the ``4s`` proxy channels.

:func:`convert` works on state_dicts, :func:`convert_file` on files; the command line is
``python tools/model_converters/groupmixformer_to_mmvit.py SRC DST [--arch m|t|s|b|l]``.
"""
import re
from collections import OrderedDict
from pathlib import Path

import torch
from mmengine.config import Config

from mmvit_ext.checkpoint import check_state_dict
from mmvit_ext.converters.official import load_official_state_dict, rename_keys, save_checkpoint
from mmvit_ext.models.backbones.groupmixformer import GroupMixFormer
from mmvit_ext.utils.config import build_from_config

BLOCK = r'groupmixformer_backbone\.(\d)\.gma_stage\.(\d+)\.'
OURS = r'backbone.stages.\1.blocks.\2.'
BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
RULES = [
    (r'conv_stem\.proj([12])\.(weight|bias)', lambda m: f'backbone.patch_embed.{int(m[1]) - 1}.conv.{m[2]}'),
    (r'conv_stem\.norm([12])\.' + BN, lambda m: f'backbone.patch_embed.{int(m[1]) - 1}.bn.{m[2]}'),
    (r'patch_embed_layers\.(\d)\.proj\.conv1\.weight', r'backbone.stages.\1.downsample.dw.weight'),
    (r'patch_embed_layers\.(\d)\.proj\.pointwise_conv\.weight',
     r'backbone.stages.\1.downsample.pw.weight'),
    (r'patch_embed_layers\.(\d)\.norm\.' + BN, r'backbone.stages.\1.downsample.bn.\2'),
    (BLOCK + r'(cpe\.proj|norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)', OURS + r'\3.\4'),
    (BLOCK + r'att\.(qkv|proj)\.(weight|bias)', OURS + r'attn.\3.\4'),
    (BLOCK + r'att\.aggregator\.agg([123])\.conv1\.weight',
     lambda m: f'backbone.stages.{m[1]}.blocks.{m[2]}.attn.aggregator.local_dw.{int(m[3]) - 1}.weight'),
    (BLOCK + r'att\.aggregator\.agg([123])\.pointwise_conv\.weight',
     lambda m: f'backbone.stages.{m[1]}.blocks.{m[2]}.attn.aggregator.local_pw.{int(m[3]) - 1}.weight'),
    # the four segment BNs, merged below
    (BLOCK + r'att\.aggregator\.norm([0-3])\.' + BN, OURS + r'attn.aggregator.norm.\3.\4'),
    (BLOCK + r'att\.aggregator\.agg0\.conv\.conv1\.weight', OURS + r'attn.aggregator.branch_dw.weight'),
    (BLOCK + r'att\.aggregator\.agg0\.conv\.pointwise_conv\.weight',
     OURS + r'attn.aggregator.branch_pw.weight'),
    (BLOCK + r'att\.aggregator\.agg0\.norm\.(weight|bias)', OURS + r'attn.aggregator.branch_norm.\3'),
    (BLOCK + r'att\.crpe\.conv_list\.([012])\.(weight|bias)', OURS + r'attn.crpe.convs.\3.\4'),
    (r'norm4\.' + BN, r'neck.norm.\1'),
    (r'head\.(weight|bias)', r'head.fc.\1'),
]


def merge_segment_norms(state_dict):
    """``...aggregator.norm.{i}.X`` (i = 0..3, s channels) -> ``...aggregator.norm.X`` (4s)."""
    out, parts = OrderedDict(), OrderedDict()
    for key, value in state_dict.items():
        m = re.fullmatch(r'(.*aggregator\.norm)\.([0-3])\.(\w+)', key)
        if m:
            parts.setdefault(f'{m[1]}.{m[3]}', {})[int(m[2])] = value
        else:
            out[key] = value
    for key, segs in parts.items():
        if sorted(segs) != [0, 1, 2, 3]:
            raise KeyError(f'{key}: the official norm0..norm3 are not all present ({sorted(segs)}).')
        if key.endswith('num_batches_tracked'):
            out[key] = segs[0].clone()  # one counter; the official four count the same steps
        else:
            out[key] = torch.cat([segs[i] for i in range(4)])
    return out


def convert(state_dict):
    """Official state_dict -> our keys (``backbone.*`` and, for classifiers, neck/head)."""
    return merge_segment_norms(rename_keys(state_dict, RULES))  # re.sub takes callables


def infer_arch(state_dict):
    dims = [state_dict[f'patch_embed_layers.{i}.norm.weight'].shape[0] for i in range(4)]
    depths = [1 + max(int(m[1]) for k in state_dict
                      for m in [re.match(rf'groupmixformer_backbone\.{i}\.gma_stage\.(\d+)\.', k)]
                      if m) for i in range(4)]
    for name in 'mtsbl':
        arch = GroupMixFormer.arch_settings[name]
        if arch['embed_dims'] == dims and arch['depths'] == depths:
            return name
    raise ValueError(f'No official GroupMixFormer variant has embed_dims {dims} and depths '
                     f'{depths}; pass --arch.')


def build_classifier(arch, num_classes):
    """The mmpretrain classifier of the official classification checkpoints, in eval mode."""
    dims = GroupMixFormer.resolve_arch(arch)['embed_dims'][-1]
    return build_from_config(Config(dict(default_scope='mmpretrain', model=dict(
        type='ImageClassifier',
        backbone=dict(type='mmvit_ext.GroupMixFormer', arch=arch, out_indices=(3, )),
        neck=dict(type='mmvit_ext.NormPoolNeck', in_channels=dims, norm_cfg=dict(type='BN')),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=dims)))))


def convert_file(src, dst, arch=None, entry='auto', trust=False):
    """Convert the official checkpoint ``src`` into the mmengine checkpoint ``dst``, checked
    against the model of ``arch`` (inferred when None); ``trust`` as in
    :func:`mmvit_ext.converters.official.load_official_state_dict`. Returns a one-line summary."""
    official = load_official_state_dict(src, entry, trust=trust)
    arch = arch or infer_arch(official)
    converted = convert(official)
    if 'head.fc.weight' in converted:
        model = build_classifier(arch, converted['head.fc.weight'].shape[0])
        check_state_dict(converted, model)
    else:
        check_state_dict(OrderedDict((k[len('backbone.'):], v) for k, v in converted.items()),
                         GroupMixFormer(arch))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(converted, dst, meta=dict(source=str(src), arch=arch, entry=entry,
                                              converter='groupmixformer_to_mmvit'))
    return (f'GroupMixFormer-{arch.upper()}: {len(official)} official keys -> {len(converted)} '
            f'keys, saved to {dst}')
