#!/usr/bin/python3
"""dynabert_rewire end to end (a ctest): a small random checkpoint with the bert-base-uncased
vocabulary, labelled sentences as JSONL, then

  - the rewired checkpoint computes the same logits as the original at full size (dynabert_run);
  - importance.safetensors holds the scores and permutations, and each layer's head and neuron
    permutations are permutations sorting the scores in descending order;
  - the rewired checkpoint's weights are the original's, permuted;
  - bad calls (an --out equal to --model, a label outside the head) fail with a message.

    /usr/bin/python3 tools/check_rewire.py BUILD_DIR/examples VOCAB_TXT
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def run(cmd, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if ok and r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def logits(bindir, model, inputs):
    out = run([os.path.join(bindir, "dynabert_run"), "--model", model, "--inputs", inputs]).stdout
    return [[float(v) for v in line.split("logits:")[1].split("->")[0].split()] for line in out.splitlines() if "logits:" in line]


def main():
    bindir, vocab = sys.argv[1], sys.argv[2]
    if not os.path.exists(vocab):
        print(f"check_rewire: {vocab} not fetched; skipped")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    tmp = tempfile.mkdtemp(prefix="dynabert_rewire_")
    passed = 0
    try:
        src = os.path.join(tmp, "model")
        run([os.path.join(bindir, "dynabert_run"), "--generate", src, "--preset", "tiny", "--labels", "2", "--seed", "3"])
        shutil.copy(vocab, os.path.join(src, "vocab.txt"))
        texts = ["the food was wonderful", "worst phone i ever owned", "i would not recommend it", "great value",
                 "the staff were friendly and kind", "it broke after a week", "exactly as described", "never again"]
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for i, t in enumerate(texts * 3):
                f.write(json.dumps({"text": t, "label": i % 2}) + "\n")
        out = os.path.join(tmp, "rewired")
        run([os.path.join(bindir, "dynabert_rewire"), "--model", src, "--data", data, "--format", "jsonl", "--out", out,
             "--batch", "4"])
        inputs = os.path.join(tmp, "inputs.json")
        with open(inputs, "w") as f:
            json.dump([[101, 2023, 2001, 2307, 102], [101, 6487, 102], [101, 1045, 2293, 2009, 1012, 102]], f)
        a, b = np.array(logits(bindir, src, inputs)), np.array(logits(bindir, out, inputs))
        assert a.shape == (3, 2) and b.shape == (3, 2), (a, b)
        assert np.max(np.abs(a - b)) < 1e-4, f"rewired logits differ: {a} vs {b}"
        passed += 1
        imp = st.load(os.path.join(out, "importance.safetensors"))[0]
        cfg = json.load(open(os.path.join(src, "config.json")))
        L, NH, I = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"]
        assert imp["heads"].shape == (L, NH) and imp["neurons"].shape == (L, I)
        for l in range(L):
            for scores, perm in ((imp["heads"][l], imp["head_permutation"][l]), (imp["neurons"][l], imp["neuron_permutation"][l])):
                p = perm.astype(int)
                assert sorted(p.tolist()) == list(range(len(p))), f"layer {l}: not a permutation"
                assert np.all(np.diff(scores[p]) <= 0), f"layer {l}: not in descending importance"
        passed += 1
        w0, w1 = st.load(os.path.join(src, "model.safetensors"))[0], st.load(os.path.join(out, "model.safetensors"))[0]
        dh = cfg["hidden_size"] // NH
        for l in range(L):
            pre = f"bert.encoder.layer.{l}."
            ph, pn = imp["head_permutation"][l].astype(int), imp["neuron_permutation"][l].astype(int)
            rows = np.concatenate([np.arange(h * dh, (h + 1) * dh) for h in ph])
            assert np.array_equal(w1[pre + "attention.self.query.weight"], w0[pre + "attention.self.query.weight"][rows])
            assert np.array_equal(w1[pre + "intermediate.dense.weight"], w0[pre + "intermediate.dense.weight"][pn])
            assert np.array_equal(w1[pre + "output.dense.weight"], w0[pre + "output.dense.weight"][:, pn])
        passed += 1
        r = run([os.path.join(bindir, "dynabert_rewire"), "--model", src, "--data", data, "--format", "jsonl", "--out", src], ok=False)
        assert r.returncode == 2 and "overlaps" in r.stderr, r.stderr
        with open(data, "a") as f:
            f.write(json.dumps({"text": "one more", "label": 5}) + "\n")
        r = run([os.path.join(bindir, "dynabert_rewire"), "--model", src, "--data", data, "--format", "jsonl", "--out", out], ok=False)
        assert r.returncode == 2 and "has label 5" in r.stderr, r.stderr
        passed += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"check_rewire: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
