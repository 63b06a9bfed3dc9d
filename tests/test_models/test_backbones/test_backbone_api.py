"""The OpenMMLab backbone API every family shares (``BaseBackbone``), once for all families:
``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``, ``get_layer_depth`` and a
strict ``init_cfg=dict(type='Pretrained')``. Each family's own file tests what is its own."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmvit_ext.checkpoint import CheckpointMismatchError
from mmvit_ext.models.families import families
from mmvit_ext.oracles import randomize_

FAMILIES = families()


def build(family, **kwargs):
    return family.backbone(dict(family.tiny_arch), **kwargs)


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request):
    torch.manual_seed(0)
    return request.param


def test_out_indices_give_nchw_maps_at_strides_4_to_32(family):
    dims = family.tiny_arch['embed_dims']
    with torch.no_grad():
        outs = build(family, out_indices=(0, 1, 2, 3)).eval()(torch.randn(1, 3, 64, 96))
        assert [tuple(o.shape) for o in outs] == [(1, dims[0], 16, 24), (1, dims[1], 8, 12),
                                                  (1, dims[2], 4, 6), (1, dims[3], 2, 3)]
        # a negative index counts from the last stage; odd sizes round up at every stride
        outs = build(family, out_indices=(1, -1)).eval()(torch.randn(1, 3, 33, 50))
    assert [tuple(o.shape) for o in outs] == [(1, dims[1], 5, 7), (1, dims[3], 2, 2)]


def test_every_block_takes_a_contiguous_channels_last_map(family):
    # a permuted NCHW map in the residual stream makes each block's norms and linears copy it
    # and sends the depth-wise convs' backward to their slow NCHW path
    model = build(family).train()
    inputs = []
    for stage in model.stages:
        for block in stage.blocks:
            block.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    model(torch.randn(1, 3, 64, 96))
    assert len(inputs) == sum(family.tiny_arch['depths'])
    assert all(x.is_contiguous() for x in inputs)


def test_frozen_stages_freeze_the_stem_and_the_first_stages(family):
    model = build(family, frozen_stages=1, out_indices=(0, 1, 2, 3)).train()
    for module in (model.patch_embed, model.stages[0]):
        assert not any(m.training for m in module.modules())
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert model.stages[1].training
    if getattr(model, 'out_norms', None) is not None:  # a frozen stage's output norm too
        assert not any(p.requires_grad for p in model.out_norms[0].parameters())
        assert all(p.requires_grad for p in model.out_norms[1].parameters())
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith('stages.0.')
              or k.startswith('patch_embed')}
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in frozen.items())  # incl. BN statistics
    assert all(p.grad is None for p in model.stages[0].parameters())


def test_norm_eval_keeps_batchnorm_statistics(family):
    bns = [m for m in build(family).modules() if isinstance(m, _BatchNorm)]
    if not bns:
        pytest.skip(f'{family.backbone.__name__} has no BatchNorm')
    x = torch.randn(2, 3, 32, 32)
    model = build(family, norm_eval=True).train()
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert all(m.training for m in model.modules() if not isinstance(m, _BatchNorm))
    before = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    model(x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model = build(family, norm_eval=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if 'running_mean' in k}
    model(x)
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_with_cp_checkpoints_every_block_with_the_same_outputs_and_grads(family,
                                                                         checkpoint_calls):
    plain = randomize_(build(family, out_indices=(0, 3))).train()
    ckpt = build(family, out_indices=(0, 3), with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 40)
    torch.manual_seed(1)
    out_plain = plain(x)
    assert not checkpoint_calls
    torch.manual_seed(1)
    out_ckpt = ckpt(x)
    assert len(checkpoint_calls) == sum(family.tiny_arch['depths'])
    for a, b in zip(out_plain, out_ckpt):
        torch.testing.assert_close(a, b)
    for out in (out_plain, out_ckpt):
        sum(o.square().sum() for o in out).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_get_layer_depth_numbers_the_blocks_in_network_order(family):
    model = build(family)
    depths = family.tiny_arch['depths']
    num_layers = sum(depths) + 2
    assert model.get_layer_depth('backbone.patch_embed.x', 'backbone.') == (0, num_layers)
    ids = [model.get_layer_depth(f'backbone.{name}', 'backbone.')[0]
           for name, _ in model.named_parameters() if '.blocks.' in name]
    assert sorted(set(ids)) == list(range(1, sum(depths) + 1))
    # a stage's downsample (what is not a block) takes the id of the stage's first block
    for stage in range(4):
        first_block = sum(depths[:stage]) + 1
        assert model.get_layer_depth(f'backbone.stages.{stage}.blocks.0.x',
                                     'backbone.')[0] == first_block
        assert model.get_layer_depth(f'backbone.stages.{stage}.downsample.x',
                                     'backbone.')[0] == first_block
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (num_layers - 1, num_layers)


def test_pretrained_init_cfg_loads_strictly(family, tmp_path):
    source = randomize_(build(family))
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    model = build(family, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        prefix='backbone.'))
    model.init_weights()
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    wider = dict(family.tiny_arch, embed_dims=[2 * d for d in family.tiny_arch['embed_dims']])
    other = family.backbone(wider, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                 prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError):
        other.init_weights()
