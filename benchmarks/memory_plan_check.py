"""The memory plan against what it plans, printed side by side (the tables of docs/deepspeed_and_memory_plan.md).

    python benchmarks/memory_plan_check.py [--part cpu|deepspeed|table|all] [--out FILE.json]

cpu        every tiny config: activations kept for backward and the forward + backward peak, planned on
           fake tensors vs counted by the CPU allocator in a real step (each in its own process)
deepspeed  every 6B config that trains its backbone: model states per GPU (8 GPUs, ZeRO-2 and ZeRO-3,
           bf16) vs DeepSpeed's estimate_zero2/3_model_states_mem_needs
table      every 6B config, as it is, on 8 GPUs of 24/40/48/80 GB at its own batch size: the plan's total
           per GPU and whether it fits
lora       every 6B LoRA config on ONE GPU at batch 2: the plan's total and the smallest of 24/40/48/80 GB
           it fits (and ZeRO-2 bf16 on one GPU, whose bf16 module copy drops the fp32 adapters to bf16)
"""
import argparse
import glob
import json
import multiprocessing as mp
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

GiB = 2 ** 30
# the tiny configs with InternViT-300M (24 blocks, 1024 wide) at their 112 px crop
SIZE_300M = {'model.backbone.arch': '300m', 'model.backbone.out_indices': [5, 11, 17, 23],
             'model.neck.embed_dim': 1024, 'model.decode_head.in_channels': [1024] * 4,
             'model.auxiliary_head.in_channels': 1024}
