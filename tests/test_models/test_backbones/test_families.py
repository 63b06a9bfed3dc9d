"""One registration per family: a toy fifth family, declared only in its own module, is picked up
by the CPU-inference fusion, the oracles, the attention recorder and timm, and is gone again
after ``unregister``."""
import contextlib
import copy
import dataclasses
import importlib
import sys

import pytest
import torch

from mmvit_ext.models.backbones.rmt import FAMILY as RMT_FAMILY
from mmvit_ext.models.families import families, family_of, register, unregister
from mmvit_ext.models.fused import can_fuse, fuse_for_cpu_inference
from mmvit_ext.oracles import oracle_for
from mmvit_ext.registry import MODELS
from mmvit_ext.visualization import record_attention

timm = pytest.importorskip('timm')
import mmvit_ext.models.timm_models as timm_models  # noqa: E402
from timm.layers import is_notrace_module  # noqa: E402

# the whole family in one module, as a backbone file declares it
TOY_MODULE = '''
import copy
import os.path as osp

import torch
import torch.nn as nn

from mmvit_ext.models.backbones.base import BackboneStage, BaseBackbone, dense_output
from mmvit_ext.models.families import AttentionRecording, Family, register
from mmvit_ext.models.fused.kernels import FusedModule
from mmvit_ext.registry import MODELS


def attention_weights(qk, tokens):
    q, k = qk(tokens).chunk(2, dim=-1)
    return (q @ k.transpose(1, 2)).softmax(dim=-1)


class ToyAttention(nn.Module):
    """One head of softmax attention over the tokens of a (B, H, W, C) map."""

    def __init__(self, dims):
        super().__init__()
        self.num_heads = 1
        self.qk = nn.Linear(dims, 2 * dims)

    def forward(self, x):
        tokens = x.flatten(1, 2)
        return (attention_weights(self.qk, tokens) @ tokens).view_as(x)


class ToyBlock(nn.Module):

    def __init__(self, dims):
        super().__init__()
        self.attn = ToyAttention(dims)

    def forward(self, x):
        return x + self.attn(x)

    def fused_copy(self):
        return FusedToyBlock(self)


class FusedToyBlock(FusedModule):

    def __init__(self, block):
        super().__init__()
        self.qk = copy.deepcopy(block.attn.qk)

    def forward(self, x):
        tokens = x.flatten(1, 2)
        return x + (attention_weights(self.qk, tokens) @ tokens).view_as(x)


@MODELS.register_module()
class ToyBackbone(BaseBackbone):
    arch_settings = dict(t=dict(embed_dims=[8], depths=[1]))

    def __init__(self, arch='t', in_channels=3, out_indices=(0, ), frozen_stages=-1,
                 norm_eval=False, with_cp=False, init_cfg=None, pretrained=None):
        super().__init__(arch, out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         pretrained)
        dims, depth = self.arch['embed_dims'][0], self.arch['depths'][0]
        self.patch_embed = nn.Conv2d(in_channels, dims, 4, 4)
        self.stages = nn.ModuleList([BackboneStage([ToyBlock(dims) for _ in range(depth)])])
        self._freeze_stages()

    def forward(self, x):
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        for block in self.stages[0].blocks:
            x = self.run_block(block, x)
        return (dense_output(x.permute(0, 3, 1, 2)), )


def oracle_model(model):
    return copy.deepcopy(model)


def toy_weights(record, query=None):
    return dict(attention=attention_weights(record.module.qk, record.inputs['x'].flatten(1, 2)))


FAMILY = register(Family(
    name='toyfam',
    backbone=ToyBackbone,
    tiny_arch=dict(embed_dims=[8], depths=[2]),
    oracle=oracle_model,
    attention=AttentionRecording(kinds={ToyAttention: 'toy'}, weights=toy_weights),
    timm_variants={'toyfam_t': osp.join(osp.dirname(__file__), 'toyfam_t_config.py')},
    timm_first_conv='backbone.patch_embed',
    notrace=(ToyAttention, ),
))
'''

