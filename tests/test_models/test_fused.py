"""mmvit_ext.fuse_for_cpu_inference: fused copies against the oracles (with the fused kernels
spied on), weight swaps through ``p.data.copy_()`` (what EMAHook does), refusals."""
import copy
import itertools

import pytest
import torch

from mmvit_ext.models import fuse_for_cpu_inference
from mmvit_ext.models import fused as fused_pkg
from mmvit_ext.models.backbones.groupmixformer import FAMILY as GMF_FAMILY
from mmvit_ext.models.backbones.groupmixformer import GroupMixBlock, GroupMixFormer
from mmvit_ext.models.backbones.rmt import FAMILY as RMT_FAMILY
from mmvit_ext.models.backbones.rmt import RMT, RMTBlock
from mmvit_ext.models.fused import kernels
from mmvit_ext.oracles import oracle_for, randomize_

GMF_TINY = GMF_FAMILY.tiny_arch
RMT_TINY = RMT_FAMILY.tiny_arch


def rmt(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = RMT(RMT_TINY, out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN', eps=1e-5),
                **kwargs)
    return randomize_(model, seed).eval()


def groupmixformer(seed=0, **kwargs):
    torch.manual_seed(seed)
    return randomize_(GroupMixFormer(GMF_TINY, out_indices=(0, 1, 2, 3), **kwargs), seed).eval()


FAMILIES = {'rmt': (rmt, RMTBlock), 'groupmixformer': (groupmixformer, GroupMixBlock)}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count the calls of each fused oneDNN kernel (they still run)."""
    calls = {}
    for name in ('linear', 'linear_add', 'conv', 'conv_add'):
        real = getattr(kernels, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(kernels, name, spy)
    return calls


def assert_outputs_close(outs, refs):
    assert len(outs) == len(refs) == 4
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


def test_this_build_has_every_kernel():
    assert fused_pkg.missing_kernels() == ()


@pytest.mark.parametrize('family', FAMILIES)
def test_fused_model_matches_oracle_through_fused_kernels(family, kernel_calls):
    build, block_type = FAMILIES[family]
    model = build()
    oracle = oracle_for(model)
    num_blocks = sum(model.depths)
    x = torch.randn(2, 3, 45, 71)
    with torch.no_grad():
        model(x)
        assert not kernel_calls  # the plain modules never use the fused kernels
        fuse_for_cpu_inference(model)
        assert not any(isinstance(m, block_type) for m in model.modules())
        outs = model(x)
    assert_outputs_close(outs, oracle(x))
    # every block ran its fused GEMMs with fused residual adds (two per block at least)
    assert kernel_calls['linear'] >= num_blocks and kernel_calls['linear_add'] >= 2 * num_blocks
    assert kernel_calls['conv_add'] >= num_blocks  # the position-encoding conv + residual


def test_fused_groupmixformer_without_qkv_bias(kernel_calls):
    model = groupmixformer(qkv_bias=False)
    x = torch.randn(1, 3, 36, 44)
    with torch.no_grad():
        expected = model(x)
        fuse_for_cpu_inference(model)
        assert_outputs_close(model(x), expected)
    assert kernel_calls['linear'] > 0


def tensors(model):
    """What EMAHook swaps with ``update_buffers=True``: parameters, then buffers."""
    return itertools.chain(model.parameters(), model.buffers())


@pytest.mark.parametrize('family', FAMILIES)
def test_weights_swapped_in_place_are_followed(family):
    """EMAHook swaps weights with ``p.data.copy_()``, which bumps no tensor version."""
    build, _ = FAMILIES[family]
    x = torch.randn(1, 3, 40, 48)
    model, other = build(seed=0), build(seed=1)
    with torch.no_grad():
        model(x)
        for p, q in zip(tensors(model), tensors(other)):
            p.data.copy_(q.data)
        assert_outputs_close(model(x), oracle_for(other)(x))
        # the same on fused models: the fused copies read their own tensors directly
        fused_a = fuse_for_cpu_inference(build(seed=0))
        fused_b = fuse_for_cpu_inference(copy.deepcopy(other))
        fused_a(x)
        for p, q in zip(tensors(fused_a), tensors(fused_b)):
            p.data.copy_(q.data)
        assert_outputs_close(fused_a(x), oracle_for(other)(x))


def test_fuse_refuses_training_mode_and_other_devices_or_dtypes():
    with pytest.raises(RuntimeError, match=r'model.eval\(\)'):
        fuse_for_cpu_inference(rmt().train())
    with pytest.raises(RuntimeError, match='fp32 CPU'):
        fuse_for_cpu_inference(rmt().double())
    with torch.device('meta'):
        on_meta = RMT(RMT_TINY).eval()
    with pytest.raises(RuntimeError, match='meta'):
        fuse_for_cpu_inference(on_meta)
    fused = fuse_for_cpu_inference(rmt())
    with pytest.raises(RuntimeError, match='cannot train'):
        fused.train()


def test_fuse_leaves_the_model_alone_without_the_kernels(monkeypatch):
    monkeypatch.setattr(fused_pkg, 'missing_kernels', lambda: ('linear+gelu', ))
    model = rmt()
    with pytest.warns(UserWarning, match='linear\\+gelu'):
        assert fuse_for_cpu_inference(model) is model
    assert any(isinstance(m, RMTBlock) for m in model.modules())


def test_fuse_whole_classifier_keeps_its_interface():
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    classifier = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='mmvit_ext.RMT', arch=RMT_TINY),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=48))).eval()
    randomize_(classifier)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = classifier(x, mode='tensor')
        fuse_for_cpu_inference(classifier)
        torch.testing.assert_close(classifier(x, mode='tensor'), expected, rtol=0, atol=2e-5)
