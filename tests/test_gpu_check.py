"""tools/gpu_check.py's table logic on a machine without CUDA, so that the GPU check cannot rot unnoticed."""
import json

import pytest
import torch
from conftest import load_tool

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason='the no-GPU behaviour; on a GPU run the tool itself')


@pytest.fixture(scope='module')
def tool():
    return load_tool('gpu_check')


def test_without_cuda_every_row_is_skipped_and_the_exit_status_says_so(tool, tmp_path, capsys):
    out = tmp_path / 'table.json'
    status = tool.main(['--json', str(out), '--work-dir', str(tmp_path / 'work')])
    assert status == tool.EXIT_NO_GPU != tool.EXIT_OK
    table = json.loads(out.read_text())
    names = [r.name for r in tool.all_rows()]
    assert [r['name'] for r in table['rows']] == names
    assert all(r['status'] == 'skip' and r['note'].startswith('no GPU: torch ') for r in table['rows'])
    assert table['exit_status'] == tool.EXIT_NO_GPU
    printed = capsys.readouterr().out
    for name in names:  # every row printed, one line each
        assert sum(line.split()[:1] == [name] for line in printed.splitlines()) == 1, name
    assert f'exit status {tool.EXIT_NO_GPU}' in printed
    # the rows the issues ask for are all there
    for name in ('mmcv.msda.bf16', 'mmcv.roi_align.fp32', 'mmcv.nms.bf16', 'attn.flash', 'attn.dispatch', '6b.mm',
                 '6b.plan_step', '6b.forward.compiled', '6b.step.eager', 'train.mask_rcnn.zero1_bf16',
                 'train.linear_probe.amp', 'train.adapter_upernet.plain'):
        assert name in names


def test_row_filters(tool):
    names = [r.name for r in tool.all_rows()]
    pick = lambda only, skip=(): [n for n in names if (not only or tool.matches(n, only))  # noqa: E731
                                  and not tool.matches(n, list(skip))]
    assert pick(['mmcv']) == [n for n in names if n.startswith('mmcv.')]
    assert pick(['6b.step']) == [f'6b.step.{k}' for k in tool.ATTN_KERNELS]
    assert pick(['train.*.amp']) == [f'train.{c}.amp' for c in tool.TRAIN_CONFIGS]
    assert 'train.linear.plain' in pick(['train'], ['train.linear_probe'])
    assert not any(n.startswith('train.linear_probe') for n in pick(['train'], ['train.linear_probe']))
    assert pick(['env']) == ['env']
    assert tool.main(['--only', 'no_such_row']) == tool.EXIT_USAGE


def test_status_of_a_table(tool):
    ok, skip, fail = (tool.Result('a', s) for s in (tool.OK, tool.SKIP, tool.FAIL))
    assert tool.exit_status([ok, skip], gpu=True) == tool.EXIT_OK
    assert tool.exit_status([ok, fail, skip], gpu=True) == tool.EXIT_FAILED
    assert tool.exit_status([skip, skip], gpu=False) == tool.EXIT_NO_GPU


def test_a_row_that_raises_becomes_a_failed_row_and_the_table_goes_on(tool, tmp_path):
    ctx = tool.Context(tool.parse_args(['--work-dir', str(tmp_path)]), 'cpu')

    def crash(ctx):
        raise ValueError('boom')

    def skip(ctx):
        raise tool.Skip('not here')

    def fail(ctx):
        raise tool.Failed('too far', figure='1.5')

    results = [tool.run_row(tool.Row(n, fn), ctx) for n, fn in (('c', crash), ('s', skip), ('f', fail))]
    assert [(r.name, r.status) for r in results] == [('c', 'FAIL'), ('s', 'skip'), ('f', 'FAIL')]
    assert results[0].note.startswith('ValueError: boom (test_gpu_check.py:')
    assert results[1].note == 'not here' and results[2].figure == '1.5'


def test_dispatch_row_on_the_cpu(tool, tmp_path):
    """--cpu runs the rows that can run on a CPU: the dispatch row checks 'auto' takes SDPA here, with bf16
    weights and under autocast (a spy on the kernels, not the decision function)."""
    out = tmp_path / 'table.json'
    assert tool.main(['--cpu', '--only', 'attn.dispatch', '--json', str(out)]) == tool.EXIT_NO_GPU
    (row,) = json.loads(out.read_text())['rows']
    assert row['status'] == 'ok', row
    assert row['data'] == {'bf16 weights': 'sdpa', 'fp32 weights + autocast bf16': 'sdpa'}
