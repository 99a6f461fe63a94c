#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: builds dynabert (Release), then
#  1. runs the committed PyTorch-parity model at width 0.5 / depth 0.75 and prints its logits,
#  2. generates a BERT-base-sized model with random weights and times all 12 DynaBERT cells
#     (width 1, .75, .5, .25 x depth 1, .75, .5) at sequence length 128, on 1 and 2 threads.
# (The end-to-end training demo replaces step 2 once the trainer lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target dynabert_run
run=build/release/examples/dynabert_run

echo "== 1. tiny parity model (tests/fixtures/tiny), width 0.5, depth 0.75 =="
"$run" --model tests/fixtures/tiny --inputs tests/fixtures/tiny_inputs.json --width 0.5 --depth 0.75

mkdir -p .data
if [[ ! -f .data/bert-base-random/model.safetensors ]]; then
  echo "== generating a BERT-base model with random weights in .data/bert-base-random =="
  "$run" --generate .data/bert-base-random --preset base --labels 2
fi
/usr/bin/env python3 - <<'PY' > .data/demo_inputs.json 2>/dev/null || printf '[%s]\n' "$(seq -s, 101 228)" > .data/demo_inputs.json
import json; print(json.dumps([[101] + [1000 + (i * 37) % 20000 for i in range(126)] + [102]]))
PY
for t in 1 2; do
  echo "== 2. BERT-base, sequence length 128, batch 1, $t thread(s): every DynaBERT cell =="
  "$run" --model .data/bert-base-random --inputs .data/demo_inputs.json --grid --threads "$t" --repeat 9
done
