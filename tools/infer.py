"""Runs a trained model on your own images and draws what it predicts.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] [--out-dir work_dirs/infer] [--device cuda:0]

Segmentation configs write, per image, ``<name>_overlay.png`` (the prediction over the image) and
``<name>_labels.png`` (class index per pixel, as the data set counts classes; 255 where nothing is
predicted). Detection configs write ``<name>_overlay.png`` (boxes and masks scoring at least
``--score-thr``) and ``<name>.json`` (every box: class, score, [x1, y1, x2, y2]). Depth configs write
``<name>_depth.png`` (16-bit, metres x 1000 as NYU's PNGs; x 256 as KITTI's for a range past 65 m) and
``<name>_depth_color.png`` (the image beside its coloured depth and the colour scale in metres).
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.engine.cli import setup_entry_point  # noqa: E402


def parse_args(argv=None):
    from internvit_dense.engine.cli import ConfigOptionsAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint', help='a training checkpoint or a state dict (tools/zero_to_fp32.py for DeepSpeed), '
                   'a local path or hf://ORG/NAME/FILE')
    p.add_argument('inputs', nargs='+', help='images, or folders of images (searched recursively)')
    p.add_argument('--out-dir', default='work_dirs/infer', help='(default: %(default)s)')
    p.add_argument('--device', default=None, help='default: cuda:0 if available, else cpu')
    p.add_argument('--opacity', type=float, default=0.5, help='of the segmentation overlay (default: %(default)s)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detections drawn and counted from this score (default: %(default)s)')
    p.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction, help='override config entries')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p.parse_args(argv)


def main(argv=None):
    setup_entry_point()
    args = parse_args(argv)
    from internvit_dense.inference import OutputWriteError, find_images, predict_images, task_for
    try:
        images = find_images(args.inputs)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')

    import torch

    from internvit_dense.apis import init_model
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    t0 = time.perf_counter()
    try:
        model = init_model(args.config, args.checkpoint, device=device, cfg_options=args.cfg_options)
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        raise SystemExit(str(e)) from None
    task = task_for(model, opacity=args.opacity, score_thr=args.score_thr)
    print(f'{args.config} with {args.checkpoint} on {device} ({time.perf_counter() - t0:.1f}s); '
          f'{len(images)} images -> {osp.abspath(args.out_dir)}', flush=True)

    t0 = time.perf_counter()
    try:
        skipped = predict_images(task, images, args.out_dir, progress=not args.quiet)
    except OutputWriteError as e:
        raise SystemExit(f'stopped: {e}') from None
    seconds = time.perf_counter() - t0

    done = len(images) - len(skipped)
    print(f'done: {done} images in {seconds:.1f}s ({seconds / max(done, 1):.2f}s each)')
    if done:
        print(f'  {task.summary()}')
    print(f'  overlays and predictions: {osp.abspath(args.out_dir)}')
    if skipped:  # every other image was predicted; the exit status says that not all were
        raise SystemExit(f'{len(skipped)} of {len(images)} inputs skipped:\n' + '\n'.join(f'  {s}' for s in skipped))


if __name__ == '__main__':
    main()