TINY = [
    ('linear, frozen', 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py', {}),
    ('UperNet, frozen', 'configs/segmentation/tiny/tiny_upernet_frozen_synthetic.py', {}),
    ('UperNet, full, with_cp', 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py', {}),
    ('UperNet, full, no with_cp', 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py',
     {'model.backbone.with_cp': False}),
    ('ViT-Adapter, frozen', 'configs/segmentation/tiny/tiny_adapter_upernet_frozen_synthetic.py', {}),
    ('ViT-Adapter, frozen, with_cp', 'configs/segmentation/tiny/tiny_adapter_upernet_frozen_synthetic.py',
     {'model.backbone.with_cp': True}),
    # every class of the 150 present in each image (the plan's worst case for Mask2Former), real Hungarian matching
    ('Mask2Former (ViT-Adapter), frozen', 'configs/mask2former/tiny/tiny_adapter_mask2former_frozen_synthetic.py', {}),
    # 200 queries as the 6B configs: more queries than ground truths, 50 left unmatched
    ('Mask2Former, 200 queries', 'configs/mask2former/tiny/tiny_adapter_mask2former_frozen_synthetic.py',
     {'model.decode_head.num_queries': 200}),
    ('Mask R-CNN (ViT-Adapter)', 'configs/detection/tiny/tiny_adapter_mask-rcnn_fpn_synthetic.py', {}),
    ('linear probe (classification)', 'configs/classification/tiny/tiny_linear_probe_synthetic.py', {},
     dict(batch=64)),
    ('300M UperNet, frozen', 'configs/segmentation/tiny/tiny_upernet_frozen_synthetic.py', SIZE_300M),
    ('300M UperNet, full, with_cp', 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py', SIZE_300M),
    ('300M UperNet, full, no with_cp', 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py',
     dict(SIZE_300M, **{'model.backbone.with_cp': False})),
    ('UperNet, LoRA, with_cp', 'configs/segmentation/tiny/tiny_upernet_lora_synthetic.py', {}),
    ('UperNet, LoRA, no with_cp', 'configs/segmentation/tiny/tiny_upernet_lora_synthetic.py',
     {'model.backbone.with_cp': False}),
    ('ViT-Adapter, LoRA, with_cp', 'configs/segmentation/tiny/tiny_adapter_upernet_lora_synthetic.py', {}),
    ('300M UperNet, LoRA, with_cp', 'configs/segmentation/tiny/tiny_upernet_lora_synthetic.py', SIZE_300M),
    ('300M UperNet, LoRA, no with_cp', 'configs/segmentation/tiny/tiny_upernet_lora_synthetic.py',
     dict(SIZE_300M, **{'model.backbone.with_cp': False})),
]
GPU_SIZES = (24, 40, 48, 80)


def six_b_configs():
    return sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', 'internvit_6b_*.py')))


def _cpu_one(config, options, batch, queue):
    import torch
    torch.set_num_threads(1)
    from mmengine.config import Config

    from internvit_dense.memory_plan.validate import measured_cpu_step, planned_cpu_step
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.merge_from_dict(options)
    start = time.perf_counter()
    planned = planned_cpu_step(cfg, batch)
    plan_seconds = time.perf_counter() - start
    measured = measured_cpu_step(cfg, batch)
    queue.put(dict(planned=planned, measured=measured, plan_seconds=plan_seconds))


def part_cpu(batch, only=()):
    ctx = mp.get_context('spawn')
    rows = []
    print(f'\nactivations and peak of one training step planned vs measured by the CPU allocator')
    print(f'{"config":32s} {"batch":>5s} {"kept planned":>12s} {"measured":>9s} {"ratio":>6s} {"peak planned":>12s} '
          f'{"measured":>9s} {"ratio":>6s}')
    for name, config, options, *extra in TINY:
        if only and not any(o in name for o in only):
            continue
        row_batch = (extra[0] if extra else {}).get('batch', batch)
        queue = ctx.Queue()
        proc = ctx.Process(target=_cpu_one, args=(config, options, row_batch, queue))
        proc.start()
        result = queue.get()
        proc.join()
        p, m = result['planned'], result['measured']
        row = dict(name=name, config=config, options=options, batch=row_batch, **result,
                   kept_ratio=p['kept_for_backward'] / m['kept_for_backward'], peak_ratio=p['peak'] / m['peak'])
        rows.append(row)
        print(f'{name:32s} {row_batch:5d} {p["kept_for_backward"] / 2**20:9.1f} MB '
              f'{m["kept_for_backward"] / 2**20:6.1f} MB {row["kept_ratio"]:6.3f} '
              f'{p["peak"] / 2**20:9.1f} MB {m["peak"] / 2**20:6.1f} MB {row["peak_ratio"]:6.3f}', flush=True)
    return rows


def part_deepspeed():
    from mmengine.config import Config

    from internvit_dense.memory_plan import apply_overrides, census, deepspeed_estimate, model_states, runner_of
    from internvit_dense.memory_plan.plan import build_model, build_optimizer
    from internvit_dense.memory_plan.trace import fake_tensors
    rows = []
    print('\nmodel states per GPU (8 GPUs, bf16): plan vs DeepSpeed\'s estimator')
    print(f'{"config":58s} {"stage":>5s} {"plan GB":>8s} {"DeepSpeed GB":>12s} {"ratio":>6s}')
    for path in six_b_configs():
        base = Config.fromfile(path)
        for stage in (2, 3):
            cfg = apply_overrides(base.copy(), deepspeed=stage,
                                  precision=None if base.get('strategy') else 'bf16')
            runner = runner_of(cfg, 8)
            with fake_tensors() as values:
                model = build_model(cfg)
                optimizer = build_optimizer(model, cfg)
                values.allow_value_reads += 1
                c = census(model, optimizer)
            if c.frozen:
                break  # the estimators count every parameter as trained
            states = model_states(c, runner)
            estimate = deepspeed_estimate(model, runner)
            name = osp.relpath(path, ROOT)
            rows.append(dict(config=name, stage=stage, plan=states.model_states, deepspeed=estimate,
                             ratio=states.model_states / estimate))
            print(f'{name:58s} {stage:5d} {states.model_states / GiB:8.2f} {estimate / GiB:12.2f} '
                  f'{rows[-1]["ratio"]:6.3f}', flush=True)
    return rows


def part_table():
    from mmengine.config import Config

    from internvit_dense.memory_plan import plan_config
    rows = []
    print('\nevery 6B config as it is, 8 GPUs, its own batch size: plan total per GPU, fits on 24/40/48/80 GB')
    print(f'{"config":58s} {"runner":28s} {"batch":>5s} {"total GB":>8s} ' + ' '.join(f'{g:>4d}' for g in GPU_SIZES)
          + f' {"s":>5s}')
    for path in six_b_configs():
        cfg = Config.fromfile(path)
        plan = plan_config(cfg, gpus=8, gpu_memory_gb=80, suggest=False, name=osp.relpath(path, ROOT))
        fits = {g: plan.total <= g * GiB * (1 - 0.05) for g in GPU_SIZES}
        rows.append(dict(plan.to_dict(), fits_on={str(g): f for g, f in fits.items()}))
        print(f'{plan.config:58s} {plan.runner.describe().split(",")[0]:28s} {plan.batch_size:5d} '
              f'{plan.total / GiB:8.1f} ' + ' '.join(f'{"yes" if fits[g] else "no":>4s}' for g in GPU_SIZES)
              + f' {plan.seconds:5.0f}', flush=True)
    return rows


def part_lora(batch: int = 2):
    from mmengine.config import Config

    from internvit_dense.memory_plan import apply_overrides, plan_config
    rows = []
    print(f'\nthe 6B LoRA configs on one GPU, batch {batch}: plan total, fits on 24/40/48/80 GB, the smallest')
    print(f'{"config":58s} {"runner":28s} {"trained":>11s} {"total GB":>8s} ' + ' '.join(f'{g:>4d}' for g in GPU_SIZES)
          + f' {"smallest":>8s} {"s":>5s}')
    for path in six_b_configs():
        if '_lora_' not in osp.basename(path):
            continue
        for deepspeed in ((None,) if 'deepspeed' in path else (None, 2)):
            cfg = apply_overrides(Config.fromfile(path), deepspeed=deepspeed, precision='bf16' if deepspeed else None)
            plan = plan_config(cfg, gpus=1, gpu_memory_gb=80, batch_size=batch, suggest=False,
                               name=osp.relpath(path, ROOT))
            fits = {g: plan.total <= g * GiB * (1 - 0.05) for g in GPU_SIZES}
            smallest = next((g for g in GPU_SIZES if fits[g]), None)
            rows.append(dict(plan.to_dict(), fits_on={str(g): f for g, f in fits.items()}, smallest_gpu=smallest))
            print(f'{plan.config:58s} {plan.runner.describe().split(",")[0]:28s} {plan.census.trainable:11,d} '
                  f'{plan.total / GiB:8.1f} ' + ' '.join(f'{"yes" if fits[g] else "no":>4s}' for g in GPU_SIZES)
                  + f' {str(smallest or "-") + " GB":>8s} {plan.seconds:5.0f}', flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--part', choices=['cpu', 'deepspeed', 'table', 'lora', 'all'], default='all')
    p.add_argument('--batch', type=int, default=2, help='batch of the CPU steps')
    p.add_argument('--only', nargs='+', default=(), help='cpu rows whose name contains one of these')
    p.add_argument('--out', help='JSON file (default work_dirs/benchmark/memory_plan_<time>.json)')
    args = p.parse_args()
    results = {}
    if args.part in ('cpu', 'all'):
        results['cpu'] = part_cpu(args.batch, args.only)
    if args.part in ('deepspeed', 'all'):
        results['deepspeed'] = part_deepspeed()
    if args.part in ('table', 'all'):
        results['table'] = part_table()
    if args.part in ('lora', 'all'):
        results['lora'] = part_lora(args.batch)
    out = args.out or osp.join('work_dirs', 'benchmark', f'memory_plan_{time.strftime("%Y%m%d_%H%M%S")}.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, out)
    print(f'\nwritten to {out}')


if __name__ == '__main__':
    main()
