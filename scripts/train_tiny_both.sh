# The exact command run on one H100 (the device tool, $OUT = the folder that comes back) to train the bundled tiny
# model and its M2T-only twin concurrently; needs the prepared data in .device_data/tiny (see configs/tiny.yaml).
set -e
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python -m redraft.training configs/tiny.yaml --set data.prepared=.device_data/tiny > $OUT/main.log 2>&1 &
A=$!
python -m redraft.training configs/tiny-m2t-only.yaml --set data.prepared=.device_data/tiny > $OUT/twin.log 2>&1 &
B=$!
wait $A; wait $B
tar --ignore-failed-read -cf - runs/tiny/final runs/tiny/metrics.jsonl runs/tiny-m2t-only/final runs/tiny-m2t-only/metrics.jsonl | split -b 15M - $OUT/part_
ls -la $OUT; tail -3 $OUT/main.log $OUT/twin.log
