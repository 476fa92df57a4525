"""InternVL's released task checkpoints, restated from its code for the tests: key names, shapes and dtypes
of each file, and its forward, written independently of our modules (plain torch.nn.functional).

Sources (OpenGVLab/InternVL): segmentation/mmseg_custom/models/backbones/intern_vit_6b.py (InternViT6B,
with_fpn pyramid up1..up4), segmentation/mmseg_custom/models/decode_heads/fcn_head.py (FCNHead with_norm),
mmseg 0.30's UPerHead/PPM/FCNHead (UperNet and auxiliary heads), segmentation/mmcv_custom ToBFloat16Hook
(backbone in bf16, heads in fp32), segmentation/configs/intern_vit_6b/** (the recipes);
classification/models/intern_vit_6b.py (cls_patch_concat: SyncBatchNorm(2C, eps=1e-6) + Linear) and
classification/release.py (the head file keeps model.norm.* / model.head.* beside the training config).
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

BF16, FP32, I64 = torch.bfloat16, torch.float32, torch.int64


# ------------------------------------------------------------------ key lists
def backbone_keys(C, depth, mlp, grid, patch=14, prefix='backbone.'):
    """InternViT6B: cls_token, pos_embed at the build grid (1 + grid^2), patch_embed.proj, blocks with RMSNorm
    norm1/norm2, qkv without bias, q_norm/k_norm over all C channels, proj with bias, ls1/ls2.gamma, mlp fc1/fc2."""
    keys = OrderedDict()
    keys[prefix + 'pos_embed'] = ((1, 1 + grid * grid, C), BF16)
    keys[prefix + 'cls_token'] = ((1, 1, C), BF16)
    keys[prefix + 'patch_embed.proj.weight'] = ((C, 3, patch, patch), BF16)
    keys[prefix + 'patch_embed.proj.bias'] = ((C,), BF16)
    for i in range(depth):
        b = f'{prefix}blocks.{i}.'
        keys[b + 'norm1.weight'] = ((C,), BF16)
        keys[b + 'attn.qkv.weight'] = ((3 * C, C), BF16)
        keys[b + 'attn.proj.weight'] = ((C, C), BF16)
        keys[b + 'attn.proj.bias'] = ((C,), BF16)
        keys[b + 'attn.q_norm.weight'] = ((C,), BF16)
        keys[b + 'attn.k_norm.weight'] = ((C,), BF16)
        keys[b + 'ls1.gamma'] = ((C,), BF16)
        keys[b + 'norm2.weight'] = ((C,), BF16)
        keys[b + 'mlp.fc1.weight'] = ((mlp, C), BF16)
        keys[b + 'mlp.fc1.bias'] = ((mlp,), BF16)
        keys[b + 'mlp.fc2.weight'] = ((C, mlp), BF16)
        keys[b + 'mlp.fc2.bias'] = ((C,), BF16)
        keys[b + 'ls2.gamma'] = ((C,), BF16)
    return keys


def pyramid_keys(C):
    """with_fpn=True, with_final_norm=False: up1 = [ConvT, LayerNorm, GELU, ConvT, Identity], up2 = [ConvT,
    Identity], up3/up4 parameter-free; part of the backbone, so bf16."""
    keys = OrderedDict()
    for name in ('up1.0', 'up1.3', 'up2.0'):
        keys[f'backbone.{name}.weight'] = ((C, C, 2, 2), BF16)
        keys[f'backbone.{name}.bias'] = ((C,), BF16)
    keys['backbone.up1.1.weight'] = ((C,), BF16)
    keys['backbone.up1.1.bias'] = ((C,), BF16)
    return keys


def bn_keys(prefix, C):
    return OrderedDict([(prefix + 'weight', ((C,), FP32)), (prefix + 'bias', ((C,), FP32)),
                        (prefix + 'running_mean', ((C,), FP32)), (prefix + 'running_var', ((C,), FP32)),
                        (prefix + 'num_batches_tracked', ((), I64))])


def conv_module_keys(prefix, cin, cout, k):
    """mmcv ConvModule with a norm: conv without bias, then 'bn'."""
    keys = OrderedDict([(prefix + 'conv.weight', ((cout, cin, k, k), FP32))])
    keys.update(bn_keys(prefix + 'bn.', cout))
    return keys


def linear_head_keys(C, num_classes):
    """FCNHead(num_convs=0, concat_input=False, with_norm=True): self.norm = SyncBatchNorm(C), then conv_seg.
    (Its constructor builds a ConvModule in a local list even for num_convs=0, but registers nn.Identity.)"""
    keys = bn_keys('decode_head.norm.', C)
    keys['decode_head.conv_seg.weight'] = ((num_classes, C, 1, 1), FP32)
    keys['decode_head.conv_seg.bias'] = ((num_classes,), FP32)
    return keys


def upernet_head_keys(C, ch, aux_ch, num_classes, pool_scales=(1, 2, 3, 6)):
    keys = OrderedDict()
    for i, _ in enumerate(pool_scales):  # PPM: Sequential(AdaptiveAvgPool2d, ConvModule 1x1)
        keys.update(conv_module_keys(f'decode_head.psp_modules.{i}.1.', C, ch, 1))
    keys.update(conv_module_keys('decode_head.bottleneck.', C + len(pool_scales) * ch, ch, 3))
    for i in range(3):
        keys.update(conv_module_keys(f'decode_head.lateral_convs.{i}.', C, ch, 1))
    for i in range(3):
        keys.update(conv_module_keys(f'decode_head.fpn_convs.{i}.', ch, ch, 3))
    keys.update(conv_module_keys('decode_head.fpn_bottleneck.', 4 * ch, ch, 3))
    keys['decode_head.conv_seg.weight'] = ((num_classes, ch, 1, 1), FP32)
    keys['decode_head.conv_seg.bias'] = ((num_classes,), FP32)
    # auxiliary FCNHead(num_convs=1, concat_input=False), with_norm off: one 3x3 ConvModule, conv_seg
    keys.update(conv_module_keys('auxiliary_head.convs.0.', C, aux_ch, 3))
    keys['auxiliary_head.conv_seg.weight'] = ((num_classes, aux_ch, 1, 1), FP32)
    keys['auxiliary_head.conv_seg.bias'] = ((num_classes,), FP32)
    return keys


def seg_file_keys(recipe, C, depth, mlp, grid=36, num_classes=150, ch=None, aux_ch=None):
    keys = backbone_keys(C, depth, mlp, grid)
    if recipe == 'linear':
        keys.update(linear_head_keys(C, num_classes))
    else:
        keys.update(pyramid_keys(C))
        keys.update(upernet_head_keys(C, ch, aux_ch, num_classes))
    return keys


def cls_head_keys(C, num_classes=1000):
    """classification: norm = SyncBatchNorm(2C, eps=1e-6) (affine), head = Linear(2C, num_classes); fp32."""
    keys = bn_keys('norm.', 2 * C)
    keys['head.weight'] = ((num_classes, 2 * C), FP32)
    keys['head.bias'] = ((num_classes,), FP32)
    return keys


def random_state(keys, seed=0):
    """Random values of each key's shape and dtype; norms and layer scales near 1, variances positive."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, (shape, dtype) in keys.items():
        if dtype == I64:
            out[name] = torch.tensor(1000, dtype=I64)
            continue
        x = torch.randn(shape, generator=g)
        if name.endswith('running_var'):
            x = 0.5 + x.abs()
        elif name.endswith(('norm1.weight', 'norm2.weight', 'q_norm.weight', 'k_norm.weight', 'gamma')) or (
                name.endswith('.weight') and len(shape) == 1):
            x = 1.0 + 0.2 * x
        elif name.endswith(('pos_embed', 'cls_token')):
            x = 0.5 * x
        elif name.endswith('.weight'):
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            x = x / math.sqrt(fan_in)
        else:
            x = 0.1 * x
        out[name] = x.to(dtype)
    return out


