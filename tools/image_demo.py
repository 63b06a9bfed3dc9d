"""Run a model on one image or a folder of images and save the drawn predictions.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [--out-dir DIR] [--device cpu]
        [--score-thr 0.3] [--show]

The config's ``default_scope`` picks the toolbox's own Inferencer (mmpretrain
``ImageClassificationInferencer``, mmdet ``DetInferencer``, mmseg ``MMSegInferencer``), which
work with this package's configs as they are; the drawn images go to ``DIR/vis/``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmvit_ext.checkpoint import checkpoint_errors_exit, install_safe_loading  # noqa: E402

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('--out-dir', default='outputs', help='drawn images go to OUT_DIR/vis')
    parser.add_argument('--device', default=None, help='e.g. cpu, cuda:0 (default: cuda if '
                                                       'available)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw boxes above this score')
    parser.add_argument('--show', action='store_true', help='also show each image in a window')
    return parser.parse_args(argv)


def list_images(path):
    if osp.isdir(path):
        images = sorted(osp.join(path, f) for f in os.listdir(path)
                        if f.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            raise SystemExit(f'No images ({", ".join(IMAGE_SUFFIXES)}) in {path}.')
        return images
    if not osp.isfile(path):
        raise SystemExit(f'Input not found: {path} (give an image file or a folder).')
    return [path]


def main(argv=None):
    install_safe_loading()  # for the inferencers' checkpoint loading
    args = parse_args(argv)
    with checkpoint_errors_exit():  # a refused checkpoint: its message, no traceback
        run(args)


def run(args):
    for path, what in ((args.config, 'Config'), (args.checkpoint, 'Checkpoint')):
        if not osp.isfile(path):
            raise SystemExit(f'{what} file not found: {path}')
    from mmengine.config import Config
    scope = Config.fromfile(args.config).get('default_scope')
    images = list_images(args.inputs)
    import mmvit_ext.models  # noqa: F401  registers this package's modules
    vis_dir = osp.join(args.out_dir, 'vis')
    if scope == 'mmpretrain':
        from mmpretrain import ImageClassificationInferencer
        inferencer = ImageClassificationInferencer(args.config, pretrained=args.checkpoint,
                                                   device=args.device)
        os.makedirs(vis_dir, exist_ok=True)
        results = inferencer(images, show=args.show, show_dir=vis_dir)
        for image, result in zip(images, results):
            label = result.get('pred_class', result['pred_label'])  # names if the model has them
            print(f'{image}: {label} ({result["pred_score"]:.3f})')
    elif scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(args.config, weights=args.checkpoint, device=args.device)
        results = inferencer(images, out_dir=args.out_dir, show=args.show,
                             pred_score_thr=args.score_thr)
        for image, pred in zip(images, results['predictions']):
            kept = sum(score >= args.score_thr for score in pred['scores'])
            print(f'{image}: {kept} objects with score >= {args.score_thr}')
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(args.config, weights=args.checkpoint, device=args.device)
        inferencer(images, out_dir=args.out_dir, show=args.show)
        print(f'{len(images)} label maps drawn')
    else:
        raise SystemExit(f'{args.config}: default_scope is {scope!r}; this tool runs configs of '
                         f'mmpretrain, mmdet or mmseg.')
    print(f'Drawn images: {vis_dir}')


if __name__ == '__main__':
    main()
