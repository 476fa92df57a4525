"""tools/benchmark.py end to end on its tiny --quick configuration."""
import json
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUMBER = r'(\d+(?:\.\d+)?)'


def test_quick_benchmark_reports_both_implementations(tmp_path):
    out_json = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'benchmark.py'), '--quick', '--json', str(out_json)],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, f'benchmark failed:\n{proc.stdout}\n{proc.stderr}'
    out = proc.stdout
    assert 'SUMMARY' in out, out

    # The summary's forward row: "forward (eval, no grad) | <ours> [..] | <transformers> [..] | <ratio>x | ..."
    row = next((line for line in out.splitlines() if line.startswith('forward (eval, no grad)')), None)
    assert row is not None, out
    cells = [c.strip() for c in row.split('|')]
    ours, theirs = (float(re.match(NUMBER, c).group(1)) for c in cells[1:3])
    assert ours > 0 and theirs > 0, row
    full = next(line for line in out.splitlines() if line.startswith('train step, full'))
    assert all(re.match(NUMBER, c.strip()) for c in full.split('|')[1:3]), full

    for target in ('ours / transformers', 'of the torch.mm', 'frozen train step'):
        assert re.search(rf'\[(PASS|SHORT)\s*\] .*{re.escape(target)}', out), f'no verdict for {target!r}:\n{out}'

    record = json.loads(out_json.read_text())
    assert record['results']['forward/ours']['ips_median'] == pytest.approx(ours, abs=1e-3)  # printed to 3 decimals
    assert not record['errors']
