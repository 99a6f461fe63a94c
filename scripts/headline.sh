#!/usr/bin/env bash
# The longer documented run behind the headline results of docs/results.md (about an hour on
# 2 cores): MLM pretraining of the small BERT on the Brown corpus and the SpamAssassin training
# mails, then DynaBERT with all three ablations on (1) SpamAssassin and (2) the UCI sentiment
# sentences, both starting from that pretrained model. Resumable: run it again after a kill.
#   scripts/headline.sh [extra dynabert_train options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --plot
scripts/fetch-data.sh vocab sentiment spam brown
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target dynabert_train
train=build/release/examples/dynabert_train
threads=$(nproc)

echo "== 1. SpamAssassin: MLM pretraining (3000 steps), teacher, importance, rewiring, stages 1 and 2, ablations =="
"$train" --task spam --out out/spam --threads "$threads" --pretrain-steps 3000 \
  --teacher-epochs 4 --stage1-epochs 2 --stage2-epochs 2 "$@"
/usr/bin/python3 tools/plot_grid.py out/spam/results.csv --title "DynaBERT on SpamAssassin (test split)"

echo "== 2. UCI sentiment from the same pretrained model =="
"$train" --task sentiment --out out/sentiment-pretrained --threads "$threads" \
  --init "out/spam/state/pretrain/$(cat out/spam/state/pretrain/latest)" "$@"
/usr/bin/python3 tools/plot_grid.py out/sentiment-pretrained/results.csv --title "DynaBERT on UCI sentiment, MLM-pretrained (test split)"
