"""Evaluates a checkpoint: python tools/test.py CONFIG CHECKPOINT [--show-dir DIR] [--out DIR] [--tta]."""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.engine.cli import add_common_args, load_config, setup_entry_point  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    add_common_args(parser)
    parser.add_argument('checkpoint', help='checkpoint file (a training checkpoint, a consolidated state dict, or one of '
                        "InternVL's released task checkpoints as it is, also as hf://OpenGVLab/InternVL/FILE)")
    parser.add_argument('--show-dir', help='write prediction overlays (PNG) into this folder')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each shown prediction stays')
    parser.add_argument('--out', help='also save the predictions into this folder: label maps as PNGs '
                        '(segmentation), COCO-format results JSON (detection)')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline (segmentation: multi-scale + flip), "
                        'predictions merged by its tta_model')
    return parser.parse_args(argv)


# Metrics that write their predictions as COCO results files (bbox/segm JSON) rather than label maps.
COCO_METRICS = ('CocoMetric', 'mmdet.CocoMetric')


def direct_output(evaluator, out_dir):
    """Points the test metric(s) at ``out_dir``; returns what will be written there."""
    metrics = evaluator if isinstance(evaluator, list) else [evaluator]
    written = []
    for metric in metrics:
        if metric.get('type') in COCO_METRICS:
            # CocoMetric writes <prefix>.bbox.json / .segm.json, the format of COCO's evaluation server
            metric.outfile_prefix = osp.join(out_dir, 'coco_results')
            written.append('COCO-format results (coco_results.*.json)')
        else:
            metric.output_dir = out_dir
            metric.keep_results = True
            written.append('predicted label maps')
    return ', '.join(written)


def apply_tta(cfg) -> int:
    """Tests through the config's ``tta_model`` wrapped around its model, on its ``tta_pipeline``.

    Returns how many views of each image are predicted and merged.
    """
    from mmengine.config import ConfigDict
    missing = [k for k in ('tta_model', 'tta_pipeline') if cfg.get(k) is None]
    if missing:
        raise SystemExit(f'--tta: {cfg.filename} defines no {" and no ".join(missing)}; the segmentation configs '
                         'have them (configs/_base_/datasets/ade20k_504.py)')
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset.dataset
    dataset.pipeline = cfg.tta_pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    views = 1
    for step in cfg.tta_pipeline:
        if step['type'] == 'TestTimeAug':
            for choices in step['transforms']:
                views *= len(choices)
    return views


def overlay_summary(show_dir: str) -> str:
    """Where the overlays landed: the local backend nests them as <dir>/vis_data/vis_image/."""
    folders = {}
    for dirpath, _, files in os.walk(show_dir):
        n = sum(f.lower().endswith(('.png', '.jpg')) for f in files)
        if n:
            folders[osp.abspath(dirpath)] = n
    if not folders:
        return f'none written into {osp.abspath(show_dir)}'
    return ', '.join(f'{n} images in {d}' for d, n in sorted(folders.items()))


def main(argv=None):
    setup_entry_point()
    args = parse_args(argv)
    cfg = load_config(args)
    from internvit_dense.checkpoint import HubCheckpointError, resolve_checkpoint
    try:
        args.checkpoint = resolve_checkpoint(args.checkpoint)  # a local path wins; else hf://ORG/NAME/FILE
    except HubCheckpointError as e:
        raise SystemExit(str(e)) from None
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = None  # the model is built from the checkpoint, strictly: never random weights tested
    cfg.resume = False
    from internvit_dense.apis import TRAINED_MODEL
    # Built on the meta device and filled from the memory-mapped file in the config's dtype (a 6B model
    # in its own size of memory); the Runner builds it through this registered builder.
    cfg.model = dict(type=TRAINED_MODEL, model=cfg.model, checkpoint=args.checkpoint)
    # Testing needs no training set. Left in, mmseg's visualization hook (runner.iter) builds the training
    # loop and its data set, and --show-dir fails where only the validation images are.
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg[key] = None
    if args.show or args.show_dir:
        vis = cfg.default_hooks.visualization
        vis.draw = True
        vis.show = args.show
        vis.wait_time = args.wait_time
        vis.interval = 1
        if args.show_dir:
            cfg.visualizer.save_dir = args.show_dir
            cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    if args.out:
        out_kind = direct_output(cfg.test_evaluator, args.out)
    if args.tta:
        views = apply_tta(cfg)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    from internvit_dense.apis import NonFiniteWeightsError
    from internvit_dense.checkpoint import CheckpointError
    from internvit_dense.checkpoint.files import UnreadableCheckpointError
    try:
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    except (UnreadableCheckpointError, NonFiniteWeightsError) as e:  # the message says what to do
        raise SystemExit(str(e)) from None
    except CheckpointError as e:
        raise SystemExit(f'checkpoint {args.checkpoint} does not fit the model of {args.config}:\n{e}') from None
    metrics = runner.test()
    tta = f' with test-time augmentation ({views} views per image merged)' if args.tta else ''
    print('\n'.join([f'test results of {args.checkpoint}{tta}:'] + [f'  {k}: {v}' for k, v in metrics.items()]))
    if args.show_dir:
        print(f'prediction overlays: {overlay_summary(args.show_dir)}')
    if args.out:
        print(f'{out_kind}: {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