TOY_CONFIG = '''
model = dict(type='ImageClassifier', backbone=dict(type='mmvit_ext.ToyBackbone', arch='t'),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=1000, in_channels=8))
'''


@contextlib.contextmanager
def toy_family(tmp_path, monkeypatch):
    """Import the toy family's module (which registers it); unregister it on exit."""
    (tmp_path / 'toyfam.py').write_text(TOY_MODULE)
    (tmp_path / 'toyfam_t_config.py').write_text(TOY_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module('toyfam')
    try:
        yield module
    finally:
        unregister(module.FAMILY)
        MODELS.module_dict.pop('ToyBackbone')
        del sys.modules['toyfam']


def test_a_fifth_family_is_picked_up_everywhere_and_removed_after(tmp_path, monkeypatch):
    from mmvit_ext.visualization.maps import draw_attention
    builtin = families()
    x = torch.randn(2, 3, 16, 12)
    with toy_family(tmp_path, monkeypatch) as toy:
        assert families() == builtin + [toy.FAMILY]
        torch.manual_seed(0)
        model = toy.ToyBackbone(toy.FAMILY.tiny_arch).eval()
        assert family_of(model) is toy.FAMILY
        with torch.no_grad():
            expected = model(x)

            oracle = oracle_for(model)
            assert oracle is not model
            torch.testing.assert_close(oracle(x), expected)

            inputs = []
            attn = model.stages[0].blocks[1].attn
            handle = attn.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
            with record_attention(model) as rec:
                model(x)
            handle.remove()
            assert [(r.stage, r.block, r.kind, r.family) for r in rec.records] == [
                (0, 0, 'toy', toy.FAMILY), (0, 1, 'toy', toy.FAMILY)]
            assert rec.get(0, 1).hw == (4, 3)
            tokens = inputs[0].flatten(1, 2)
            q, k = attn.qk(tokens).chunk(2, dim=-1)
            torch.testing.assert_close(rec.get(0, 1).weights()['attention'],
                                       (q @ k.transpose(1, 2)).softmax(dim=-1))
            with pytest.raises(ValueError, match='toyfam family declares no attention figures'):
                draw_attention(rec, 0, 0, None, (0, 0), str(tmp_path))

            assert can_fuse(model)
            fused = fuse_for_cpu_inference(copy.deepcopy(model))
            assert [type(b).__name__ for b in fused.stages[0].blocks] == ['FusedToyBlock'] * 2
            torch.testing.assert_close(fused(x), expected)

            assert timm.list_models('toyfam_*') == ['toyfam_t']
            assert 'toyfam_t' in timm_models.TIMM_VARIANTS
            assert is_notrace_module(toy.ToyAttention)
            net = timm.create_model('toyfam_t', num_classes=3).eval()
            assert isinstance(net.backbone, toy.ToyBackbone)
            assert net(x).shape == (2, 3)

    assert families() == builtin
    assert family_of(model) is None
    with pytest.raises(KeyError, match='No oracle for ToyBackbone'):
        oracle_for(model)
    with pytest.raises(TypeError, match='No attention module of a known type'):
        with record_attention(model):
            pass
    assert not timm.list_models('toyfam_*') and 'toyfam_t' not in timm_models.TIMM_VARIANTS
    assert not hasattr(timm_models, 'toyfam_t') and 'toyfam_t' not in timm_models.__all__
    assert not is_notrace_module(toy.ToyAttention)
    assert 'ToyBackbone' not in MODELS


def test_a_family_registers_once():
    with pytest.raises(ValueError, match='registered already'):
        register(dataclasses.replace(RMT_FAMILY, name='rmt_again'))
    with pytest.raises(ValueError, match='registered already'):
        register(dataclasses.replace(RMT_FAMILY, backbone=type('Other', (), {})))
