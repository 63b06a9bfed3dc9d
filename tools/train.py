"""Train a model of any of mmpretrain / mmdet / mmsegmentation (dispatch on default_scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--overwrite] [--non-strict]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch   # GPUs: NCCL, CPU: gloo

Flags mean what they mean in the upstream tools; ``--resume`` without a path resumes from the
latest checkpoint of the work dir (mmdet/mmpretrain semantics; mmseg's boolean flag is the same
as giving no path). ``--resume`` with nothing to resume stops, and so does a new run into a work
dir that holds checkpoints (``--overwrite`` replaces them). Checkpoints load strictly:
``--non-strict`` loads only the weights that fit (``load_from`` for fine-tuning a changed head).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a clone, too

from mmvit_ext.checkpoint import checkpoint_errors_exit, install_safe_loading  # noqa: E402
from mmvit_ext.utils.batch_scaling import apply_batch_scaling  # noqa: E402
from mmvit_ext.utils.cli import add_checkpoint_args, add_common_args, \
    annotation_json_errors_named, apply_checkpoint_args, build_runner, check_data, load_config, \
    setup_distributed  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_common_args(parser)
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                             'when no path is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr (and EMA momentum) to the actual total batch size')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    add_checkpoint_args(parser, training=True)
    return parser.parse_args(argv)


def apply_train_args(cfg, args):
    if args.amp:
        wrapper = cfg.optim_wrapper
        if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP is already enabled in the config.')
        else:
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader and not loader.get('num_workers'):
            loader.persistent_workers = False  # torch refuses it without workers


def main(argv=None):
    install_safe_loading()
    args = parse_args(argv)
    cfg = load_config(args)
    apply_train_args(cfg, args)
    apply_batch_scaling(cfg, auto_scale=args.auto_scale_lr)  # lr set for another total batch
    apply_checkpoint_args(cfg, args, training=True)
    check_data(cfg, ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else []))
    setup_distributed(cfg)
    with checkpoint_errors_exit(), annotation_json_errors_named(cfg):
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
