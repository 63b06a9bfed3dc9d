"""Parameters and FLOPs of the model of an mmpretrain / mmdet / mmseg config.

Usage::

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]] [--backbone-only]
        [--per-stage] [--cfg-options KEY=VALUE ...]

``--per-stage`` adds a table of the backbone: parameters and FLOPs of the stem, of each
stage's downsampling and other members, and of its blocks grouped by block type.

Counting: ``mmvit_ext.analysis.count_flops``, mmengine's ``FlopAnalyzer`` (fvcore convention:
one multiply-add is one FLOP; element-wise ops, softmax and activations are not counted) with
handles for the ops our backbones use that mmengine misses or miscounts (SDPA, einsum, matmul
with broadcast batch dims, baddbmm).

Inputs, per ``default_scope``:

* ``mmpretrain``: the whole classifier (``--backbone-only``: the backbone) on ``(1, 3, H, W)``,
  default 224x224;
* ``mmdet`` / ``mmseg``: as their own get_flops tools, one synthetic image is passed through the
  data preprocessor and the model's tensor-mode ``_forward`` is counted (mmseg drops the
  auxiliary head, unused at inference); defaults ``--shape 1280 800`` (mmdet) and ``512 512``
  (mmseg). Backbone-only figures on the same preprocessed input are printed as well. Two-stage
  detectors' RoI heads run on the proposals of the randomly initialised model (mmdet's tensor
  mode caps the mask head at 100 RoIs), so their share varies a little with the seed, as with
  mmdet's own tool; RoIAlign and NMS are not counted.

No checkpoint is needed: ``init_cfg`` of the backbone and any ``pretrained`` are cleared, and
SyncBN is reverted to BN.
"""
import argparse
import os.path as osp
import sys
from functools import partial

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmvit_ext.analysis.flops import count_flops, count_params, flop_analyzer  # noqa: E402
from mmvit_ext.utils.cli import backbone_of  # noqa: E402
from mmvit_ext.utils.config import build_from_config, load_config, \
    register_modules  # noqa: E402
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (1280, 800), 'mmseg': (512, 512)}


def per_stage_rows(backbone, inputs):
    """``[(module, kind, params, flops)]`` over the backbone layout of this package
    (``patch_embed``, ``stages[i]`` with ``blocks`` and optional members, ``out_norms``);
    the blocks of a stage are summed per block type, shown as ``Type x count``."""
    by_module = flop_analyzer(backbone, inputs).by_module()
    rows = []

    def add(name, kind, names):
        params = sum(count_params(backbone.get_submodule(n)) for n in names)
        rows.append((name, kind, params, sum(by_module.get(n, 0) for n in names)))

    for name, child in backbone.named_children():
        if name != 'stages':
            add(name, type(child).__name__, [name])
            continue
        for i, stage in enumerate(child):
            for member, module in stage.named_children():
                prefix = f'stages.{i}.{member}'
                if member != 'blocks':
                    add(prefix, type(module).__name__, [prefix])
                    continue
                kinds = {}
                for j, block in enumerate(module):
                    kinds.setdefault(type(block).__name__, []).append(f'{prefix}.{j}')
                for kind, names in kinds.items():
                    add(prefix, f'{kind} x{len(names)}', names)
    add('total', type(backbone).__name__, [''])
    return rows


def format_stage_table(rows):
    widths = [max(len(str(r[k])) for r in rows + [('module', 'type')]) for k in (0, 1)]
    lines = ['== backbone per stage ==',
             f'{"module":<{widths[0]}}  {"type":<{widths[1]}}  {"params (M)":>10}  '
             f'{"FLOPs (G)":>9}']
    for name, kind, params, flops in rows:
        lines.append(f'{name:<{widths[0]}}  {kind:<{widths[1]}}  {params / 1e6:>10.3f}  '
                     f'{flops / 1e9:>9.3f}')
    return '\n'.join(lines)


def dense_inputs(model, scope, shape):
    """Preprocess one synthetic ``(3, H, W)`` image as mmdet/mmseg's get_flops tools do;
    return ``(inputs, data_samples)``."""
    height, width = shape
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=meta)
    else:
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=meta)
    batch = dict(inputs=[torch.rand(3, height, width) * 255], data_samples=[sample])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    return data['inputs'], data['data_samples']


def _measure(name, module, inputs):
    flops, by_op, unsupported = count_flops(module, inputs)
    return dict(name=name, params=count_params(module), flops=flops, by_op=by_op,
                unsupported=unsupported)


def analyse(cfg, shape=None, backbone_only=False, per_stage=False):
    """Return ``(input_shape, [result, ...], stage rows or None)``: one result per counted
    module."""
    scope = cfg.default_scope
    shape = tuple(shape or DEFAULT_SHAPES[scope])
    torch.manual_seed(0)
    register_modules(scope, init_default_scope=True)
    model = build_from_config(cfg, inference_only=True)
    results = []
    if scope == 'mmpretrain':
        inputs = (torch.randn(1, 3, *shape), )
        if not backbone_only:
            results.append(_measure('model', model, inputs))
        results.append(_measure('backbone', backbone_of(model), inputs))
        stages = per_stage_rows(backbone_of(model), inputs) if per_stage else None
        return inputs[0].shape, results, stages
    inputs, data_samples = dense_inputs(model, scope, shape)
    if not backbone_only:
        # The tensor-mode forward (`_forward`) of the detector / segmentor.
        model.forward = partial(model.forward, data_samples=data_samples, mode='tensor')
        name = 'model (without auxiliary head)' if scope == 'mmseg' else 'model'
        results.append(_measure(name, model, (inputs, )))
    results.append(_measure('backbone', backbone_of(model), (inputs, )))
    stages = per_stage_rows(backbone_of(model), (inputs, )) if per_stage else None
    return inputs.shape, results, stages


def format_results(config, input_shape, results):
    lines = [f'Config: {config}', f'Input shape: {tuple(input_shape)}']
    for res in results:
        lines += [
            f'== {res["name"]} ==',
            f'Params: {res["params"] / 1e6:.2f} M',
            f'Params (exact): {res["params"]:,}',
            f'FLOPs: {res["flops"] / 1e9:.2f} G',
            f'FLOPs (exact): {res["flops"]:,}',
            'FLOPs by operator: ' + ', '.join(
                f'{op} {n / 1e6:,.2f} M' for op, n in res['by_op'].most_common()),
        ]
        if res['unsupported']:
            lines.append('Not counted (element-wise or unsupported ops): ' + ', '.join(
                f'{op} x{n}' for op, n in sorted(res['unsupported'].items())))
    lines.append('FLOPs: 1 multiply-add = 1 FLOP (fvcore / mmengine convention).')
    return '\n'.join(lines)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Params and FLOPs of a config\'s model.')
    parser.add_argument('config', help='config file (mmpretrain, mmdet or mmseg)')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W]; default 224 (cls), 1280 800 (det), 512 512 (seg)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='count only the backbone')
    parser.add_argument('--per-stage', action='store_true',
                        help='also a table of the backbone per stage and block type')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2):
            parser.error('--shape takes H or H W')
        args.shape = tuple(args.shape) * (3 - len(args.shape))
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    input_shape, results, stages = analyse(cfg, args.shape, args.backbone_only, args.per_stage)
    print(format_results(args.config, input_shape, results))
    if stages:
        print(format_stage_table(stages))


if __name__ == '__main__':
    main()
