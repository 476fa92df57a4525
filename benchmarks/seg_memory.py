"""Memory of one segmentation training step, frozen backbone vs full fine-tuning.

    python benchmarks/seg_memory.py [--arch 300m] [--crop 224] [--batch 2]

Each step runs in its own process (a clean peak RSS). Printed per config:
- activations kept for backward: bytes of every tensor autograd saved in the step
  (counted with saved_tensors_hooks; exact, independent of the allocator);
- peak RSS of the step above the process's RSS just before it (includes gradients
  and optimizer state, which a frozen backbone also does not need).
"""
import argparse
import multiprocessing as mp
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import ROOT, peak_rss_mib, print_table, reset_peak_rss, rss_mib, write_record  # noqa: E402

CONFIGS = {
    'frozen': osp.join(ROOT, 'configs/segmentation/tiny/tiny_upernet_frozen_synthetic.py'),
    'full': osp.join(ROOT, 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py'),
}


def one_step(name, config, args, queue):
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import internvit_dense.engine  # noqa: F401  (optimizer constructor)
    import internvit_dense.models  # noqa: F401

    torch.manual_seed(0)
    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    if args.arch:
        cfg.model.backbone.arch = args.arch
        depth = {'300m': 24, '6b': 48, '6b-448': 45}[args.arch]
        dims = {'300m': 1024, '6b': 3200, '6b-448': 3200}[args.arch]
        cfg.model.backbone.out_indices = [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]
        cfg.model.backbone.pretrain_size = args.crop
        cfg.model.neck.embed_dim = dims
        cfg.model.decode_head.in_channels = [dims] * 4
        cfg.model.auxiliary_head.in_channels = dims
    if args.no_cp:
        cfg.model.backbone.with_cp = False
    cfg.model.backbone.img_size = args.crop
    cfg.model.data_preprocessor.size = (args.crop, args.crop)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    imgs = [torch.randint(0, 255, (3, args.crop, args.crop), dtype=torch.uint8) for _ in range(args.batch)]
    samples = []
    for _ in imgs:
        s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, args.crop, args.crop))))
        s.set_metainfo(dict(img_shape=(args.crop, args.crop), ori_shape=(args.crop, args.crop),
                            pad_shape=(args.crop, args.crop)))
        samples.append(s)
    data = dict(inputs=imgs, data_samples=samples)

    saved = {'bytes': 0}

    def pack(t):
        saved['bytes'] += t.numel() * t.element_size()
        return t

    reset_peak_rss()
    before = rss_mib()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train_step(data, optim)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    queue.put(dict(name=name, activations_mb=saved['bytes'] / 2**20, peak_rss_above_start_mb=peak - before,
                   step_seconds=seconds, trainable_params=trainable, with_cp=cfg.model.backbone.with_cp,
                   total_params=sum(p.numel() for p in model.parameters())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', choices=['300m', '6b', '6b-448'], help='a real-size backbone instead of the tiny one')
    p.add_argument('--crop', type=int, default=112)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--no-cp', action='store_true', help='turn off activation checkpointing in the full config')
    args = p.parse_args()
    ctx = mp.get_context('spawn')
    results = []
    for name, config in CONFIGS.items():
        print(f'[{name}] one training step of {config} (backbone {args.arch or "tiny"}, '
              f'{args.batch}x{args.crop}px) ...', flush=True)
        queue = ctx.Queue()
        proc = ctx.Process(target=one_step, args=(name, config, args, queue))
        proc.start()
        result = queue.get()
        proc.join()
        results.append(result)
        print(f'[{name}] activations kept for backward {result["activations_mb"]:.1f} MB, '
              f'peak RSS above start {result["peak_rss_above_start_mb"]:.1f} MB, {result["step_seconds"]:.2f} s',
              flush=True)
    frozen, full = results
    print('\nSUMMARY: one training step each')
    print_table(['config', 'trainable params', 'with_cp', 'activations MiB', 'peak RSS MiB', 'step s'],
                [[r['name'], f"{r['trainable_params']:,}", r['with_cp'], f"{r['activations_mb']:.1f}",
                  f"{r['peak_rss_above_start_mb']:.1f}", f"{r['step_seconds']:.2f}"] for r in results])
    print(f"frozen/full activations: {frozen['activations_mb'] / max(full['activations_mb'], 1e-9):.2f}; "
          f"frozen/full peak RSS: {frozen['peak_rss_above_start_mb'] / max(full['peak_rss_above_start_mb'], 1e-9):.2f}")
    print(f"record: {write_record(dict(args=vars(args), results=results), name='seg_memory')}")

if __name__ == '__main__':
    main()
