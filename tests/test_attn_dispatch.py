"""The attention kernel InternViT picks (issue 19): decided on the q/k/v the kernel gets and on the GPU's
compute capability. flash-attn and CUDA cannot run here: stand-ins take their place (a query that says
it is on CUDA, a capability, a kernel), and the tests check the decision, not the kernels."""
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_6B, tiny_vit

from internvit_dense.models.backbones import internvit

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def query(dtype, cuda=True):
    """Stands for q: all the decision reads is where it lives and its dtype."""
    return SimpleNamespace(is_cuda=cuda, dtype=dtype, device=SimpleNamespace(type='cuda' if cuda else 'cpu'))


@pytest.fixture
def card(monkeypatch):
    """flash-attn 'installed' and a GPU of the given compute capability."""
    def set_card(capability, installed=True):
        monkeypatch.setattr(internvit, 'flash_attn_func', object() if installed else None)
        monkeypatch.setattr(internvit, 'cuda_capability', lambda device: capability)
    return set_card


# (installed, on CUDA, q dtype, capability) -> what 'auto' runs, and what an explicit 'flash' does
DECISIONS = [
    ((True, True, BF16, (9, 0)), 'flash', 'flash'),        # H100/H200
    ((True, True, FP16, (8, 0)), 'flash', 'flash'),        # A100
    ((True, True, BF16, (8, 6)), 'flash', 'flash'),        # RTX 30xx / A6000
    ((True, True, BF16, (7, 0)), 'sdpa', 'sm80+'),         # V100: flash-attn 2 does not run there
    ((True, True, FP16, (7, 5)), 'sdpa', 'sm80+'),         # T4
    ((True, True, FP32, (9, 0)), 'sdpa', 'fp16/bf16'),     # fp32 q/k/v (no autocast)
    ((True, False, BF16, None), 'sdpa', 'runs on CUDA'),   # CPU
    ((False, True, BF16, (9, 0)), 'sdpa', 'not installed'),
]


@pytest.mark.parametrize('case,auto,flash', DECISIONS)
def test_decision_table(card, case, auto, flash):
    installed, cuda, dtype, capability = case
    card(capability, installed)
    q = query(dtype, cuda)
    assert internvit.select_attn_impl('auto', q) == auto
    if flash == 'flash':
        assert internvit.select_attn_impl('flash', q) == 'flash'
    else:
        with pytest.raises(RuntimeError, match=rf"attn_impl='flash' cannot run: .*{flash}.*use attn_impl='auto'"):
            internvit.select_attn_impl('flash', q)
    assert internvit.select_attn_impl('sdpa', q) == 'sdpa' and internvit.select_attn_impl('eager', q) == 'eager'


def test_the_capability_message_names_the_card(card):
    card((7, 0))
    with pytest.raises(RuntimeError, match='Ampere or newer GPU \\(sm80\\+\\), this one is sm70'):
        internvit.select_attn_impl('flash', query(BF16))


def test_under_autocast_fp32_weights_decide_on_the_bf16_qkv(monkeypatch):
    """Full tuning with --amp: fp32 weights and an fp32 block input, but q/k/v in bf16, which flash-attn takes.
    The decision must see the bf16 query (before, it saw the fp32 input and never picked flash-attn)."""
    seen, calls = [], []

    def reason(q):  # the real rules, with 'on CUDA on an sm80+ GPU' granted
        seen.append(q.dtype)
        return None if q.dtype in (BF16, FP16) else 'fp32'

    def stand_in(q, k, v, softmax_scale):
        calls.append(q.dtype)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale)
        return out.transpose(1, 2)

    monkeypatch.setattr(internvit, 'flash_unusable_reason', reason)
    monkeypatch.setattr(internvit, 'flash_attn_func', stand_in)
    model = tiny_vit(TINY_6B)  # fp32 weights
    x = torch.randn(1, 3, 56, 56)
    with torch.autocast('cpu', dtype=BF16):
        model.forward_features(x)
    assert seen == [BF16] * TINY_6B['depth'] and calls == [BF16] * TINY_6B['depth']
    seen.clear()
    calls.clear()
    model.forward_features(x)  # no autocast: fp32 q/k/v, SDPA
    assert seen == [FP32] * TINY_6B['depth'] and calls == []
