# Train model v2 (configs/v2.yaml) and its M2T-only twin (configs/v2-m2t-only.yaml) side by side from one prepared
# data folder, each resuming from its latest checkpoint (save_every 250 steps), so the run can be cut into pieces
# (a device command's time limit, a CPU box that reboots): run this script again until both print a summary.
#
# Prepare once, on the machine that has the sources (the stdlib of this Python and Debian's python3.11-doc):
#   apt-get install -y python3.11-doc
#   redraft train configs/v2.yaml --prepare-only --set data.prepared=.device_data/v2
# Then, here or on a device (set OUT to the folder that should receive logs and the packed results):
#   OUT=out bash scripts/train_v2_both.sh                 # both runs, concurrently
#   TIME_LIMIT=540 OUT=$OUT bash scripts/train_v2_both.sh  # each run stops after ~540 s of training and saves a
#                                                          # checkpoint (max_time_s); run again to resume
# Extra arguments are passed to both trainings (e.g. --set device=cpu).
set -e
OUT=${OUT:-runs/v2-logs}
DATA=${DATA:-.device_data/v2}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ ! -f "$DATA/recipe.json" ]; then
  echo "no prepared data in $DATA: run  redraft train configs/v2.yaml --prepare-only --set data.prepared=$DATA" >&2
  exit 2
fi
limit=()
if [ -n "${TIME_LIMIT:-}" ]; then limit=(--set "max_time_s=$TIME_LIMIT"); fi
run() {  # config, log, extra arguments
  $PY -m redraft.training "$1" --resume --set data.prepared="$DATA" "${limit[@]}" "${@:3}" >> "$OUT/$2" 2>&1
}
finished() {  # output dir: its final model exists and trained every step of the config
  $PY - "$1" <<'PY'
import json, sys
from pathlib import Path
from redraft.training import load_config
out = Path(sys.argv[1])
summary = out / "final" / "training_summary.json"
cfg = load_config("configs/v2.yaml")
sys.exit(0 if summary.exists() and json.loads(summary.read_text())["steps"] >= cfg.steps else 1)
PY
}
run configs/v2.yaml main.log "$@" & A=$!
run configs/v2-m2t-only.yaml twin.log "$@" & B=$!
status=0
wait $A || status=$?
wait $B || status=$?
if finished runs/v2 && finished runs/v2-m2t-only; then
  tar --ignore-failed-read -cf - runs/v2/final runs/v2/metrics.jsonl runs/v2-m2t-only/final \
    runs/v2-m2t-only/metrics.jsonl | split -b 15M - "$OUT/part_"
  echo "both finished; packed into $OUT/part_*"
else
  echo "not finished (exit $status): run the script again to resume from the latest checkpoints"
fi
tail -3 "$OUT/main.log" "$OUT/twin.log"
