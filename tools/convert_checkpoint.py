"""Converts an InternViT checkpoint between the released formats.

    python tools/convert_checkpoint.py SRC DST --to {pth,opengvlab-hf,transformers} [--arch 6b]

SRC may be any supported format (the format is detected); tensors keep their dtype. Tensors are
streamed: a 6B checkpoint is converted shard by shard, never held whole.
A ``.pth`` source carries no config, so ``--arch`` says which model it is when the
target is a Hugging Face directory.
"""
import argparse
import json
import sys
import time

import torch

from internvit_dense.checkpoint import FORMATS, open_checkpoint, write_checkpoint
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
    p.add_argument('--to', choices=list(FORMATS), required=True, help='target format')
    p.add_argument('--arch', help="'6b', '6b-448', '300m' or a JSON dict (needed for a .pth source)")
    p.add_argument('--patch-size', type=int)
    p.add_argument('--pretrain-size', type=int)
    p.add_argument('--shard-size', default=None, help='largest shard of a HF target, e.g. 5GB')
    p.add_argument('--bin', action='store_true', help='write pytorch_model*.bin instead of safetensors')
    args = p.parse_args(argv)

    start = time.time()
    print(f'reading {args.src} ...', flush=True)
    reader = open_checkpoint(args.src)
    kwargs = reader.arch() or {}
    if args.arch:
        kwargs['arch'] = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
    if 'arch' not in kwargs:
        if args.to != 'pth':
            p.error('a .pth source carries no config: pass --arch')
        kwargs['arch'] = None  # a .pth -> .pth copy: every backbone key is kept as it is
    for opt in ('patch_size', 'pretrain_size'):
        if getattr(args, opt):
            kwargs[opt] = getattr(args, opt)
    names, arch = None, None
    if kwargs['arch'] is not None:
        with torch.device('meta'):  # only for the target's config.json and the key check
            model = InternViT(**kwargs)
        names, arch = set(dict(model.named_parameters())), model.arch_kwargs()
    dropped, count = [], [0, 0]

    def backbone_tensors():  # one at a time: a 6B checkpoint is converted holding one shard
        for name, value in reader.tensors():
            if names is not None and name not in names or names is None and not is_backbone_key(name):
                dropped.append(name)
                continue
            count[0] += 1
            count[1] += value.numel()
            yield name, value

    write_checkpoint(backbone_tensors(), args.dst, fmt=args.to, arch=arch, safetensors=not args.bin,
                     max_shard_bytes=parse_size(args.shard_size) if args.shard_size else None)
    dropped += reader.ignored
    if dropped:
        print(f'dropped {len(dropped)} keys that are not part of the backbone: {dropped[:5]}...')
    print(f'converted {count[0]} tensors ({count[1] / 1e6:.1f}M parameters) from {reader.format.name} to {args.to}: '
          f'{args.dst} in {time.time() - start:.1f}s')


def is_backbone_key(name: str) -> bool:
    return name in ('cls_token', 'pos_embed') or name.startswith(('patch_embed.', 'blocks.'))


if __name__ == '__main__':
    sys.exit(main())
