"""Evaluate a checkpoint with a config of mmpretrain / mmdet / mmsegmentation.

    python tools/test.py CONFIG CHECKPOINT [--out FILE_OR_DIR] [--show-dir DIR] [--tta]
        [--show] [--wait-time S] [--interval N] [--score-thr T] [--non-strict] [--amp]
        [--fuse auto|on|off]
    torchrun --nproc_per_node=N tools/test.py CONFIG CHECKPOINT --launcher pytorch

``--amp`` evaluates under mixed precision as mmpretrain's test.py does (``test_cfg.fp16``:
mmengine's test loop runs each test step under ``mmengine.runner.amp.autocast``), float16 on a
GPU and bfloat16 on a machine without GPU.

``--fuse`` evaluates through ``mmvit_ext.fuse_for_cpu_inference`` (models with fusable blocks,
i.e. RMT and GroupMixFormer). ``auto`` (the default) fuses on a machine without GPU in fp32; with
``--amp`` it keeps the plain modules, since the fused kernels compute in fp32 only, so
``--amp --fuse on`` is refused.

``--out``: classification and detection dump the raw predictions to a pickle file; segmentation
writes the predicted label maps as PNGs into that directory (the upstream tools' meanings).
CHECKPOINT is loaded safely and strictly: a file that does not fit the model, is damaged or
wants to run code stops the tool with one message (``--non-strict`` loads only what fits).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit_ext.checkpoint import checkpoint_errors_exit, install_safe_loading  # noqa: E402
from mmvit_ext.utils.cli import TOOLBOXES, add_checkpoint_args, add_common_args, \
    annotation_json_errors_named, apply_checkpoint_args, build_runner, check_data, load_config, \
    setup_distributed, use_fused_inference  # noqa: E402
from mmvit_ext.utils.show import add_show_args, apply_show_args, apply_tta  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)  # adds the positional CONFIG first
    parser.add_argument('checkpoint', help='checkpoint file or URL')
    parser.add_argument('--out', help='where to dump the predictions (see above)')
    add_show_args(parser)
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision test (bfloat16 autocast on the CPU, float16 on a '
                             'GPU)')
    parser.add_argument('--fuse', choices=['auto', 'on', 'off'], default='auto',
                        help='fused CPU inference kernels, fp32 only (auto: on without a GPU '
                             'and without --amp)')
    add_checkpoint_args(parser, training=False)
    return parser.parse_args(argv)


def apply_test_args(cfg, args):
    scope = cfg.default_scope
    cfg.load_from = args.checkpoint
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):  # or a URL
        raise SystemExit(f'Checkpoint not found: {args.checkpoint}')
    if args.out:
        dump = TOOLBOXES[scope]['dump_metric']
        if dump:
            evaluators = cfg.test_evaluator
            evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) \
                else [evaluators]
            cfg.test_evaluator = evaluators + [dict(type=dump, out_file_path=args.out)]
        else:
            cfg.test_evaluator.update(output_dir=args.out, keep_results=True)
    apply_show_args(cfg, args)
    if args.tta:
        apply_tta(cfg, args.config)
    if args.amp:
        cfg.test_cfg.fp16 = True
    apply_fuse_arg(cfg, args.fuse, args.amp)


def apply_fuse_arg(cfg, fuse, amp):
    """Evaluate through the fused CPU kernels where :func:`use_fused_inference` says so."""
    import torch
    if not use_fused_inference(fuse, 'cuda' if torch.cuda.is_available() else 'cpu', amp):
        return
    # A test checkpoint's state_dict already holds the EMA weights (EMAHook swaps them in at
    # saving), so the hook's swap changes nothing here; on a fused model it would mismatch.
    hooks = [h for h in cfg.get('custom_hooks', []) if 'EMAHook' not in str(h.get('type'))]
    cfg.custom_hooks = hooks + [dict(type='mmvit_ext.FuseForCPUInferenceHook')]


def main(argv=None):
    install_safe_loading()
    args = parse_args(argv)
    cfg = load_config(args)
    apply_test_args(cfg, args)
    apply_checkpoint_args(cfg, args, training=False)
    check_data(cfg, ['test_dataloader'])
    setup_distributed(cfg)
    with checkpoint_errors_exit(), annotation_json_errors_named(cfg):
        metrics = build_runner(cfg).test()
    print('\n'.join(['Test metrics:'] + [f'  {k}: {v}' for k, v in metrics.items()]))


if __name__ == '__main__':
    main()
