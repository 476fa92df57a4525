import pytest
import torch
from conftest import TINY_6B, tiny_vit

import internvit_dense.models.backbones.internvit as internvit_mod
from internvit_dense.models.backbones import InternViT

PUBLISHED = {'6b': 5.9e9, '6b-448': 5.54e9, '300m': 304e6}


@pytest.mark.parametrize('arch', sorted(PUBLISHED))
def test_presets_on_meta_match_published_sizes(arch):
    with torch.device('meta'):
        model = InternViT(arch=arch)
    n = sum(p.numel() for p in model.parameters())
    print(f'{arch}: {n / 1e9:.4f}B parameters')
    assert abs(n - PUBLISHED[arch]) / PUBLISHED[arch] < 0.01
    assert all(p.is_meta for p in model.parameters())


def test_6b_shapes_on_meta():
    with torch.device('meta'):
        model = InternViT(arch='6b')
    assert model.pos_embed.shape == (1, 257, 3200)
    assert model.patch_embed.proj.weight.shape == (3200, 3, 14, 14)
    blk = model.blocks[47]
    assert blk.attn.qkv.weight.shape == (9600, 3200) and blk.attn.qkv.bias is None
    assert blk.attn.q_norm.weight.shape == (3200,) and blk.mlp.fc1.weight.shape == (12800, 3200)
    assert len(model.blocks) == 48 and blk.attn.num_heads == 25


def _run(model, x):
    out = model.forward_features(x)
    out.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return out.detach(), grads


@pytest.mark.parametrize('variant', [dict(attn_impl='sdpa'), dict(attn_impl='auto'), dict(with_cp=True)])
def test_variants_equal_eager_outputs_and_grads(variant):
    x = torch.randn(2, 3, 56, 70)
    ref_out, ref_grads = _run(tiny_vit(TINY_6B, attn_impl='eager').train(), x)
    model = tiny_vit(TINY_6B, **{'attn_impl': 'eager', **variant}).train()
    if variant.get('with_cp'):
        calls = []
        orig = torch.utils.checkpoint.checkpoint
        internvit_mod.cp.checkpoint = lambda *a, **k: calls.append(1) or orig(*a, **k)
        try:
            out, grads = _run(model, x)
        finally:
            internvit_mod.cp.checkpoint = orig
        assert len(calls) == model.depth  # every block was checkpointed
    else:
        out, grads = _run(model, x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-5, rtol=1e-4)


def test_auto_dispatch_picks_sdpa_on_cpu():
    x = torch.randn(1, 4, 8)
    assert internvit_mod.select_attn_impl('auto', x) == 'sdpa'
    assert internvit_mod.select_attn_impl('auto', x.bfloat16()) == 'sdpa'


def test_flash_requested_where_it_cannot_run_is_a_clear_error():
    model = tiny_vit(TINY_6B, attn_impl='flash')
    with pytest.raises(RuntimeError, match="attn_impl='flash' cannot run"):
        model.forward_features(torch.randn(1, 3, 56, 56))


def test_flash_dispatch_calls_flash_attn_func(monkeypatch):
    """A stand-in takes flash-attn's place: this checks the dispatch and the (B, N, H, D)
    layout handed to it, not the kernel, which cannot run here."""
    calls = []

    def stand_in(q, k, v, softmax_scale):
        calls.append((q.shape, softmax_scale))
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale)
        return out.transpose(1, 2)

    monkeypatch.setattr(internvit_mod, 'flash_attn_func', stand_in)
    monkeypatch.setattr(internvit_mod, 'flash_usable', lambda x: True)
    x = torch.randn(2, 3, 56, 56)
    ref = tiny_vit(TINY_6B, attn_impl='eager').forward_features(x)
    out = tiny_vit(TINY_6B, attn_impl='auto').forward_features(x)
    assert len(calls) == TINY_6B['depth']
    head_dim = TINY_6B['embed_dims'] // TINY_6B['num_heads']
    assert calls[0][0] == (2, 17, TINY_6B['num_heads'], head_dim) and calls[0][1] == pytest.approx(head_dim ** -0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_frozen_means_no_grads_no_graph_and_eval_mode():
    model = tiny_vit(TINY_6B, frozen=True, drop_path_rate=0.5)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 56, 56, requires_grad=True)
    feats = model(x)
    assert all(f.grad_fn is None and not f.requires_grad for f in feats)
    # eval mode for real: drop path off, so two calls agree
    torch.testing.assert_close(model(x)[0], feats[0])


def test_any_input_size():
    model = tiny_vit(TINY_6B)
    assert model(torch.randn(1, 3, 61, 100))[0].shape == (1, TINY_6B['embed_dims'], 4, 7)


def test_drop_path_rises_linearly():
    model = InternViT(arch=dict(TINY_6B, depth=5), drop_path_rate=0.4, img_size=56, pretrain_size=56)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_window_attention_covering_the_image_equals_global():
    x = torch.randn(2, 3, 56, 70)  # a 4x5 grid
    ref = tiny_vit(TINY_6B, attn_impl='eager').get_intermediate_layers(x)[0]
    windowed = tiny_vit(TINY_6B, attn_impl='eager', window_size=5).get_intermediate_layers(x)[0]
    torch.testing.assert_close(windowed, ref, atol=1e-5, rtol=1e-5)
    # a smaller window does change the result, padded grid included
    small = tiny_vit(TINY_6B, attn_impl='eager', window_size=3).get_intermediate_layers(x)[0]
    assert small.shape == ref.shape and not torch.allclose(small, ref, atol=1e-3)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(KeyError, match='unknown InternViT arch'):
        InternViT(arch='7b')
    with pytest.raises(IndexError, match=f"outside the {TINY_6B['depth']} blocks"):
        tiny_vit(TINY_6B, out_indices=(TINY_6B['depth'],))
    with pytest.raises(ValueError, match='attn_impl'):
        tiny_vit(TINY_6B, attn_impl='xformers')
    model = tiny_vit(TINY_6B)
    with pytest.raises(ValueError, match='smaller than one 14px patch'):
        model(torch.randn(1, 3, 10, 10))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 56, 56))


