"""``tools/test.py`` visualisation and test-time augmentation, for the three toolboxes.

The three visualisation hooks differ in names and defaults (mmpretrain draws every 5000th
sample, mmdet and mmseg every 50th; mmdet puts its folder under ``work_dir/<timestamp>/``);
``apply_show_args`` gives them the upstream ``test.py`` flags with one meaning: every
``--interval``-th image (default: every image) drawn into the folder given.
"""
import copy
import os.path as osp

HOOK_TYPES = {'mmpretrain': 'VisualizationHook', 'mmdet': 'DetVisualizationHook',
              'mmseg': 'SegVisualizationHook'}


def add_show_args(parser):
    parser.add_argument('--show-dir', help='save images with drawn predictions in this folder')
    parser.add_argument('--show', action='store_true', help='show the predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    parser.add_argument('--interval', type=int, default=1,
                        help='draw every N-th image with --show / --show-dir')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw boxes above this score')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation: the config\'s tta_model / tta_pipeline, or '
                             'a horizontal-flip average for classification and detection configs '
                             'that define none (as the upstream test tools do)')


def apply_show_args(cfg, args):
    """Turn the config's visualisation hook on as ``--show`` / ``--show-dir`` ask."""
    if not (args.show or args.show_dir):
        return
    if args.interval < 1:
        raise SystemExit(f'--interval must be >= 1, got {args.interval}.')
    scope = cfg.default_scope
    hook = cfg.default_hooks.get('visualization') or dict(type=HOOK_TYPES[scope])
    cfg.default_hooks.visualization = hook
    hook.update(interval=args.interval, show=args.show, wait_time=args.wait_time)
    show_dir = osp.abspath(args.show_dir) if args.show_dir else None
    if scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir)
    elif scope == 'mmdet':
        # an absolute test_out_dir is used as it is (a relative one goes under work_dir/<time>)
        hook.update(draw=True, test_out_dir=show_dir, score_thr=args.score_thr)
        if args.interval > 1:  # mmdet's hook ignores its interval at test time
            hook.type = register_interval_det_hook()
    else:  # mmseg draws through the visualizer's backends, under <save_dir>/vis_data/
        hook.update(draw=True)
        if show_dir:
            cfg.visualizer.save_dir = show_dir


def register_interval_det_hook():
    """Register (once) and name mmdet's visualisation hook that honours ``interval`` in test."""
    from mmdet.engine.hooks import DetVisualizationHook
    from mmdet.registry import HOOKS
    name = 'IntervalDetVisualizationHook'
    if name in HOOKS.module_dict:
        return name

    @HOOKS.register_module(name=name)
    class IntervalDetVisualizationHook(DetVisualizationHook):
        """Draws test images number 0, interval, 2 * interval, ... only."""

        def before_test(self, runner):
            self._num_seen = 0

        def after_test_iter(self, runner, batch_idx, data_batch, outputs):
            first, self._num_seen = self._num_seen, self._num_seen + len(outputs)
            chosen = [out for i, out in enumerate(outputs, first) if i % self.interval == 0]
            if chosen:
                super().after_test_iter(runner, batch_idx, data_batch, chosen)

    return name


def apply_tta(cfg, config_path):
    """Wrap the model for test-time augmentation (``--tta``)."""
    scope = cfg.default_scope
    if scope == 'mmdet' and cfg.model.get('roi_head', {}).get('mask_head'):
        raise SystemExit(f'{config_path}: mmdet\'s test-time augmentation (DetTTAModel) merges '
                         f'boxes only and does not support instance segmentation (Mask R-CNN, '
                         f'Cascade Mask R-CNN); test without --tta, or use a box-only config '
                         f'(retinanet_*).')
    if 'tta_model' not in cfg:
        if scope == 'mmpretrain':
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        elif scope == 'mmdet':
            cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg and scope in ('mmpretrain', 'mmdet'):
        cfg.tta_pipeline = _flip_tta_pipeline(cfg, scope)
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise SystemExit(f'{config_path} defines no tta_model / tta_pipeline; --tta cannot be '
                         f'used with it (mmseg configs: see configs/_base_/datasets/'
                         f'ade20k_512x512.py for one).')
    cfg.model = dict(**cfg.tta_model, module=cfg.model)
    _leaf_dataset(cfg.test_dataloader.dataset).pipeline = cfg.tta_pipeline


def _leaf_dataset(dataset_cfg):
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def _flip_tta_pipeline(cfg, scope):
    """The test pipeline with its packing step replaced by {flipped, unflipped} x packing."""
    pipeline = copy.deepcopy(_leaf_dataset(cfg.test_dataloader.dataset).pipeline)
    pack = copy.deepcopy(pipeline[-1])
    if scope == 'mmdet':  # DetTTAModel un-flips the boxes with these
        pack['meta_keys'] = tuple(pack.get('meta_keys', (
            'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))) + (
            'flip', 'flip_direction')
    pipeline[-1] = dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]])
    return pipeline