# ------------------------------------------------------------------ their forward, restated
def _rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def internvit6b_blocks(sd, x, num_heads, out_indices, prefix='backbone.', patch=14):
    """InternViT6B.forward up to the selected blocks: patch embed, cls token, + pos_embed as built (no resize),
    pre-norm blocks (RMSNorm, attention with qk-norm over all channels before the head split, layer scale),
    the outputs of ``out_indices`` as (B, C, H, W) maps with the cls token removed."""
    p = lambda k: sd[prefix + k].float()  # noqa: E731
    x = F.conv2d(x, p('patch_embed.proj.weight'), p('patch_embed.proj.bias'), stride=patch)
    B, C, H, W = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([p('cls_token').expand(B, -1, -1), x], dim=1) + p('pos_embed')
    depth = 1 + max(int(k[len(prefix):].split('.')[1]) for k in sd if k.startswith(prefix + 'blocks.'))
    outs = []
    for i in range(depth):
        b = lambda k: p(f'blocks.{i}.{k}')  # noqa: E731
        h = _rms(x, b('norm1.weight'))
        N = h.shape[1]
        qkv = (h @ b('attn.qkv.weight').t()).reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = _rms(q.transpose(1, 2).flatten(-2), b('attn.q_norm.weight')).view(B, N, num_heads, -1).transpose(1, 2)
        k = _rms(k.transpose(1, 2).flatten(-2), b('attn.k_norm.weight')).view(B, N, num_heads, -1).transpose(1, 2)
        attn = ((q * (C // num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(B, N, C) @ b('attn.proj.weight').t() + b('attn.proj.bias')
        x = x + a * b('ls1.gamma')
        h = _rms(x, b('norm2.weight'))
        h = F.gelu(h @ b('mlp.fc1.weight').t() + b('mlp.fc1.bias')) @ b('mlp.fc2.weight').t() + b('mlp.fc2.bias')
        x = x + h * b('ls2.gamma')
        if i in out_indices:
            outs.append(x[:, 1:].reshape(B, H, W, C).permute(0, 3, 1, 2))
    return outs, x


def internvl_pyramid(sd, outs):
    """up1 = ConvT -> LayerNorm over channels (fp32, eps 1e-6) -> GELU -> ConvT; up2 = ConvT; up3 = identity;
    up4 = MaxPool(2)."""
    p = lambda k: sd['backbone.' + k].float()  # noqa: E731
    x = F.conv_transpose2d(outs[0], p('up1.0.weight'), p('up1.0.bias'), stride=2)
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + 1e-6)
    x = p('up1.1.weight')[:, None, None] * x + p('up1.1.bias')[:, None, None]
    x = F.conv_transpose2d(F.gelu(x), p('up1.3.weight'), p('up1.3.bias'), stride=2)
    f2 = F.conv_transpose2d(outs[1], p('up2.0.weight'), p('up2.0.bias'), stride=2)
    return [x, f2, outs[2], F.max_pool2d(outs[3], 2, 2)]


def _bn(sd, prefix, x, eps=1e-5):
    return F.batch_norm(x, sd[prefix + 'running_mean'].float(), sd[prefix + 'running_var'].float(),
                        sd[prefix + 'weight'].float(), sd[prefix + 'bias'].float(), False, 0.0, eps)


def _conv_module(sd, prefix, x, padding):
    return F.relu(_bn(sd, prefix + 'bn.', F.conv2d(x, sd[prefix + 'conv.weight'].float(), padding=padding)))


def _cls_seg(sd, prefix, x):
    return F.conv2d(x, sd[prefix + 'conv_seg.weight'].float(), sd[prefix + 'conv_seg.bias'].float())


def internvl_linear_head(sd, feat):
    """FCNHead(num_convs=0, with_norm=True).forward: fp32, norm (BatchNorm, eval), dropout 0, conv_seg."""
    return _cls_seg(sd, 'decode_head.', _bn(sd, 'decode_head.norm.', feat))


def _resize(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def internvl_upernet_head(sd, feats, pool_scales=(1, 2, 3, 6)):
    """mmseg 0.30 UPerHead: PPM on the last level + bottleneck, lateral 1x1 convs, top-down sum, 3x3 FPN convs,
    all levels resized to the first, fpn_bottleneck, conv_seg (dropout off in eval)."""
    d = 'decode_head.'
    x = feats[3]
    psp = [x] + [_resize(_conv_module(sd, f'{d}psp_modules.{i}.1.', F.adaptive_avg_pool2d(x, s), 0), x.shape[2:])
                 for i, s in enumerate(pool_scales)]
    laterals = [_conv_module(sd, f'{d}lateral_convs.{i}.', feats[i], 0) for i in range(3)]
    laterals.append(_conv_module(sd, f'{d}bottleneck.', torch.cat(psp, 1), 1))
    for i in range(3, 0, -1):
        laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
    outs = [_conv_module(sd, f'{d}fpn_convs.{i}.', laterals[i], 1) for i in range(3)] + [laterals[3]]
    outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
    return _cls_seg(sd, d, _conv_module(sd, f'{d}fpn_bottleneck.', torch.cat(outs, 1), 1))


def internvl_aux_head(sd, feats, in_index=1):
    """The auxiliary FCNHead(num_convs=1, concat_input=False), no norm: 3x3 ConvModule, conv_seg."""
    return _cls_seg(sd, 'auxiliary_head.', _conv_module(sd, 'auxiliary_head.convs.0.', feats[in_index], 1))


def internvl_classifier(backbone_sd, head_sd, x, num_heads):
    """classification InternViT6B.forward with cls_target='cls_patch_concat': all blocks, [cls || mean patch],
    norm (SyncBatchNorm eps 1e-6, eval), head (Linear)."""
    _, tokens = internvit6b_blocks(backbone_sd, x, num_heads, out_indices=[], prefix='')
    feat = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1)
    feat = F.batch_norm(feat, head_sd['norm.running_mean'], head_sd['norm.running_var'], head_sd['norm.weight'],
                        head_sd['norm.bias'], False, 0.0, 1e-6)
    return feat @ head_sd['head.weight'].t() + head_sd['head.bias']


# ------------------------------------------------------------------ the classification head's container
def write_cls_head_file(path, head_sd, img_size, depth, embed_dims, num_heads, pretrained, monkeypatch, mlp_ratio=4):
    """As classification/release.py leaves it: {'model': {norm.*, head.*}, 'lr_scheduler', 'max_accuracy', 'epoch',
    'config': yacs CfgNode}. The CfgNode is pickled from a stand-in 'yacs.config' module, which is then made
    unimportable: loading must not need yacs."""
    import sys
    import types
    yacs = types.ModuleType('yacs')
    yacs_config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__['__immutable__'] = True

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    yacs_config.CfgNode = CfgNode
    yacs.config = yacs_config
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', yacs_config)
    cfg = CfgNode(DATA=CfgNode(IMG_SIZE=img_size, BATCH_SIZE=128),
                  MODEL=CfgNode(TYPE='intern_vit_6b', NUM_CLASSES=int(head_sd['head.weight'].shape[0]),
                                INTERN_VIT_6B=CfgNode(DEPTH=depth, EMBED_DIM=embed_dims, NUM_HEADS=num_heads,
                                                      MLP_RATIO=mlp_ratio, QK_NORMALIZATION=True, QKV_BIAS=False,
                                                      PRETRAINED=pretrained, CLS_TARGET='cls_patch_concat',
                                                      FREEZE_VIT=True)))
    torch.save(dict(model=head_sd, lr_scheduler=dict(last_epoch=10), max_accuracy=88.2, epoch=9, config=cfg), path)
    monkeypatch.setitem(sys.modules, 'yacs', None)  # import yacs now fails, as where yacs is not installed
    monkeypatch.setitem(sys.modules, 'yacs.config', None)
