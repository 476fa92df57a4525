"""Issue 11: weights in the dtype the user asks for, straight from the checkpoint's tensors."""
import pytest
import torch
from conftest import TINY_300M, TINY_6B, tiny_vit

from internvit_dense.checkpoint import FORMAT_OPENGVLAB_HF, FORMAT_PTH, FORMAT_TRANSFORMERS, save_checkpoint
from internvit_dense.checkpoint import loading
from internvit_dense.models.backbones import InternViT

NORMS = ('norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias', 'q_norm.weight', 'k_norm.weight')


def is_norm(name):
    return name.endswith(NORMS)


def expected_dtype(name, dtype):
    return torch.float32 if is_norm(name) else dtype


@pytest.fixture
def seen(monkeypatch):
    """(name, dtype as read from the file, dtype handed to load_state_dict) for every tensor filled."""
    record = []
    real_assign = loading.assign_tensor
    real_load = torch.nn.Module.load_state_dict

    def assign(module, name, value):
        record.append([name, value.dtype, None])
        return real_assign(module, name, value)

    def load(self, state_dict, *args, **kwargs):
        if record and record[-1][2] is None:
            record[-1][2] = next(iter(state_dict.values())).dtype
        return real_load(self, state_dict, *args, **kwargs)

    monkeypatch.setattr('internvit_dense.models.backbones.internvit.assign_tensor', assign)
    monkeypatch.setattr(torch.nn.Module, 'load_state_dict', load)
    return record


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
@pytest.mark.parametrize('fmt', [FORMAT_PTH, FORMAT_OPENGVLAB_HF, FORMAT_TRANSFORMERS])
def test_bf16_checkpoint_fills_bf16_weights_without_widening(tmp_path, seen, arch, fmt):
    src = tiny_vit(arch).to(torch.bfloat16)
    path = tmp_path / ('c.pth' if fmt == FORMAT_PTH else 'hf')
    save_checkpoint(src, path, fmt=fmt, max_shard_bytes=None if fmt == FORMAT_PTH else 20_000)
    kwargs = {} if fmt != FORMAT_PTH else dict(arch=dict(arch), pretrain_size=56)
    model = InternViT.from_pretrained(str(path), dtype=torch.bfloat16, frozen=True, **kwargs)
    assert len(seen) == len(dict(model.named_parameters()))
    for name, from_file, filled in seen:
        assert from_file == torch.bfloat16, name  # the file's tensors, untouched
        # only the norm weights (0.01% of the 6B's parameters) are widened: they are kept in fp32
        assert filled == expected_dtype(name, torch.bfloat16), (name, filled)
    for name, p in model.named_parameters():
        assert p.dtype == expected_dtype(name, torch.bfloat16), name
        assert torch.equal(p.to(torch.bfloat16), src.state_dict()[name]), name
        assert not p.requires_grad


def test_fp32_checkpoint_narrows_to_bf16(tmp_path, seen):
    src = tiny_vit(TINY_6B)
    save_checkpoint(src, tmp_path / 'hf', fmt=FORMAT_TRANSFORMERS, max_shard_bytes=20_000)
    model = InternViT.from_pretrained(str(tmp_path / 'hf'), dtype='bfloat16')
    for name, from_file, filled in seen:
        assert from_file == torch.float32 and filled == expected_dtype(name, torch.bfloat16), name
    for name, p in model.named_parameters():
        assert p.dtype == expected_dtype(name, torch.bfloat16), name
        torch.testing.assert_close(p, src.state_dict()[name].to(p.dtype), atol=0, rtol=0)


def test_pretrained_into_a_built_bf16_model_keeps_its_dtype(tmp_path):
    """init_cfg=Pretrained on a model built in memory (training): copied in, dtype kept."""
    src = tiny_vit(TINY_6B)
    save_checkpoint(src, tmp_path / 'c.pth')
    model = InternViT(arch=dict(TINY_6B), pretrain_size=56, dtype='bf16',
                      init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'c.pth')))
    before = {n: p for n, p in model.named_parameters()}
    model.init_weights()
    for name, p in model.named_parameters():
        assert p is before[name] and p.dtype == expected_dtype(name, torch.bfloat16)
        torch.testing.assert_close(p, src.state_dict()[name].to(p.dtype), atol=0, rtol=0)


def test_built_in_bf16_never_in_fp32(monkeypatch):
    made = []
    real = torch.nn.Parameter.__new__

    def record(cls, data=None, requires_grad=True):
        made.append(data.dtype)
        return real(cls, data, requires_grad)

    monkeypatch.setattr(torch.nn.Parameter, '__new__', record)
    model = InternViT(arch=dict(TINY_6B), dtype='bfloat16')
    assert made.count(torch.float32) == 4 * TINY_6B['depth']  # norm1, norm2, q_norm, k_norm: nothing else
    assert {p.dtype for n, p in model.named_parameters() if not is_norm(n)} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
def test_frozen_bf16_forward_dtype_and_accuracy(arch):
    ref = tiny_vit(arch, out_indices=(0, -1), frozen=True)
    half = tiny_vit(arch, out_indices=(0, -1), frozen=True)
    half.to(torch.bfloat16)
    for name, p in half.named_parameters():  # as dtype='bfloat16' holds them: norm weights in fp32
        if is_norm(name):
            p.data = p.data.float()
    x = torch.randn(2, 3, 56, 70)
    out32, out16 = ref(x), half(x)
    for a, b in zip(out32, out16):
        assert b.dtype == torch.float32  # fp32 images -> fp32 features for the fp32 head
        assert torch.isfinite(b).all()
        # bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); errors of a few steps accumulate per block
        torch.testing.assert_close(b, a, atol=0.05 * a.abs().max().item(), rtol=0.05)
    assert half(x.to(torch.bfloat16))[0].dtype == torch.bfloat16  # bf16 images (DeepSpeed bf16) -> bf16
    assert not any(p.grad is not None for p in half.parameters())


def test_dtype_from_config():
    from mmengine.registry import MODELS

    import internvit_dense.models  # noqa: F401
    model = MODELS.build(dict(type='InternViT', arch=dict(TINY_6B), dtype='bfloat16', frozen=True))
    assert model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.blocks[0].norm1.weight.dtype == torch.float32
    with pytest.raises(ValueError, match='unknown dtype'):
        InternViT(arch=dict(TINY_6B), dtype='bf12')


def test_from_pretrained_never_random_inits(tmp_path, monkeypatch):
    """The path of tools/linear_probe.py extract and of library users: built on meta, filled from the file."""
    save_checkpoint(tiny_vit(TINY_6B), tmp_path / 'hf', fmt=FORMAT_OPENGVLAB_HF)

    def refuse(self):
        raise AssertionError('random init called')

    monkeypatch.setattr(InternViT, '_random_init', refuse)
    model = InternViT.from_pretrained(str(tmp_path / 'hf'), dtype='bfloat16', frozen=True)
    assert model.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
