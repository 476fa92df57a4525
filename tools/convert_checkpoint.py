"""Converts an InternViT checkpoint between the released formats.

    python tools/convert_checkpoint.py SRC DST --to {pth,opengvlab-hf,transformers} [--arch 6b]

SRC may be any supported format (the format is detected); tensors keep their dtype.
A ``.pth`` source carries no config, so ``--arch`` says which model it is when the
target is a Hugging Face directory.
"""
import argparse
import json
import sys
import time

import torch

from internvit_dense.checkpoint import FORMATS, load_state_dict, read_config, save_checkpoint
from internvit_dense.checkpoint.formats import arch_from_config
from internvit_dense.models.backbones import InternViT


def parse_size(text: str) -> int:
    units = {'KB': 1e3, 'MB': 1e6, 'GB': 1e9}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[:-2]) * factor)
    return int(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--to', choices=FORMATS, required=True, help='target format')
    p.add_argument('--arch', help="'6b', '6b-448', '300m' or a JSON dict (needed for a .pth source)")
    p.add_argument('--patch-size', type=int)
    p.add_argument('--pretrain-size', type=int)
    p.add_argument('--shard-size', default=None, help='largest shard of a HF target, e.g. 5GB')
    p.add_argument('--bin', action='store_true', help='write pytorch_model*.bin instead of safetensors')
    args = p.parse_args(argv)

    start = time.time()
    print(f'reading {args.src} ...', flush=True)
    state_dict, fmt = load_state_dict(args.src)
    cfg = read_config(args.src)
    kwargs = arch_from_config(cfg)[0] if cfg else {}
    if args.arch:
        kwargs['arch'] = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
    if 'arch' not in kwargs:
        if args.to != 'pth':
            p.error('a .pth source carries no config: pass --arch')
        kwargs['arch'] = dict(embed_dims=state_dict['cls_token'].shape[-1],
                              depth=1 + max(int(k.split('.')[1]) for k in state_dict if k.startswith('blocks.')),
                              num_heads=1)
    for opt in ('patch_size', 'pretrain_size'):
        if getattr(args, opt):
            kwargs[opt] = getattr(args, opt)
    with torch.device('meta'):  # only for the target's config.json and the key check
        model = InternViT(**kwargs)
    unknown = sorted(set(state_dict) - set(dict(model.named_parameters())))
    for k in unknown:
        state_dict.pop(k)
    if unknown:
        print(f'dropped {len(unknown)} keys that are not part of the backbone: {unknown[:5]}...')
    save_checkpoint(model, args.dst, fmt=args.to, state_dict=state_dict, safetensors=not args.bin,
                    max_shard_bytes=parse_size(args.shard_size) if args.shard_size else None)
    n = sum(v.numel() for v in state_dict.values())
    print(f'converted {len(state_dict)} tensors ({n / 1e6:.1f}M parameters) from {fmt} to {args.to}: '
          f'{args.dst} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    sys.exit(main())