def test_registered_in_mmseg_and_mmdet():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    for registry in (SEG, DET):
        model = registry.build(dict(type='InternViT', arch=dict(TINY_6B), img_size=56, pretrain_size=56))
        assert isinstance(model, InternViT)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_rms_norm_function_forward_is_torchs_and_its_backward_is_the_calculus(dtype):
    """The hand-written backward of RmsNormFp32StatsFunction: its forward bit-equals torch's rms_norm composite
    (fp32 statistics, cast, weight applied in the compute dtype: the released model's InternRMSNorm); its
    gradients equal autograd's of that composite, and in float64 torch's numerical gradcheck."""
    norm = internvit_mod.make_norm('rms_norm', 48, 1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48) * 0.1 + 1)
    norm = norm.to(dtype)
    x = (torch.randn(2, 5, 48) * 3).to(dtype)
    g = torch.randn(2, 5, 48).to(dtype)

    def composite(x, w):
        return torch.nn.functional.rms_norm(x.float(), (48,), eps=1e-6).to(x.dtype) * w.to(x.dtype)

    xa, wa = x.clone().requires_grad_(), norm.weight.detach().clone().requires_grad_()
    expected = composite(xa, wa)
    expected.backward(g)
    xb = x.clone().requires_grad_()
    got = norm(xb)
    got.backward(g)
    assert torch.equal(got, expected)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.02, rtol=0.02)
    torch.testing.assert_close(xb.grad, xa.grad, **tol)
    torch.testing.assert_close(norm.weight.grad, wa.grad, **tol)
    x64 = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    w64 = (torch.randn(7, dtype=torch.float64) + 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: internvit_mod.RmsNormFp32StatsFunction.apply(x, w, 1e-6), (x64, w64))


def test_patch_embedding_gemm_equals_timms_conv():
    """PatchEmbedGemm computes timm's PatchEmbed (a strided conv) as one GEMM over the patches: same output and
    same weight gradient, any grid (not square, not the built size)."""
    from timm.layers import PatchEmbed
    conv = PatchEmbed(28, 14, 3, 32, strict_img_size=False, dynamic_img_pad=False).double()
    gemm = internvit_mod.PatchEmbedGemm(28, 14, 3, 32, strict_img_size=False, dynamic_img_pad=False).double()
    gemm.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 42, 70, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()  # images needing gradients too, for once
    a, b = conv(xa), gemm(xb)
    torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-12)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    for p, q in zip(conv.parameters(), gemm.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-10, rtol=1e-10)
    assert torch.autograd.gradcheck(
        lambda x, w, b: internvit_mod.PatchGemmFunction.apply(x, w, b, (14, 14)),
        (torch.randn(1, 2, 28, 14, dtype=torch.float64, requires_grad=True),
         torch.randn(3, 2, 14, 14, dtype=torch.float64, requires_grad=True),
         torch.randn(3, dtype=torch.float64, requires_grad=True)))
    with pytest.raises(ValueError, match='whole 14x14 patches'):
        gemm(torch.randn(1, 3, 30, 28, dtype=torch.float64))


def test_rms_norm_runs_its_function_on_a_cpu_and_torchs_fused_kernel_elsewhere(monkeypatch):
    """The hand-written backward pays on a CPU, where torch's rms_norm is a composite; on a GPU torch's is one
    fused kernel each way. The dispatch, seen on the meta device (no GPU here: nothing claims a kernel ran)."""
    calls = []
    real = internvit_mod.RmsNormFp32StatsFunction.apply
    monkeypatch.setattr(internvit_mod.RmsNormFp32StatsFunction, 'apply', lambda *a: calls.append(1) or real(*a))
    norm = internvit_mod.make_norm('rms_norm', 16, 1e-6).to(torch.bfloat16)
    assert norm(torch.randn(2, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16 and calls == [1]
    out = norm.to('meta')(torch.randn(2, 16, dtype=torch.bfloat16, device='meta'))
    assert (out.dtype, out.device.type, calls) == (torch.bfloat16, 'meta', [1])


def test_patch_embedding_gemm_under_bf16_autocast_gives_each_gradient_in_its_dtype():
    """Under autocast the GEMM runs in bf16 (as F.linear's would) and the fp32 weights get fp32 gradients."""
    from timm.layers import PatchEmbed
    conv = PatchEmbed(28, 14, 3, 16, strict_img_size=False, dynamic_img_pad=False)
    gemm = internvit_mod.PatchEmbedGemm(28, 14, 3, 16, strict_img_size=False, dynamic_img_pad=False)
    gemm.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 28, 42)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a, b = conv(x), gemm(x)
    assert b.dtype == a.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), a.float(), atol=0.05, rtol=0.02)
    (a.float() ** 2).sum().backward()
    (b.float() ** 2).sum().backward()
    for p, q in zip(conv.parameters(), gemm.parameters()):
        assert q.grad.dtype == p.grad.dtype == torch.float32
        torch.testing.assert_close(q.grad, p.grad, atol=0.05 * p.grad.abs().max().item(), rtol=0.05)
