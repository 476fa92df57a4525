"""Peak memory and time of segmenting one large photo: mmseg's ``inference_model`` (class scores resized
to the full image, then argmax) against ``internvit_dense.inference.segment`` (argmax in class chunks).

    python benchmarks/infer_memory.py [--sizes 1000x750 2000x1500 4000x3000] [--skip-mmseg-above 3000000]

Each measurement runs in a fresh process (peak RSS is per process); the tiny 150-class segmentation
config with random weights: what grows with the image is the post-processing, not the model.
Prints one row per size and method, and the labels' agreement where both ran.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py'

CHILD = r'''
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[4])
from internvit_dense.engine.cli import setup_entry_point
setup_entry_point()
from internvit_dense.apis import init_model
method, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = init_model(sys.argv[5])
rng = np.random.default_rng(0)
small = rng.integers(0, 255, (h // 50 + 1, w // 50 + 1, 3), dtype=np.uint8)  # a smooth-ish photo
import cv2
bgr = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = kib()
t0 = time.perf_counter()
with torch.no_grad():
    if method == 'mmseg':
        from mmseg.apis import inference_model
        labels = inference_model(model, bgr).pred_sem_seg.data[0]
    else:
        from internvit_dense.inference import segment
        labels = segment(model, bgr).pred_sem_seg.data[0]
seconds = time.perf_counter() - t0
np.save(sys.argv[6], labels.numpy().astype(np.int16))
print(json.dumps(dict(peak_gib=kib() / 2**20, added_gib=(kib() - before) / 2**20, seconds=seconds)))
'''


def measure(method, w, h, out):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', CHILD, method, str(w), str(h), ROOT, CONFIG, out], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    import numpy as np
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', nargs='+', default=['1000x750', '2000x1500', '4000x3000'])
    p.add_argument('--skip-mmseg-above', type=int, default=3_000_000,
                   help='pixels; mmseg needs ~600 bytes per pixel for 150 classes (default: %(default)s)')
    p.add_argument('--tmp', default='/tmp')
    args = p.parse_args()
    print(f'{"image":>10} {"method":>8} {"peak GiB":>9} {"added GiB":>10} {"seconds":>8}  labels')
    for size in args.sizes:
        w, h = map(int, size.split('x'))
        results = {}
        for method in ('mmseg', 'chunked'):
            if method == 'mmseg' and w * h > args.skip_mmseg_above:
                print(f'{size:>10} {method:>8} {"skipped: more than --skip-mmseg-above pixels":>30}')
                continue
            out = os.path.join(args.tmp, f'infer_memory_{method}_{size}.npy')
            r = measure(method, w, h, out)
            results[method] = np.load(out)
            os.remove(out)
            same = ''
            if method == 'chunked' and 'mmseg' in results:
                same = f'{(results["mmseg"] == results["chunked"]).mean():.6%} equal to mmseg\'s'
            print(f'{size:>10} {method:>8} {r["peak_gib"]:9.2f} {r["added_gib"]:10.2f} {r["seconds"]:8.1f}  {same}')


if __name__ == '__main__':
    main()
