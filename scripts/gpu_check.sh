# Every GPU check of the project in one device command (issue 11): prepare here, run once on a lent GPU.
#
# Here, once per session (copies ../shared/parity into .device/parity, which git ignores, so that `carry` takes it
# along; the ../shared beside the checkout does not travel):
#   bash scripts/gpu_check.sh --prepare
# Then one call of the device tool's `run` with timeout_s 570 (the suite's budget is 420 s, so a rerun still fits
# into a session's 15 minutes of device time only if the first call fails early):
#   command: bash scripts/gpu_check.sh      carry: [".device/parity"]
# On the device (no install: redraft is imported from the checkout; the packages it needs are on that machine) it
# prints the GPU and any missing package, then runs benchmarks/gpu_suite.py with --budget-s $BUDGET_S (default 420)
# and --out $OUT: (g) exactness first, (a)-(e) the mini-shape rows, (f) FP8 rows, (h) fp8_gpu.py --moonshot, (i)
# pytest tests/test_model_gpu.py. The JSON and .md are rewritten after every section, so a run killed at the time
# limit still brings back what it measured; the whole log is $OUT/gpu_check.log. Copy the files into
# benchmarks/results/ afterwards and put the table in docs/PERFORMANCE.md.
# Extra arguments go to gpu_suite.py (e.g. --batch 1,16 --steps 20).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  src=${REDRAFT_PARITY:-../shared/parity}
  [ -f "$src/cases.json" ] || { echo "no parity vectors at $src" >&2; exit 2; }
  rm -rf .device/parity && mkdir -p .device && cp -r "$src" .device/parity
  echo "copied $src -> .device/parity ($(du -sh .device/parity | cut -f1))"
  echo "run on the device with carry [\".device/parity\"]"
  exit 0
fi
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -f .device/parity/cases.json ] && export REDRAFT_PARITY="$PWD/.device/parity"
PY=${PYTHON:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  $PY - <<'PY'
import importlib, sys
missing = []
for name in ("torch", "safetensors", "tokenizers", "huggingface_hub", "jinja2", "numpy", "rich", "yaml", "pytest",
             "triton"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except ImportError as e:
        missing.append(f"{name} ({e})")
if "torch" in sys.modules:
    torch = sys.modules["torch"]
    print("python", sys.version.split()[0], "| cuda", torch.version.cuda, "| device",
          torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("REDRAFT_PARITY", __import__("os").environ.get("REDRAFT_PARITY", "(unset: ../shared/parity)"))
if missing:
    print("MISSING:", ", ".join(missing))
PY
  $PY benchmarks/gpu_suite.py --out "$OUT" --budget-s "${BUDGET_S:-420}" "$@"
  status=$?
  echo "$status" > "$OUT/exit_status"
  echo "gpu_suite.py exit status $status (0 ok, 1 it crashed, 2 a section failed or bad arguments," \
       "3 exactness mismatch)"
  date -u
} 2>&1 | tee "$OUT/gpu_check.log"
exit "$(cat "$OUT/exit_status" 2>/dev/null || echo 3)"
