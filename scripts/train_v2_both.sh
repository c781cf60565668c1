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
#   SEQUENTIAL=1 bash scripts/train_v2_both.sh --set save_every=50   # on a small CPU box: v2 first, then the twin
#                                                          # (same total time, v2 done in half of it); stop with
#                                                          # `pkill -f redraft.training` (SIGTERM: a checkpoint at
#                                                          # the step reached), run again to resume
# Extra arguments are passed to both trainings (e.g. --set device=cpu; not output_dir). A finished run is skipped.
# MAIN_CONFIG / TWIN_CONFIG: other recipes (the defaults are v2's).
set -e
OUT=${OUT:-runs/v2-logs}
DATA=${DATA:-.device_data/v2}
PY=${PYTHON:-python3}  # a device image may have python3 alone
MAIN_CONFIG=${MAIN_CONFIG:-configs/v2.yaml}
TWIN_CONFIG=${TWIN_CONFIG:-configs/v2-m2t-only.yaml}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ ! -f "$DATA/recipe.json" ]; then
  echo "no prepared data in $DATA: run  redraft train $MAIN_CONFIG --prepare-only --set data.prepared=$DATA" >&2
  exit 2
fi
limit=()
if [ -n "${TIME_LIMIT:-}" ]; then limit=(--set "max_time_s=$TIME_LIMIT"); fi
output_dir() {  # config -> its output_dir
  $PY -c 'import sys; from redraft.training import load_config; print(load_config(sys.argv[1]).output_dir)' "$1"
}
finished() {  # config: its final model exists and trained every step of the config
  $PY - "$1" <<'PY'
import json, sys
from pathlib import Path
from redraft.training import load_config
cfg = load_config(sys.argv[1])
summary = Path(cfg.output_dir) / "final" / "training_summary.json"
sys.exit(0 if summary.exists() and json.loads(summary.read_text())["steps"] >= cfg.steps else 1)
PY
}
run() {  # config, log, extra arguments (a finished run is left alone)
  if finished "$1"; then return 0; fi
  $PY -m redraft.training "$1" --resume --set data.prepared="$DATA" "${limit[@]}" "${@:3}" >> "$OUT/$2" 2>&1
}
status=0
if [ "${SEQUENTIAL:-0}" = 1 ]; then
  run "$MAIN_CONFIG" main.log "$@" || status=$?
  if [ $status = 0 ] && finished "$MAIN_CONFIG"; then run "$TWIN_CONFIG" twin.log "$@" || status=$?; fi
else
  run "$MAIN_CONFIG" main.log "$@" & A=$!
  run "$TWIN_CONFIG" twin.log "$@" & B=$!
  wait $A || status=$?
  wait $B || status=$?
fi
if finished "$MAIN_CONFIG" && finished "$TWIN_CONFIG"; then
  MAIN_DIR=$(output_dir "$MAIN_CONFIG"); TWIN_DIR=$(output_dir "$TWIN_CONFIG")
  tar --ignore-failed-read -cf - "$MAIN_DIR/final" "$MAIN_DIR/metrics.jsonl" "$TWIN_DIR/final" \
    "$TWIN_DIR/metrics.jsonl" | split -b 15M - "$OUT/part_"
  echo "both finished; packed into $OUT/part_*"
else
  echo "not finished (exit $status): run the script again to resume from the latest checkpoints"
fi
tail -3 "$OUT"/*.log 2>/dev/null || true
