#!/usr/bin/env bash
# The main job on the built-in default: sets up .venv, writes the synthetic ADE20K-layout set,
# trains a tiny InternViT + UperNet (full fine-tuning, layer-wise lr decay) on the CPU,
# evaluates it and writes prediction overlays.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup_env.sh
PY=.venv/bin/python
CONFIG=${CONFIG:-configs/segmentation/tiny/tiny_upernet_full_synthetic.py}
WORK_DIR=${WORK_DIR:-work_dirs/demo}
DATA=data/synthetic_ade20k

if ! $PY -c "import sys; from internvit_dense.datasets.synthetic_ade20k import is_complete; sys.exit(not is_complete('$DATA'))"; then
    $PY tools/generate_synthetic_ade20k.py --root "$DATA" --overwrite
fi
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CKPT=$(cat "$WORK_DIR/last_checkpoint")
$PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR" --show-dir "$WORK_DIR/overlays"
echo
echo "demo done:"
echo "  data:        $ROOT/$DATA"
echo "  checkpoint:  $CKPT"
echo "  logs:        $ROOT/$WORK_DIR (TensorBoard: tensorboard --logdir $WORK_DIR)"
OVERLAY=$(find "$ROOT/$WORK_DIR/overlays" -name '*.png' -print -quit)
echo "  overlays:    $(dirname "${OVERLAY:-$ROOT/$WORK_DIR/overlays/none}")  (ground truth left, prediction right)"
echo "  next:        $PY tools/infer.py $CONFIG $CKPT YOUR_IMAGES --out-dir work_dirs/infer"
