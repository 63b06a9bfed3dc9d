"""LayerDecayOptimWrapperConstructor built from configs under the three default scopes."""
import importlib

import pytest
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from mmvit_ext.models.backbones.base import BaseBackbone
from mmvit_ext.registry import MODELS

BASE_LR, BASE_WD, DECAY = 1e-3, 0.05, 0.9
DEPTHS = (1, 2)
NUM_LAYERS = sum(DEPTHS) + 2  # stem, 3 blocks, rest


class _Stage(nn.Module):

    def __init__(self, cin, cout, depth):
        super().__init__()
        self.downsample = nn.Conv2d(cin, cout, 2, 2) if cin != cout else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, cout), nn.Conv2d(cout, cout, 3, padding=1))
            for _ in range(depth))


class LayerDecayTestBackbone(BaseBackbone):
    """Smallest backbone with the BaseBackbone layout: stem, 2 stages (1 + 2 blocks)."""
    arch_settings = {'t': dict(embed_dims=(4, 8), depths=DEPTHS)}

    def __init__(self, arch='t', **kwargs):
        super().__init__(arch, **kwargs)
        dims = self.arch['embed_dims']
        self.patch_embed = nn.Conv2d(3, dims[0], 4, 4)
        self.stages = nn.ModuleList(
            _Stage(dims[max(i - 1, 0)], dims[i], depth) for i, depth in enumerate(self.depths))
        self._freeze_stages()

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x = stage.downsample(x)
            for block in stage.blocks:
                x = x + self.run_block(block, x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


@pytest.fixture(scope='module', autouse=True)
def registered_backbone():
    MODELS.register_module(name='LayerDecayTestBackbone', module=LayerDecayTestBackbone,
                           force=True)
    yield
    MODELS.module_dict.pop('LayerDecayTestBackbone')


BACKBONE = dict(type='mmvit_ext.LayerDecayTestBackbone', out_indices=(0, 1))
MODEL_CFGS = {
    'mmpretrain': dict(
        type='ImageClassifier', backbone=dict(BACKBONE, out_indices=(1, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=8)),
    'mmdet': dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor'),
        backbone=BACKBONE,
        neck=dict(type='FPN', in_channels=[4, 8], out_channels=8, num_outs=2),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=8, stacked_convs=1,
            feat_channels=8,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=1, ratios=[1.0], strides=[4, 8]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True),
            loss_bbox=dict(type='L1Loss'))),
    'mmseg': dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=BACKBONE,
        decode_head=dict(type='FCNHead', in_channels=8, in_index=1, channels=8, num_convs=1,
                         num_classes=4, loss_decode=dict(type='CrossEntropyLoss'))),
}
HEAD_PARAM = {
    'mmpretrain': 'head.fc.weight',
    'mmdet': 'bbox_head.retina_cls.weight',
    'mmseg': 'decode_head.conv_seg.weight',
}


def build_model(scope):
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS.build(MODEL_CFGS[scope])


def groups_by_name(model, optim_wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g['params'][0])]: g for g in optim_wrapper.optimizer.param_groups}


def optim_cfg(**paramwise):
    return dict(optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
                constructor='mmvit_ext.LayerDecayOptimWrapperConstructor',
                paramwise_cfg=dict(layer_decay_rate=DECAY, **paramwise))


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_layer_decay_lrs_in_each_scope(scope):
    model = build_model(scope)
    head = HEAD_PARAM[scope]
    groups = groups_by_name(model, build_optim_wrapper(model, optim_cfg(
        norm_decay_mult=0.0, custom_keys={head: dict(lr_mult=10.0)})))

    assert len(groups) == len(list(model.parameters()))
    stem = groups['backbone.patch_embed.weight']
    assert stem['lr'] == pytest.approx(BASE_LR * DECAY**(NUM_LAYERS - 1))
    assert stem['layer_id'] == 0
    # Stage 1's downsample shares the layer of the stage's first block (block 2 overall).
    assert groups['backbone.stages.1.downsample.weight']['lr'] == pytest.approx(
        BASE_LR * DECAY**(NUM_LAYERS - 1 - 2))
    last_block = groups['backbone.stages.1.blocks.1.1.weight']
    assert last_block['lr'] == pytest.approx(BASE_LR * DECAY)
    # The usual paramwise_cfg still applies: norm decay mult and custom_keys lr_mult.
    norm = groups['backbone.stages.1.blocks.1.0.weight']
    assert norm['weight_decay'] == 0.0 and last_block['weight_decay'] == BASE_WD
    assert groups[head]['lr'] == pytest.approx(BASE_LR * 10.0)
    assert groups[head]['lr_scale'] == 1.0


def test_decay_rate_one_keeps_base_lr():
    model = build_model('mmpretrain')
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1), paramwise_cfg=dict(layer_decay_rate=1.0),
        constructor='mmvit_ext.LayerDecayOptimWrapperConstructor'))
    assert {g['lr'] for g in wrapper.optimizer.param_groups} == {0.1}


def test_bare_backbone_uses_its_own_layer_depth():
    backbone = LayerDecayTestBackbone(out_indices=(1, ))
    groups = groups_by_name(backbone, build_optim_wrapper(backbone, optim_cfg()))
    assert groups['patch_embed.weight']['lr'] == pytest.approx(BASE_LR * DECAY**4)
    assert groups['stages.0.blocks.0.1.weight']['lr'] == pytest.approx(BASE_LR * DECAY**3)


def test_backbone_without_layer_depth_is_a_clear_error():
    importlib.import_module('mmpretrain.utils').register_all_modules(init_default_scope=False)
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    model = PRETRAIN_MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='LeNet5'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=84)))
    with pytest.raises(NotImplementedError, match='LeNet5 does not implement'):
        build_optim_wrapper(model, optim_cfg())
