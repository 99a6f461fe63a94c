#!/usr/bin/env bash
# The whole method for RoBERTa through the programs, at a tiny size: dynabert_train --arch roberta
# (MLM pretraining with the byte-level BPE, teacher, importance, rewiring, stages 1 and 2, the
# grid in every precision), then the checkpoint served from text under a budget, at a fixed cell and
# with per-sample early exit, and a cell exported as a standalone RoBERTa checkpoint.
#   tests/cli/roberta_pipeline.sh BIN_DIR DATA_DIR
# Without .data/roberta-bpe (scripts/fetch-data.sh bpe) it skips (exit 77), except under CI=true.
set -euo pipefail
bin=$1 data=$2
for need in roberta-bpe/vocab.json sentiment/package brown/package; do
  if [[ ! -e $data/$need ]]; then
    echo "roberta_pipeline: $data/$need is missing (scripts/fetch-data.sh bpe sentiment brown)"
    [[ ${CI:-} == true ]] && exit 1 || exit 77
  fi
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# the BPE through dynabert_tokenize: "Hello world" is Hello + Ġworld (GPT-2 15496, 995; + 4 specials)
printf '["Hello world"]' > "$out/in.json"
"$bin/dynabert_tokenize" --vocab "$data/roberta-bpe" --input "$out/in.json" | grep -q '"ids":\[15500,999\]' ||
  { echo "roberta_pipeline: dynabert_tokenize gave $("$bin/dynabert_tokenize" --vocab "$data/roberta-bpe" --input "$out/in.json")"; exit 1; }
"$bin/dynabert_train" --arch roberta --data "$data" --out "$out/run" --layers 2 --hidden 32 --heads 4 --ffn 64 \
  --pretrain-steps 6 --pretrain-corpus brown --pretrain-batch 8 --pretrain-max-len 32 --max-len 32 \
  --teacher-epochs 1 --stage1-epochs 1 --stage2-epochs 1 --no-ablations --deterministic --threads 1 \
  > "$out/train.log" 2>&1 || { cat "$out/train.log"; exit 1; }
ck=$out/run/checkpoint
grep -q '"model_type": "roberta"' "$ck/config.json" || { echo "roberta_pipeline: config.json is not RoBERTa's"; exit 1; }
for f in vocab.json merges.txt model.safetensors; do
  [[ -f $ck/$f ]] || { echo "roberta_pipeline: the checkpoint lacks $f"; exit 1; }
done
grep -q "MLM after 6 steps" "$out/train.log" || { echo "roberta_pipeline: no MLM pretraining"; cat "$out/train.log"; exit 1; }
[[ $(grep -c '^| 0\.[0-9]* |\|^| 1\.00 |' "$out/run/results.md") -eq 12 ]] || { echo "roberta_pipeline: not 12 cells"; exit 1; }
texts=$'A wonderful little phone.\nNever again, it broke in a week.'
n=$(printf '%s\n' "$texts" | "$bin/dynabert_serve" --model "$ck" --budget-ms 50 --threads 1 --json 2>/dev/null | grep -c '"label"')
[[ $n -eq 2 ]] || { echo "roberta_pipeline: dynabert_serve under a budget answered $n of 2 lines"; exit 1; }
n=$(printf '%s\n' "$texts" | "$bin/dynabert_serve" --model "$ck" --width 0.5 --depth 0.5 --precision int8 --threads 1 2>/dev/null | grep -c 'width 0.50 depth 0.50')
[[ $n -eq 2 ]] || { echo "roberta_pipeline: dynabert_serve at a fixed cell answered $n of 2 lines"; exit 1; }
# per-sample early exit: every line answered, each by one of the cascade's cells
n=$(printf '%s\n' "$texts" | "$bin/dynabert_serve" --model "$ck" --early-exit 0.25x0.5,1x1 --exit-threshold 0.6 --json \
  --threads 1 2>/dev/null | grep -c '"exit_stage"')
[[ $n -eq 2 ]] || { echo "roberta_pipeline: dynabert_serve --early-exit answered $n of 2 lines"; exit 1; }
if printf 'x\n' | "$bin/dynabert_serve" --model "$ck" --early-exit 0.25 > /dev/null 2> "$out/err"; then
  echo "roberta_pipeline: a malformed --early-exit was accepted"; exit 1
fi
grep -q "is not WIDTHxDEPTH" "$out/err" || { echo "roberta_pipeline: unclear error: $(cat "$out/err")"; exit 1; }
# the early-exit measurement on the test split: 12 fixed cells and 2 cascades x 8 thresholds
"$bin/dynabert_early_exit" --model "$ck" --task sentiment --data "$data" --max-len 32 --rounds 1 --out "$out/ee.csv" \
  > /dev/null 2>&1 || { echo "roberta_pipeline: dynabert_early_exit failed"; exit 1; }
[[ $(grep -c '^cell,' "$out/ee.csv") -eq 12 && $(grep -c '^cascade,' "$out/ee.csv") -eq 16 ]] ||
  { echo "roberta_pipeline: early-exit CSV has the wrong rows"; cat "$out/ee.csv"; exit 1; }
"$bin/dynabert_export" --model "$ck" --width 0.5 --depth 0.5 --out "$out/cell" > /dev/null
grep -q '"model_type": "roberta"' "$out/cell/config.json" && [[ -f $out/cell/merges.txt ]] ||
  { echo "roberta_pipeline: the exported cell is not a RoBERTa checkpoint with its tokenizer"; exit 1; }
echo "roberta_pipeline: trained, served (budget and fixed cell, INT8) and exported a RoBERTa"
