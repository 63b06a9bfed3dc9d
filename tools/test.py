"""Evaluate a checkpoint with a config of mmpretrain / mmdet / mmsegmentation.

    python tools/test.py CONFIG CHECKPOINT [--out FILE_OR_DIR] [--show-dir DIR] [--tta]
        [--non-strict]
    torchrun --nproc_per_node=N tools/test.py CONFIG CHECKPOINT --launcher pytorch

``--out``: classification and detection dump the raw predictions to a pickle file; segmentation
writes the predicted label maps as PNGs into that directory (the upstream tools' meanings).
CHECKPOINT is loaded safely and strictly: a file that does not fit the model, is damaged or
wants to run code stops the tool with one message (``--non-strict`` loads only what fits).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit_ext.utils.checkpoint import add_checkpoint_args, apply_checkpoint_args, \
    checkpoint_errors_exit  # noqa: E402
from mmvit_ext.utils.cli import TOOLBOXES, add_common_args, annotation_json_errors_named, \
    build_runner, check_data, load_config, setup_distributed  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)  # adds the positional CONFIG first
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='where to dump the predictions (see above)')
    parser.add_argument('--show-dir', help='save images with drawn predictions here')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (needs tta_model and tta_pipeline)')
    add_checkpoint_args(parser, training=False)
    return parser.parse_args(argv)


def apply_test_args(cfg, args):
    scope = cfg.default_scope
    cfg.load_from = args.checkpoint
    if not osp.isfile(args.checkpoint):
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
    if args.show_dir:
        if scope == 'mmpretrain':
            hook = cfg.default_hooks.setdefault('visualization', dict(type='VisualizationHook'))
            hook.update(enable=True, out_dir=args.show_dir)
        else:
            hook = cfg.default_hooks.get('visualization')
            if hook is None:
                raise SystemExit('--show-dir needs a `visualization` hook in default_hooks.')
            hook.draw = True
            if scope == 'mmdet':
                hook.test_out_dir = args.show_dir
            else:
                cfg.visualizer.save_dir = args.show_dir
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise SystemExit(f'{args.config} defines no tta_model / tta_pipeline; --tta cannot '
                             f'be used with it.')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main(argv=None):
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
