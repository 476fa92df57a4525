"""The benchmarks end to end on their tiny --quick configurations."""
import contextlib
import importlib.util
import io
import json
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUMBER = r'(\d+(?:\.\d+)?)'


def bench(script, *args, timeout):
    """benchmarks/<script>'s main(argv) in this process (a new interpreter costs seconds of imports), its output
    captured; the status is checked by the caller. ``timeout``: what the script may take (checked after it)."""
    spec = importlib.util.spec_from_file_location(f'bench_{script[:-3]}', osp.join(ROOT, 'benchmarks', script))
    module = importlib.util.module_from_spec(spec)
    out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            spec.loader.exec_module(module)
            try:
                status = module.main([str(a) for a in args]) or 0
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else 1
                print(e.code if isinstance(e.code, str) else '', file=sys.stderr)
    finally:
        torch.set_num_threads(threads)  # the benchmarks set their own
    assert time.perf_counter() - start < timeout, f'{script} took longer than {timeout} s'
    return subprocess.CompletedProcess([script, *args], status, out.getvalue(), err.getvalue())


def test_quick_benchmark_reports_both_implementations(tmp_path):
    out_json = tmp_path / 'bench.json'
    proc = bench('backbone_speed.py', '--quick', '--profile', '1', '--json', out_json, timeout=180)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    out = proc.stdout
    assert 'SUMMARY' in out, out
    record = json.loads(out_json.read_text())
    assert record['max_abs_diff'] < 1e-4  # both implementations computed the same thing

    # The summary's forward row: "forward (eval, no grad) | <ours> | <transformers> | <ratio>x | ..."
    row = next((line for line in out.splitlines() if line.startswith('forward (eval, no grad)')), None)
    assert row is not None, out
    cells = [c.strip() for c in row.split('|')]
    ours, theirs, ratio = (float(re.match(NUMBER, c).group(1)) for c in cells[1:4])
    assert ours > 0 and theirs > 0 and ratio > 0, row
    # printed figures are the recorded measurements
    assert record['images_per_second']['forward/ours'] == pytest.approx(ours, abs=1e-3)
    assert record['summary']['forward_ratio'] == pytest.approx(ratio, abs=1e-3)
    assert len(record['seconds']['forward/transformers']) == 3
    full = next(line for line in out.splitlines() if line.startswith('train step, full'))
    assert all(re.match(NUMBER, c.strip()) for c in full.split('|')[1:6]), full
    assert re.search(r'our forward runs at \d+\.\d% of it', out), out
    # the profile: per-op self time of both full steps, the printed totals the recorded ones
    totals = re.search(rf'per full training step, ms \(torch profiler, 1 steps each\): ours {NUMBER}, '
                       rf'transformers {NUMBER}', out)
    assert totals, out
    assert [float(t) for t in totals.groups()] == pytest.approx(record['profile']['total_ms'], abs=0.1)
    assert record['profile']['per_step_ms']['aten::mm'][0] > 0 and record['profile']['per_step_ms']['aten::mm'][1] > 0


def test_depth_runs_the_6b_width_with_fewer_blocks(tmp_path):
    """--depth builds a preset at its real width: one InternViT-6B block (3200 wide, 12800 MLP, qk-norm, no qkv
    bias) at 28 px, its parameters counted from the published shapes, against transformers' as ever."""
    out_json = tmp_path / 'bench.json'
    proc = bench('backbone_speed.py', '--arch', '6b', '--depth', 1, '--dtype', 'bf16', '--batch', 1, '--img-size', 28,
                 '--rounds', 1, '--threads', 1, '--json', out_json, timeout=120)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    assert 'InternViT 6b (1 block), 28px' in proc.stdout, proc.stdout
    c, m = 3200, 12800
    block = 3 * c * c + (c * c + c) + (c * m + m) + (m * c + c) + 4 * c + 2 * c  # qkv, proj, fc1, fc2, 4 norms, 2 scales
    embeddings = (3 * 14 * 14 * c + c) + c + (1 + 2 * 2) * c  # patch conv, cls token, positions of 2 x 2 patches + cls
    record = json.loads(out_json.read_text())
    assert record['params'] == block + embeddings
    assert record['max_abs_diff'] < 1e-4
    assert len(record['seconds']['train-full/transformers']) == 1


def test_quick_linear_probe_benchmark_prints_what_it_measured(tmp_path):
    out_json = tmp_path / 'lp.json'
    proc = bench('linear_probe.py', '--quick', '--backbone', 'tiny', '--backbone-images', '32', '--backbone-batch',
                 '16', '--threads', '1', '--json', out_json, timeout=300)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    out = proc.stdout
    record = json.loads(out_json.read_text())
    # the printed ratios are the recorded measurements, not constants
    over_cache = re.search(rf'grid of 16 classifiers = {NUMBER}x one classifier per pass over the cache', out)
    assert over_cache, out
    assert float(over_cache.group(1)) == pytest.approx(record['ratio'], abs=0.006)
    assert record['seconds']['grid'] > 0 and record['seconds']['one'] > 0
    assert record['ratio'] == pytest.approx(record['seconds']['grid'] / record['seconds']['one'])
    with_backbone = re.search(rf'= {NUMBER}x one classifier per pass with the backbone in the pass', out)
    assert with_backbone, out
    measured = record['measured_with_backbone']
    assert measured['images'] == 32 and measured['seconds']['one'] > 0
    assert float(with_backbone.group(1)) == pytest.approx(measured['ratio'], abs=6e-4)


def test_quick_encoder_extract_benchmark_prints_what_it_measured(tmp_path):
    out_json = tmp_path / 'enc.json'
    proc = bench('encoder_extract.py', '--quick', '--threads', '1', '--json', out_json, timeout=300)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    out, record = proc.stdout, json.loads(out_json.read_text())
    ratio = re.search(rf'extract images/s: InternViT-300M \(ours\) / timm \S+ = {NUMBER}x', out)
    assert ratio, out
    assert float(ratio.group(1)) == pytest.approx(record['ratio_ours_over_timm'], abs=0.006)
    assert all(len(s) == 2 and min(s) > 0 for s in record['seconds'].values())
    # the two implementations of InternViT-300M agree on the checkpoint's grid
    assert record['agreement']['448']['max_abs_diff'] < 1e-4
    assert '448 px (the checkpoint grid): max |diff|' in out


def test_quick_parts_benchmark_times_each_fast_path_against_what_it_replaced(tmp_path):
    out_json = tmp_path / 'parts.json'
    proc = bench('backbone_parts.py', '--quick', '--json', out_json, timeout=120)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    out, record = proc.stdout, json.loads(out_json.read_text())
    assert record['max_abs_diff']['patch'] < 1e-4 and record['max_abs_diff']['rms'] < 1e-6  # same arithmetic
    for label, ours, replaced in [('patch embedding', 'patch/gemm', 'patch/conv'),
                                  ('RMSNorm (one of 4 per block)', 'rms/function', 'rms/autograd')]:
        row = next((line for line in out.splitlines() if line.startswith(label)), None)
        assert row is not None, out
        speedup = float(re.match(NUMBER, row.split('|')[3].strip()).group(1))
        assert speedup == pytest.approx(record['speedup'][label], abs=1e-3)  # printed = recorded
        assert len(record['seconds'][ours]) == len(record['seconds'][replaced]) == 3
