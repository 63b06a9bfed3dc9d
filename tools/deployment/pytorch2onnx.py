"""Export a model of a config to ONNX and check the file in onnxruntime.

Usage::

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --shape H W [--dynamic]
        [--out FILE] [--part auto|classifier|backbone+neck|backbone] [--atol 1e-4]
        [--cfg-options KEY=VALUE ...]

Exports an mmpretrain classifier (image -> class scores), or the backbone + neck of an mmdet /
mmseg config (image -> the neck's maps), through ``torch.onnx.export``; the input is the
preprocessed image. ``--dynamic``: H and W are dynamic, valid for multiples of the backbone's
size divisor (printed; 32, Pale: 32 x its pale size). The file is then run in onnxruntime
against PyTorch at the export size and, for a dynamic export, at a second valid size; the tool
prints the max abs difference at each and exits with status 1 when one exceeds ``--atol``.
Plain modules are exported (the fused CPU copies are not exportable).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmvit_ext.deployment import (SizeConstraintError, build_deployable, export_onnx,  # noqa
                                  other_size, verify_onnx)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'))
    parser.add_argument('--dynamic', action='store_true', help='dynamic H and W')
    parser.add_argument('--out', help='the ONNX file (default: the config name + .onnx)')
    parser.add_argument('--part', default='auto',
                        choices=['auto', 'classifier', 'backbone+neck', 'backbone'])
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest max abs difference onnxruntime vs PyTorch accepted')
    parser.add_argument('--opset', type=int, default=None)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the config\'s model, e.g. backbone.arch=t')
    return parser.parse_args()


def main():
    args = parse_args()
    out = args.out or osp.splitext(osp.basename(args.config))[0] + '.onnx'
    module, divisor = build_deployable(args.config, args.checkpoint, args.part,
                                       args.cfg_options)
    print(f'Exporting {module.part} of {args.config} (plain modules; the fused CPU copies are '
          f'not exportable) at {args.shape[0]}x{args.shape[1]}.')
    if args.dynamic:
        print(f'Dynamic H and W: valid for H a multiple of {divisor[0]} and W a multiple of '
              f'{divisor[1]}.')
    try:
        export_onnx(module, args.shape, out, divisor if args.dynamic else None, args.opset)
    except SizeConstraintError as err:
        raise SystemExit(f'--shape {err}')
    sizes = [tuple(args.shape)] + ([other_size(args.shape, divisor)] if args.dynamic else [])
    failed = False
    for size, diff, error in verify_onnx(module, out, sizes):
        status = 'ok' if diff <= args.atol else 'MISMATCH'
        failed |= diff > args.atol
        print(f'onnxruntime vs PyTorch at {size[0]}x{size[1]}: max abs diff {diff:.3g} '
              f'({status}, atol {args.atol:g})' + (f': {error}' if error else ''))
    if failed:
        print(f'{out} does not reproduce the model: do not use it.', file=sys.stderr)
        sys.exit(1)
    print(f'Wrote {out}')


if __name__ == '__main__':
    main()
