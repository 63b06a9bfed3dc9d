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
from mmvit_ext.converters.official import KeyMap, load_official_state_dict, save_checkpoint
from mmvit_ext.models.backbones.groupmixformer import GroupMixFormer
from mmvit_ext.utils.config import build_from_config

FIELDS = dict(stem=r'[01]', stage=r'\d', block=r'\d+', proxy=r'[012]', segment=r'[0-3]',
              window=r'[012]', wb='weight|bias',
              bn='weight|bias|running_mean|running_var|num_batches_tracked',
              layer=r'cpe\.proj|norm1|norm2|mlp\.fc1|mlp\.fc2', linear='qkv|proj')
# official GMABlock keys <-> our block keys
BLOCK_RULES = [
    ('{layer}.{wb}', '{layer}.{wb}'),
    ('att.{linear}.{wb}', 'attn.{linear}.{wb}'),
    ('att.aggregator.agg{proxy+1}.conv1.weight', 'attn.aggregator.local_dw.{proxy}.weight'),
    ('att.aggregator.agg{proxy+1}.pointwise_conv.weight',
     'attn.aggregator.local_pw.{proxy}.weight'),
    # the four segment BNs: merged into our one BN after renaming (split before, in reverse)
    ('att.aggregator.norm{segment}.{bn}', 'attn.aggregator.norm.{segment}.{bn}'),
    ('att.aggregator.agg0.conv.conv1.weight', 'attn.aggregator.branch_dw.weight'),
    ('att.aggregator.agg0.conv.pointwise_conv.weight', 'attn.aggregator.branch_pw.weight'),
    ('att.aggregator.agg0.norm.{wb}', 'attn.aggregator.branch_norm.{wb}'),
    ('att.crpe.conv_list.{window}.{wb}', 'attn.crpe.convs.{window}.{wb}'),
]
BLOCK_KEYS = KeyMap(BLOCK_RULES, FIELDS)
KEYS = KeyMap([
    ('conv_stem.proj{stem+1}.{wb}', 'backbone.patch_embed.{stem}.conv.{wb}'),
    ('conv_stem.norm{stem+1}.{bn}', 'backbone.patch_embed.{stem}.bn.{bn}'),
    ('patch_embed_layers.{stage}.proj.conv1.weight',
     'backbone.stages.{stage}.downsample.dw.weight'),
    ('patch_embed_layers.{stage}.proj.pointwise_conv.weight',
     'backbone.stages.{stage}.downsample.pw.weight'),
    ('patch_embed_layers.{stage}.norm.{bn}', 'backbone.stages.{stage}.downsample.bn.{bn}'),
] + [('groupmixformer_backbone.{stage}.gma_stage.{block}.' + official,
      'backbone.stages.{stage}.blocks.{block}.' + ours) for official, ours in BLOCK_RULES] + [
    ('norm4.{bn}', 'neck.norm.{bn}'),
    ('head.{wb}', 'head.fc.{wb}'),
], FIELDS)


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


def split_segment_norms(state_dict):
    """``...aggregator.norm.X`` (4s channels) -> ``...aggregator.norm.{i}.X`` (i = 0..3, s
    channels each): the reverse of :func:`merge_segment_norms`."""
    out = OrderedDict()
    for key, value in state_dict.items():
        m = re.fullmatch(r'(.*aggregator\.norm)\.(\w+)', key)
        if m is None:
            out[key] = value
            continue
        # the step counter is a scalar, the same for the four
        for i, part in enumerate(value.chunk(4) if value.dim() else [value] * 4):
            out[f'{m[1]}.{i}.{m[2]}'] = part.clone()
    return out


def convert(state_dict):
    """Official state_dict -> our keys (``backbone.*`` and, for classifiers, neck/head)."""
    return merge_segment_norms(KEYS.rename(state_dict))


def backbone_to_official(state_dict):
    """Our backbone's keys (no ``backbone.`` prefix) -> official keys: the reverse of
    :func:`convert`."""
    ours = OrderedDict(('backbone.' + k, v) for k, v in split_segment_norms(state_dict).items())
    return KEYS.rename(ours, reverse=True)


def block_to_official(state_dict):
    """Keys of one of our blocks (``attn.qkv.weight`` ...) -> official GMABlock keys."""
    return BLOCK_KEYS.rename(split_segment_norms(state_dict), reverse=True)


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
