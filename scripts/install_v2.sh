# Install trained model v2 and its M2T-only twin as the bundled models, then regenerate what depends on them:
# docs/RESULTS.md (the claims C1-C3), eval reports beside each model, and the README's generate output.
# Run after scripts/train_v2_both.sh said "both finished" (or give the two final folders):
#   bash scripts/install_v2.sh [MAIN_FINAL [TWIN_FINAL]]
# Then write redraft/assets/tiny/TRAINING.md from training_summary.json + metrics.jsonl, and paste the printed
# `redraft generate` output into the README.
set -e
MAIN=${1:-runs/v2/final}
TWIN=${2:-runs/v2-m2t-only/final}
PY=${PYTHON:-python}
TASKS=addition_long,sorting_long,reverse_long,sudoku4,code_exec
export PYTHONPATH=$PWD
for d in "$MAIN" "$TWIN"; do
  $PY - "$d" <<'PY'
import json, sys
from pathlib import Path
from redraft.training import load_config
d = Path(sys.argv[1])
summary = d / "training_summary.json"
steps = load_config("configs/v2.yaml").steps
if not summary.exists() or json.loads(summary.read_text())["steps"] < steps:
    sys.exit(f"{d}: not a finished v2 run (needs {summary} with steps >= {steps}); train with scripts/train_v2_both.sh")
PY
done
install() {  # final folder, destination, metrics file, config
  rm -rf "$2" && mkdir -p "$2"
  cp "$1"/config.json "$1"/model.safetensors "$1"/tokenizer.json "$1"/tokenizer_config.json \
     "$1"/training_summary.json "$2"/
  cp "$3" "$2"/metrics.jsonl
  cp "$4" "$2"/train_config.yaml
  size=$(du -sb "$2" | cut -f1)
  if [ "$size" -gt 25000000 ]; then echo "$2 is $size bytes, over the 25 MB budget" >&2; exit 1; fi
}
install "$MAIN" redraft/assets/tiny "$(dirname "$MAIN")"/metrics.jsonl configs/v2.yaml
install "$TWIN" models/tiny-m2t-only "$(dirname "$TWIN")"/metrics.jsonl configs/v2-m2t-only.yaml
cp "${DATA:-.device_data/v2}"/recipe.json redraft/assets/tiny/recipe.json
for m in redraft/assets/tiny models/tiny-m2t-only; do
  for mode in quality speedy; do
    redraft eval "$m" --tasks $TASKS --mode $mode --n 32 --seeds 0 --out "/tmp/eval_$(basename $m)_$mode"
    cp "/tmp/eval_$(basename $m)_$mode/eval.json" "$m/eval_${mode}_n32.json"
  done
done
redraft results redraft/assets/tiny models/tiny-m2t-only --tasks $TASKS --n 32 --seeds 0,1,2 --out docs/RESULTS.md
redraft generate "def fibonacci(n):"
