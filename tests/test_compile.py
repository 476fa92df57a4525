"""InternViT(compile=True): torch.compile of one block, reused by every block, equal to eager.

One test compiles with inductor (the path a GPU runs, here its CPU backend) on a tiny bf16 model and
checks it against eager within bf16 tolerance. The others check what the compiled path must do around
the blocks (one graph for all blocks, drop path, with_cp, frozen, the adapter) with a backend that
records the graphs dynamo captures and runs them as they are: the same capture, without inductor's
C++ compile (tens of seconds per graph on a shared CPU).
"""
import pytest
import torch
from conftest import TINY_6B, randomize_, tiny_vit

from internvit_dense.models.backbones import InternViT, InternViTAdapter

ARCH = dict(TINY_6B, depth=3)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached on the block's code object for the whole process: start and leave clean."""
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: OpenMP threads spin against each other on a shared machine
    yield
    torch.set_num_threads(threads)
    torch._dynamo.reset()


class RecordingBackend:
    """A torch.compile backend that keeps each captured graph and runs it unchanged."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def pair(**kwargs):
    """An eager model and a compiled one with the same weights."""
    compile_option = kwargs.pop('compile', True)
    eager = tiny_vit(ARCH, out_indices=(0, -1), **kwargs)
    compiled = tiny_vit(ARCH, out_indices=(0, -1), **kwargs, compile=compile_option)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def loss_of(outs):
    return sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


def step(model, x, seed=0):
    torch.manual_seed(seed)  # the drop path draws
    outs = model(x)
    loss_of(outs).backward()
    return outs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_bf16_close(got, expected):
    # bf16 keeps 8 significant bits: inductor fuses and reorders the element-wise work, so results
    # differ from eager by a few roundings (as in tests/test_dtype.py's bf16 vs fp32 check)
    torch.testing.assert_close(got.float(), expected.float(), atol=0.05 * expected.abs().max().item(), rtol=0.05)


def test_inductor_compiled_training_step_matches_eager_in_bf16():
    eager, compiled = pair(dtype='bf16', with_cp=True)
    eager.train(), compiled.train()
    x = torch.randn(2, 3, 56, 56)
    outs_e, grads_e = step(eager, x)
    outs_c, grads_c = step(compiled, x)
    for a, b in zip(outs_c, outs_e):
        assert a.dtype == b.dtype == torch.float32
        assert_bf16_close(a, b)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) == len(list(eager.parameters()))
    for name in grads_e:
        assert_bf16_close(grads_c[name], grads_e[name])


def test_one_compiled_graph_serves_every_block():
    backend = RecordingBackend()
    eager, compiled = pair(compile=dict(backend=backend))
    x = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        got, expected = compiled(x), eager(x)
    assert len(backend.graphs) == 1  # 3 blocks, one capture
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # a deeper model of the same width compiles nothing more
    deeper = InternViT(arch=dict(ARCH, depth=6), img_size=56, pretrain_size=56, patch_size=14,
                       compile=dict(backend=backend)).eval()
    with torch.no_grad():
        deeper(x)
    assert len(backend.graphs) == 1


def test_drop_path_and_checkpointing_draw_what_eager_draws():
    """Drop path rates differ per block: drawn outside the graph, they neither recompile per block
    nor change the draws (same seed, same masks as eager, through with_cp's recomputation too)."""
    backend = RecordingBackend()
    eager, compiled = pair(drop_path_rate=0.5, with_cp=True, compile=dict(backend=backend))
    eager.train(), compiled.train()
    x = torch.randn(4, 3, 56, 56)
    outs_e, grads_e = step(eager, x, seed=3)
    outs_c, grads_c = step(compiled, x, seed=3)
    assert len(backend.graphs) == 2  # block 0 (rate 0: no scales) and the others, whatever their rates
    for a, b in zip(outs_c, outs_e):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], atol=1e-5, rtol=1e-5)
    # and the draws do drop: another seed gives another result
    assert not torch.allclose(step(compiled, x, seed=4)[0][-1], outs_c[-1])


def test_frozen_compiled_backbone_keeps_no_graph():
    eager, compiled = pair(frozen=True, drop_path_rate=0.5, compile=dict(backend=RecordingBackend()))
    x = torch.randn(2, 3, 56, 56, requires_grad=True)
    got = compiled(x)
    assert all(f.grad_fn is None and not f.requires_grad for f in got)
    for a, b in zip(got, eager(x)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('frozen', [False, True])
def test_adapter_over_a_compiled_vit_matches_eager(frozen):
    """The adapter runs the ViT's blocks in groups between its injectors: through a frozen compiled ViT
    the injected tokens' gradients still flow."""
    vit = dict(arch=dict(embed_dims=32, depth=4, num_heads=2, mlp_dims=64), img_size=56, pretrain_size=56,
               frozen=frozen)
    adapter = dict(num_heads=2, conv_inplanes=8, extra_extractors=2, with_cp=True)
    eager = randomize_(InternViTAdapter(vit=vit, **adapter)).train()
    compiled = InternViTAdapter(vit=dict(vit, compile=dict(backend=RecordingBackend())), **adapter).train()
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 56, 56)
    outs_e, grads_e = step(eager, x)
    outs_c, grads_c = step(compiled, x)
    for a, b in zip(outs_c, outs_e):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert grads_c.keys() == grads_e.keys()
    assert any(n.startswith('interactions.0.injector') for n in grads_e)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], atol=1e-5, rtol=1e-5)


def test_compile_option_is_checked():
    with pytest.raises(TypeError, match='compile must be'):
        InternViT(arch=dict(ARCH), compile='inductor')
