"""Every config of configs/ resolves to what tests/data/resolved_configs.json recorded.

A refactor must leave the resolved configs as they are; a change that means to alter one records the
new resolution with ``python tests/test_config_snapshot.py --update`` and shows it in its diff.
"""
import json
import os
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SNAPSHOT = osp.join(ROOT, 'tests', 'data', 'resolved_configs.json')


def config_files():
    found = []
    for dirpath, dirnames, files in os.walk(osp.join(ROOT, 'configs')):
        dirnames[:] = sorted(d for d in dirnames if d != '_base_')
        found += [osp.relpath(osp.join(dirpath, f), ROOT) for f in sorted(files) if f.endswith('.py')]
    return found


def resolve(path: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, path))
    # JSON round trip: tuples and lists compare alike, as they build alike
    return json.loads(json.dumps(cfg.to_dict(), sort_keys=True, default=repr))


def resolve_all() -> dict:
    return {path: resolve(path) for path in config_files()}


def first_difference(a, b, where=''):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f'{where}.{key}: ' + ('added' if key not in a else 'removed')
            diff = first_difference(a[key], b[key], f'{where}.{key}')
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f'{where}[{i}]')
            if diff:
                return diff
        return None
    return None if a == b else f'{where}: {a!r} -> {b!r}'


def test_every_config_resolves_as_recorded():
    with open(SNAPSHOT) as f:
        recorded = json.load(f)
    now = resolve_all()
    assert sorted(now) == sorted(recorded), (
        f'configs added {sorted(set(now) - set(recorded))} / removed {sorted(set(recorded) - set(now))}: '
        'record them with python tests/test_config_snapshot.py --update')
    changed = {p: first_difference(recorded[p], now[p]) for p in now if now[p] != recorded[p]}
    assert not changed, ('resolved configs changed (python tests/test_config_snapshot.py --update records '
                         'an intended change):\n' + '\n'.join(f'  {p}{d}' for p, d in changed.items()))


if __name__ == '__main__':
    if sys.argv[1:] != ['--update']:
        sys.exit('usage: python tests/test_config_snapshot.py --update')
    sys.path.insert(0, ROOT)
    os.makedirs(osp.dirname(SNAPSHOT), exist_ok=True)
    resolved = resolve_all()
    with open(SNAPSHOT + '.tmp', 'w') as f:
        json.dump(resolved, f, indent=1, sort_keys=True)
    os.replace(SNAPSHOT + '.tmp', SNAPSHOT)
    print(f'recorded {len(resolved)} resolved configs in {osp.relpath(SNAPSHOT, ROOT)}')
