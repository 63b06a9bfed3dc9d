"""Draw the attention of a trained model (all four families) and its stage feature maps.

Usage::

    python tools/visualization/vis_attention.py CONFIG CHECKPOINT IMAGE [--query X Y]
        [--stage S] [--block B] [--heads H ...] [--out DIR] [--featmap [--topk K]]
        [--cfg-options KEY=VALUE ...]

The image goes through the config's test pipeline (annotation loading dropped) and the model's
data preprocessor; the backbone then runs its normal forward while
``mmvit_ext.visualization.record_attention`` records the inputs of its attention modules, and
the weights are computed from those by the plain formulas (the fast path is not changed).
``--query X Y`` is a pixel of that network input (the figures show it; default its centre).
``--stage``/``--block`` pick the block (default 0 0; negative counts from the end); LaViT
figures cover every block of the stage. Writes into ``--out`` (default ``vis_attention``)
PNG grids, each with a ``.npz`` of the arrays it draws (see ``mmvit_ext.visualization.maps``
for the figures of each family). ``--featmap`` also writes the output of every stage (or of
``--stage`` when given) through mmengine's ``Visualizer.draw_featmap``: the channel mean, or
with ``--topk K`` the K channels of largest activation.

Works for classification, detection and segmentation configs whose backbone is one of
mmvit_ext's. The checkpoint is loaded strictly and safely (``weights_only=True``, through the
loader ``mmvit_ext`` gives mmengine). A model fused for CPU
inference cannot be visualised (its fused blocks skip the attention modules); the tool builds
the plain model from the config.
"""
import argparse
import contextlib
import copy
import os
import os.path as osp
import sys

from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mmvit_ext.checkpoint import checkpoint_errors_exit  # noqa: E402
from mmvit_ext.utils.config import build_from_config, load_config, \
    register_modules  # noqa: E402


def build_model(cfg, checkpoint):
    """``cfg.model`` built in its toolbox (:func:`build_from_config`: SyncBN reverted),
    CHECKPOINT loaded strictly and safely, in eval mode; the toolbox is made the default scope,
    which the test pipeline of :func:`preprocess` needs."""
    if not osp.isfile(checkpoint):
        sys.exit(f'Checkpoint "{checkpoint}" does not exist.')
    register_modules(cfg.default_scope, init_default_scope=True)
    with checkpoint_errors_exit():
        try:
            return build_from_config(cfg, checkpoint)
        except RuntimeError as err:
            if 'do not match' not in str(err):
                raise
            sys.exit(f'"{checkpoint}" does not fit the model of the config (strict loading): '
                     f'{err}\nPass the config the checkpoint was trained with.')


def preprocess(cfg, model, image_path):
    """The network input (1, 3, H, W) of IMAGE and its RGB uint8 picture (H, W, 3)."""
    from mmengine.dataset import Compose
    if not osp.isfile(image_path):
        sys.exit(f'Image "{image_path}" does not exist.')
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    pipeline = cfg.get('test_pipeline') or loader['dataset'].get('pipeline')
    pipeline = [t for t in copy.deepcopy(pipeline) if 'LoadAnnotations' not in t['type']]
    data = Compose(pipeline)(dict(img_path=image_path))
    batch = model.data_preprocessor(dict(inputs=[data['inputs']],
                                         data_samples=[data['data_samples']]), False)
    inputs = batch['inputs']
    prep = model.data_preprocessor
    picture = inputs[0]
    if getattr(prep, 'mean', None) is not None:  # normalised: undo it for the picture
        picture = picture * prep.std + prep.mean
    picture = picture.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    if picture.shape[-1] != 3:
        sys.exit(f'The network input has {picture.shape[-1]} channels; this tool draws RGB.')
    return inputs, np.ascontiguousarray(picture)


@contextlib.contextmanager
def all_stage_outputs(backbone):
    """The backbone returns every stage's output while inside."""
    saved = backbone.out_indices
    backbone.out_indices = tuple(range(len(backbone.stages)))
    try:
        yield
    finally:
        backbone.out_indices = saved


def draw_featmaps(features, picture, stages, out_dir, topk, prefix):
    """One PNG per stage through ``Visualizer.draw_featmap`` (channel mean, or the ``topk``
    strongest channels), saved with the drawn feature map as .npz."""
    import mmcv
    from mmengine.visualization import Visualizer
    paths = []
    for i in stages:
        featmap = features[i][0]
        drawn = Visualizer.draw_featmap(
            featmap, picture, channel_reduction=None if topk else 'squeeze_mean',
            topk=topk or 1, arrangement=(int(np.ceil(topk / 4)), min(topk, 4)) if topk else
            (1, 1))
        path = osp.join(out_dir, f'{prefix}featmap_s{i}.png')
        mmcv.imwrite(drawn[..., ::-1], path)  # RGB -> BGR for OpenCV
        np.savez_compressed(path[:-4] + '.npz', featmap=featmap.float().numpy())
        paths.append(path)
    return paths


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--query', type=int, nargs=2, metavar=('X', 'Y'),
                        help='query pixel of the network input (default: its centre)')
    parser.add_argument('--stage', type=int, default=None, help='stage index (default 0)')
    parser.add_argument('--block', type=int, default=0, help='block index in the stage')
    parser.add_argument('--heads', type=int, nargs='+', help='heads to draw (default all)')
    parser.add_argument('--out', default='vis_attention', help='output folder')
    parser.add_argument('--featmap', action='store_true',
                        help='also draw the stage outputs with Visualizer.draw_featmap')
    parser.add_argument('--topk', type=int, default=0,
                        help='--featmap: draw the K strongest channels instead of their mean')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmvit_ext.visualization import record_attention
    from mmvit_ext.visualization.maps import draw_attention

    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint)
    backbone = getattr(model, 'backbone', None)
    if backbone is None or not hasattr(backbone, 'stages'):
        sys.exit(f'{type(model).__name__} has no mmvit_ext backbone (model.backbone).')
    inputs, picture = preprocess(cfg, model, args.image)
    height, width = picture.shape[:2]
    query = tuple(args.query) if args.query else (width // 2, height // 2)
    if not (0 <= query[0] < width and 0 <= query[1] < height):
        sys.exit(f'--query {query[0]} {query[1]} is outside the {width}x{height} network input.')
    try:
        with torch.no_grad(), all_stage_outputs(backbone), record_attention(model) as rec:
            features = backbone(inputs)
    except TypeError as err:  # fused or foreign models
        sys.exit(str(err))
    os.makedirs(args.out, exist_ok=True)
    stage = 0 if args.stage is None else args.stage
    try:
        written = list(draw_attention(rec, stage, args.block, picture, query, args.out,
                                      args.heads).values())
    except (IndexError, ValueError) as err:
        sys.exit(str(err))
    if args.featmap:
        stages = range(len(features)) if args.stage is None else [args.stage % len(features)]
        written += draw_featmaps(features, picture, stages, args.out, args.topk,
                                 f'{rec.records[0].family.name}_')
    print('\n'.join(written))


if __name__ == '__main__':
    main()
