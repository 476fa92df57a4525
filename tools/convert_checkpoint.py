"""Converts an InternViT checkpoint between the released formats, or an InternVL task checkpoint to ours.

    python tools/convert_checkpoint.py SRC DST --to {pth,opengvlab-hf,transformers} [--arch 6b] [--overwrite]
    python tools/convert_checkpoint.py SRC DST.pth --from {internvl-seg,internvl-cls} [--overwrite]

SRC may be any supported format (the format is detected), a local path or a Hugging Face name
(``OpenGVLab/InternViT-6B-448px-V2_5``, ``hf://OpenGVLab/InternVL/FILE``: fetched once into the Hub cache);
tensors keep their dtype. Tensors are
streamed: a 6B checkpoint is converted shard by shard, never held whole.
A ``.pth`` source carries no config, so ``--arch`` says which model it is when the
target is a Hugging Face directory.

``--from internvl-seg`` turns one of InternVL's released ADE20K checkpoints (mmseg 0.30) into a plain
mmseg 1.x checkpoint of our configs (``state_dict`` + ``meta``, class names and palette kept);
``--from internvl-cls`` its linear-probe head into our head-only LinearProbeClassifier checkpoint.
Our tools read both InternVL formats as they are too: converting is for other mmseg 1.x code.

    python tools/convert_checkpoint.py LORA_CKPT DST.pth --merge-lora CONFIG [--dtype {float32,bfloat16}]

``--merge-lora`` takes a LoRA run's checkpoint (adapters, neck and heads: ``iter_N.pth``) with the config it was
trained with, whose backbone's pretrained file supplies the base weights, merges each adapter into its weight
(peft's merge: ``W + alpha / rank * B @ A``) and writes a plain checkpoint of the whole model, which loads into
the config without ``lora`` (``--cfg-options model.backbone.lora=None``, or the frozen config the LoRA config
derives from). The merged linears are written in ``--dtype`` (default: the config's backbone dtype, bf16 for
the 6B LoRA configs: ``W + BA`` rounded once to bf16; ``float32`` keeps the merge unrounded).

DST is written beside itself and then renamed into place, whole: an existing DST (a file, or a
folder that is not empty) is refused unless ``--overwrite``, and then replaced, never merged into.
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

import torch  # noqa: E402

from internvit_dense.checkpoint import (FORMATS, CheckpointError, open_checkpoint, resolve_checkpoint,  # noqa: E402
                                        write_checkpoint)
from internvit_dense.checkpoint.files import atomic_destination  # noqa: E402
from internvit_dense.models.backbones import InternViT  # noqa: E402


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
    backbone_formats = [name for name, f in FORMATS.items() if not f.whole_model]
    task_formats = [name for name, f in FORMATS.items() if f.whole_model]
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument('--to', choices=backbone_formats, help='target format (of the backbone)')
    target.add_argument('--from', dest='src_format', choices=task_formats,
                        help="an InternVL task checkpoint, converted to a plain mmseg 1.x / mmengine one")
    target.add_argument('--merge-lora', metavar='CONFIG',
                        help='SRC is a LoRA checkpoint of CONFIG: write DST with the adapters merged into the weights')
    p.add_argument('--dtype', choices=['float32', 'bfloat16'],
                   help="--merge-lora: dtype of the merged weights (default: the config's backbone dtype)")
    p.add_argument('--overwrite', action='store_true', help='replace an existing DST whole')
    p.add_argument('--arch', help="'6b', '6b-448', '300m' or a JSON dict (needed for a .pth source)")
    p.add_argument('--patch-size', type=int)
    p.add_argument('--pretrain-size', type=int)
    p.add_argument('--shard-size', default=None, help='largest shard of a HF target, e.g. 5GB')
    p.add_argument('--bin', action='store_true', help='write pytorch_model*.bin instead of safetensors')
    args = p.parse_args(argv)

    try:
        args.src = resolve_checkpoint(args.src)  # a local path wins; else a Hugging Face name's cached copy
        if args.merge_lora:
            return merge_lora_checkpoint(args)
        if args.src_format:
            return convert_task_checkpoint(args)
        return convert_backbone(args, p)
    except CheckpointError as e:  # unreadable source, refused destination: the message says what to do
        raise SystemExit(f'convert_checkpoint: {e}') from None


def convert_task_checkpoint(args):
    from internvit_dense.checkpoint.model_checkpoints import (describe_recipe, read_model_checkpoint,
                                                              save_model_checkpoint)
    start = time.time()
    print(f'reading {args.src} ...', flush=True)
    ckpt = read_model_checkpoint(args.src)
    if ckpt['format'] != args.src_format:
        found = 'none of them (ours already?)' if ckpt['source_format'] is None else ckpt['format']
        raise CheckpointError(f'{args.src} is not an {args.src_format} checkpoint: its format is {found}')
    with atomic_destination(args.dst, args.overwrite) as tmp:
        save_model_checkpoint(ckpt, tmp)
    sd = ckpt['state_dict']
    print(f"converted InternVL's {describe_recipe(ckpt)} checkpoint ({args.src_format}, {len(sd)} tensors, "
          f"{sum(v.numel() for v in sd.values()) / 1e6:.1f}M parameters, dtypes as in the file) to "
          f'{args.dst} in {time.time() - start:.1f}s; its config here: '
          f"{ckpt['source_format'].suggested_config(ckpt['info'])}")


def merge_lora_checkpoint(args):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import internvit_dense.models  # noqa: F401  (registers the backbones)
    from internvit_dense.apis import build_trained
    from internvit_dense.checkpoint.model_checkpoints import save_model_checkpoint
    from internvit_dense.models.backbones.lora import merge_lora
    if not osp.isfile(args.merge_lora):
        raise CheckpointError(f'config file not found: {args.merge_lora}')
    start = time.time()
    cfg = Config.fromfile(args.merge_lora)
    if cfg.get('default_scope'):
        init_default_scope(cfg.default_scope)
    model, state = build_trained(cfg.model, args.src)  # adapters from SRC, base weights from the pretrained file
    dtype = getattr(torch, args.dtype) if args.dtype else None
    merged, records = 0, []
    for name, module in model.named_modules():
        if isinstance(module, InternViT) and module.lora is not None:
            records.append(dict(module=name, **module.lora.get_extra_state()))
            merged += merge_lora(module, dtype)
    if not merged:
        raise CheckpointError(f'{args.src} loaded into {args.merge_lora} has no LoRA adapters to merge: the config '
                              'has no backbone with lora=dict(...)')
    dtypes = sorted({str(p.dtype).replace('torch.', '') for n, p in model.named_parameters() if 'blocks.' in n
                     and n.endswith(('qkv.weight', 'proj.weight', 'fc1.weight', 'fc2.weight'))})
    meta = dict(state.get('meta') or {})
    meta['merged_lora'] = dict(source=osp.basename(args.src), config=args.merge_lora, adapters=records,
                               dtype=args.dtype or 'as the config')
    with atomic_destination(args.dst, args.overwrite) as tmp:
        save_model_checkpoint(dict(state_dict=model.state_dict(), meta=meta), tmp)
    print(f'merged {merged} LoRA layers of {args.src} into the pretrained weights of {records[0]["base_path"]} '
          f'(merged weights in {", ".join(dtypes)}); wrote {args.dst} in {time.time() - start:.1f}s: a plain '
          f'checkpoint of {args.merge_lora} without lora (--cfg-options '
          + ' '.join(f"model.{r['module']}.lora=None" for r in records) + ')')


def convert_backbone(args, p):
    start = time.time()
    print(f'reading {args.src} ...', flush=True)
    reader = open_checkpoint(args.src)
    kwargs = reader.arch() or {}
    if args.arch:
        kwargs['arch'] = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
    if 'arch' not in kwargs:
        if osp.isdir(args.src) and args.to != 'pth':
            p.error(f'{args.src} is a Hugging Face folder without a config.json, so its architecture is unknown: '
                    "put the model's config.json beside its weights, or pass --arch")
        if args.to != 'pth':
            p.error(f'{args.src} is a .pth file, which carries no config: pass --arch (6b, 6b-448, 300m or a JSON '
                    'dict) to say which model it holds')
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

    with atomic_destination(args.dst, args.overwrite) as tmp:  # refused if taken; replaced whole, never merged
        write_checkpoint(backbone_tensors(), tmp, fmt=args.to, arch=arch, safetensors=not args.bin,
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
