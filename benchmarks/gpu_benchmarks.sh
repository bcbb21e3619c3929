#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md in one go, on one CUDA machine (16 cores):
#
#   benchmarks/gpu_benchmarks.sh OUTDIR [SECONDS]      # from the repository root
#
# 1. accuracy benchmark at GPU scale (benchmarks/accuracy/run.py --settings gpu): subjects
#    simulated in parallel CPU processes, nets and ensemble trained on CUDA, cases scored on
#    the CPU in parallel processes -> OUTDIR/RESULTS-gpu.{md,json}, accuracy.log;
# 2. training speed (benchmarks/train_speed.py, configurations cpu and gpu, 0 and 4 data
#    workers) while step 1 simulates (so the CPU is busy: noted next to the table)
#    -> OUTDIR/train_speed_gpu.tsv, train_speed.log;
# 3. the shipped demo model retrained on CUDA at a larger scale through the product path
#    (bids_harmonize-synth, participant, train: 18 subjects, 2 ensemble members calibrated
#    on 2 held-out subjects), started once step 1 trains -> OUTDIR/demo.log;
# then the trained models (accuracy v2/v1/unet, demo) go into OUTDIR/models.tgz.
#
# SECONDS (default 540) bounds the whole script; each step is stopped before it.
# Needs: python3 with torch (CUDA) and the project installed (`pip install -e .`: step 3
# runs the console scripts bids_harmonize-synth, bids_harmonize-templates, bids_harmonize). Everything is written under OUTDIR; the simulation cache goes to
# $BH_GPU_CACHE (default /tmp/bh-gpu-cache).
set -u
out=${1:?usage: benchmarks/gpu_benchmarks.sh OUTDIR [SECONDS]}
budget=${2:-540}
mkdir -p "$out"
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cache=${BH_GPU_CACHE:-/tmp/bh-gpu-cache}
status="$out/status.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, os; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name(0), 'cpus', len(os.sched_getaffinity(0)))"
} >"$status" 2>&1

python3 benchmarks/accuracy/run.py --settings gpu --device cuda --jobs 11 --cache-dir "$cache" \
  --scanner-variant --out "$out/RESULTS-gpu.md" --save-models "$out/models/accuracy" >"$out/accuracy.log" 2>&1 &
acc=$!
( sleep $(( $(left) - 10 )); kill -TERM $acc 2>/dev/null ) &
acc_guard=$!

timeout 150 python3 benchmarks/train_speed.py --configs cpu gpu --device cuda --workers 0 4 \
  --steps 8 --subjects 2 --out "$out/train_speed_gpu.tsv" >"$out/train_speed.log" 2>&1
echo "train_speed rc=$? at $(( $(date +%s) - start )) s" >>"$status"

while kill -0 $acc 2>/dev/null && ! grep -q "training on" "$out/accuracy.log"; do sleep 2; done
echo "demo starts at $(( $(date +%s) - start )) s" >>"$status"
timeout $(( $(left) - 15 )) python3 -m bids_harmonize.harmonizer.demo --out "$out/models/demo" \
  --work "$out/demo-work" --subjects 18 --calibration-subjects 2 --steps-scale 3 --batch-size 16 \
  --ensemble-members 2 --nprocs 8 --device cuda >"$out/demo.log" 2>&1 &
demo=$!

wait $acc
echo "accuracy rc=$? at $(( $(date +%s) - start )) s" >>"$status"
kill $acc_guard 2>/dev/null
wait $demo
echo "demo rc=$? at $(( $(date +%s) - start )) s" >>"$status"
tar -C "$out" -czf "$out/models.tgz" models 2>>"$status" && rm -rf "$out/models"
nvidia-smi --query-gpu=memory.used --format=csv >>"$status" 2>&1
echo "done at $(( $(date +%s) - start )) s" >>"$status"
