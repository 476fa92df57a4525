"""Mask2Former on InternViT: the slide-inference fix of mmseg's head, the adapter that never injects into the
ViT, and the 6B configs built on the meta device."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401
from internvit_dense.models.backbones import InternViTAdapter

TINY = 'configs/mask2former/tiny/tiny_adapter_mask2former_frozen_synthetic.py'


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # tiny ops on a shared 2-core machine: one thread avoids OpenMP threads spinning against each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




# ------------------------------------------------------------------ slide inference
def tiny_segmentor(head_type=None):
    cfg = Config.fromfile(TINY)
    # mmseg's Mask2Former configs pad test images to a multiple of 32 (data_preprocessor test_cfg): the case in
    # which mmseg's own head resizes a window's logits to the whole padded image (mmsegmentation issue 3666)
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)
    if head_type:
        cfg.model.decode_head.type = head_type
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def predict(model, image, mode):
    from mmseg.structures import SegDataSample
    model.test_cfg.mode = mode
    # tuples, as PackSegInputs gives them (a torch.Size img_shape is how slide inference marks a window)
    shape = tuple(image.shape[1:])
    sample = SegDataSample(metainfo=dict(ori_shape=shape, img_shape=shape))
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0].seg_logits.data


def test_slide_logits_have_the_window_size_and_equal_whole_inference_where_one_window_covers_the_image():
    model = tiny_segmentor()
    g = torch.Generator().manual_seed(0)
    # 100 x 150 pads to 128 x 160: slide runs 112 x 112 windows at stride 72 (2 x 2 of them)
    image = torch.randint(0, 256, (3, 100, 150), generator=g, dtype=torch.uint8)
    logits = predict(model, image, 'slide')
    assert logits.shape == (150, 100, 150)
    assert torch.isfinite(logits).all()
    # one window covers an 80 x 90 image (padded to 96 x 96): slide is whole-image inference
    image = torch.randint(0, 256, (3, 80, 90), generator=g, dtype=torch.uint8)
    slide, whole = predict(model, image, 'slide'), predict(model, image, 'whole')
    assert slide.shape == whole.shape == (150, 80, 90)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-6)


def test_mmseg_head_alone_gets_slide_inference_wrong():
    """The regression the subclass fixes, shown on mmseg's own head (if mmseg fixes it, this test says so)."""
    model = tiny_segmentor(head_type='Mask2FormerHead')
    image = torch.randint(0, 256, (3, 100, 150), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match='size'):
        predict(model, image, 'slide')


# ------------------------------------------------------------------ the adapter that does not inject
TINY_VIT = dict(arch=dict(embed_dims=32, depth=4, num_heads=2, mlp_dims=64), img_size=56, pretrain_size=56)


def saved_for_backward(model: InternViTAdapter, images):
    """Tensors autograd saved for backward while inside a ViT module (patch embedding, blocks), and the loss."""
    inside, saved = [0], []
    vit_parts = [model.vit.patch_embed, *model.vit.blocks]
    hooks = [m.register_forward_pre_hook(lambda *_: inside.__setitem__(0, inside[0] + 1)) for m in vit_parts]
    hooks += [m.register_forward_hook(lambda *_: inside.__setitem__(0, inside[0] - 1)) for m in vit_parts]

    def pack(t):
        if inside[0]:
            saved.append(tuple(t.shape))
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(images)
            loss = sum(o.float().square().mean() for o in outs)
    finally:
        for h in hooks:
            h.remove()
    return saved, loss


@pytest.mark.parametrize('inject', [True, False])
def test_adapter_without_injection_saves_no_vit_activation(inject):
    torch.manual_seed(0)
    model = InternViTAdapter(vit=dict(TINY_VIT, frozen=True), num_heads=2, conv_inplanes=8, inject=inject).train()
    saved, loss = saved_for_backward(model, torch.randn(2, 3, 56, 70))
    if inject:  # the control: injected tokens carry a graph through the frozen blocks
        assert saved, 'no ViT activation saved with injection: the probe does not see the ViT'
        assert all(i.injector is not None for i in model.interactions)
        return
    assert saved == [], f'{len(saved)} ViT activations saved for backward, e.g. {saved[:3]}'
    assert all(i.injector is None for i in model.interactions)
    assert not any('injector' in n for n, _ in model.named_parameters())
    loss.backward()
    # the adapter still learns: spatial prior and extractors get gradients, the ViT none
    assert model.spm.projs[0].weight.grad is not None and model.interactions[-1].extractor.attn.value_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vit.parameters())


def test_adapter_without_injection_feeds_the_pretrained_features_unchanged():
    """With inject=False the ViT tokens the extractors read are the plain ViT's block outputs."""
    torch.manual_seed(0)
    model = InternViTAdapter(vit=dict(TINY_VIT, frozen=True), num_heads=2, conv_inplanes=8, inject=False).eval()
    images = torch.randn(1, 3, 56, 56)
    seen = []
    for i in model.interactions:
        i.extractor.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    with torch.no_grad():
        model(images)
        plain = model.vit.get_intermediate_layers(images, [0, 1, 2, 3])
    for got, expected in zip(seen, plain):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
