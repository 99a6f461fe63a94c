#!/usr/bin/python3
"""The command-line programs under bad input (a ctest): every case ends with a named error on stderr
and exit code 2 (never an abort, a signal or silent garbage), or, for dynabert_serve, with the bad
line reported by number while the others are still classified.

    /usr/bin/python3 tools/check_cli.py BUILD_DIR/examples VOCAB_TXT

Cases: dynabert_run (a model of hidden size 2 printing its pooled output, --labels -1, --threads 0,
--width 0, an inputs file declaring a huge batch); dynabert_train (--batch 0, --lr nan, a misspelt
key and a binary file as --config); dynabert_export (--out equal to, inside or containing --model,
an existing folder of other files, a trailing slash, the INT8 export loading back); dynabert_serve
(NUL, control bytes, invalid UTF-8, an over-long line, a stream without newlines, --budget-ms 0,
a precision the grid lacks; --json, --batch and --embed output).
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

PASSED, FAILED = [], []


def run(cmd, stdin=None, timeout=120):
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def case(name, cmd, want_rc=2, want_err=None, want_out=None, stdin=None, timeout=120):
    """Runs cmd; the case passes when the exit code is want_rc (None: any refusal, 1..127; 105 is
    CLI11's code for an option its validator refuses) and stderr / stdout hold the strings."""
    try:
        rc, out, err = run(cmd, stdin, timeout)
    except subprocess.TimeoutExpired:
        FAILED.append(f"{name}: timed out after {timeout} s")
        return None
    problems = []
    if want_rc is None:  # any refusal: a non-zero exit code that is not a signal or an abort
        if not 0 < rc < 128:
            problems.append(f"exit code {rc}, expected a refusal (1..127)")
    elif rc != want_rc:
        problems.append(f"exit code {rc}, expected {want_rc}")
    for w in ([want_err] if isinstance(want_err, str) else want_err or []):
        if w not in err:
            problems.append(f"stderr lacks {w!r}")
    for w in ([want_out] if isinstance(want_out, str) else want_out or []):
        if w not in out:
            problems.append(f"stdout lacks {w!r}")
    if problems:
        FAILED.append(f"{name}: {'; '.join(problems)}\n  stdout: {out[-600:]}\n  stderr: {err[-600:]}")
    else:
        PASSED.append(name)
    return out


def tiny_hidden2(folder):
    """A BERT of hidden size 2 (one head of size 2, FFN 4, 50 tokens) with a pooler and no classifier."""
    os.makedirs(folder)
    g = np.random.default_rng(0)
    H, I, V = 2, 4, 50
    cfg = {"model_type": "bert", "vocab_size": V, "hidden_size": H, "num_hidden_layers": 1, "num_attention_heads": 1,
           "intermediate_size": I, "max_position_embeddings": 16, "type_vocab_size": 2, "hidden_act": "gelu",
           "layer_norm_eps": 1e-12}
    json.dump(cfg, open(os.path.join(folder, "config.json"), "w"))
    w = lambda *s: (g.standard_normal(s) * 0.5).astype(np.float32)
    t = {"embeddings.word_embeddings.weight": w(V, H), "embeddings.position_embeddings.weight": w(16, H),
         "embeddings.token_type_embeddings.weight": w(2, H), "embeddings.LayerNorm.weight": np.ones(H, np.float32),
         "embeddings.LayerNorm.bias": np.zeros(H, np.float32), "pooler.dense.weight": w(H, H), "pooler.dense.bias": w(H)}
    p = "encoder.layer.0."
    for part in ("query", "key", "value"):
        t[p + f"attention.self.{part}.weight"], t[p + f"attention.self.{part}.bias"] = w(H, H), w(H)
    t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"] = w(H, H), w(H)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        t[p + ln + ".weight"], t[p + ln + ".bias"] = np.ones(H, np.float32), np.zeros(H, np.float32)
    t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = w(I, H), w(I)
    t[p + "output.dense.weight"], t[p + "output.dense.bias"] = w(H, I), w(H)
    st.save(os.path.join(folder, "model.safetensors"), t)


def main():
    bindir, vocab = sys.argv[1], sys.argv[2]
    exe = lambda name: os.path.join(bindir, name)  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="dynabert_cli_")
    try:
        # ---- dynabert_run
        model = os.path.join(tmp, "model")
        rc, _, err = run([exe("dynabert_run"), "--generate", model, "--preset", "tiny", "--labels", "2", "--seed", "5"])
        assert rc == 0, err
        inputs = os.path.join(tmp, "inputs.json")
        json.dump([[101, 2023, 2001, 102], [101, 2307, 102]], open(inputs, "w"))
        h2 = os.path.join(tmp, "hidden2")
        tiny_hidden2(h2)
        two = os.path.join(tmp, "two.json")
        json.dump([[1, 5, 7, 2]], open(two, "w"))
        case("run: pooled output of a hidden-2 model", [exe("dynabert_run"), "--model", h2, "--inputs", two], 0,
             want_out="pooled[0..1]")
        case("run: --labels -1", [exe("dynabert_run"), "--generate", os.path.join(tmp, "g"), "--labels", "-1"], 105,
             want_err="--labels")
        case("run: --threads 0", [exe("dynabert_run"), "--model", model, "--inputs", inputs, "--threads", "0"], 105,
             want_err="--threads")
        case("run: --width 0", [exe("dynabert_run"), "--model", model, "--inputs", inputs, "--width", "0"],
             want_err="width multiplier 0")
        big = os.path.join(tmp, "big.json")
        with open(big, "w") as f:  # 20,000 sequences of 20,000 ids would need 3 GB padded: refused first
            f.write("[" + ",".join(["[" + ",".join(["1"] * 200) + "]"] * 2) + "," + "[" + ",".join(["1"] * 20000) + "]]")
        case("run: sequence longer than the model", [exe("dynabert_run"), "--model", model, "--inputs", big],
             want_err="the model takes at most")
        case("run: missing model folder", [exe("dynabert_run"), "--model", os.path.join(tmp, "nope"), "--inputs", inputs],
             want_err="no such file")

        # ---- dynabert_train (bad options are refused before any data is read)
        out = os.path.join(tmp, "train")
        case("train: --batch 0", [exe("dynabert_train"), "--out", out, "--batch", "0"], 105, want_err="--batch")
        case("train: --lr nan", [exe("dynabert_train"), "--out", out, "--lr", "nan"], None, want_err="lr")
        cfgf = os.path.join(tmp, "run.toml")
        open(cfgf, "w").write("batch = 8\nlearning_rat = 0.001\n")
        case("train: misspelt config key", [exe("dynabert_train"), "--out", out, "--config", cfgf], None,
             want_err="learning_rat")
        binf = os.path.join(tmp, "binary.toml")
        open(binf, "wb").write(bytes(range(256)) * 4)
        case("train: binary config", [exe("dynabert_train"), "--out", out, "--config", binf], None, want_err="config")

        # ---- dynabert_export
        ex = exe("dynabert_export")
        case("export: --out equal to --model", [ex, "--model", model, "--out", model, "--width", "0.5"], want_err="overlaps")
        case("export: --out inside --model", [ex, "--model", model, "--out", os.path.join(model, "sub")], want_err="overlaps")
        case("export: --out containing --model", [ex, "--model", model, "--out", tmp], want_err="overlaps")
        other = os.path.join(tmp, "other")
        os.makedirs(other)
        open(os.path.join(other, "notes.txt"), "w").write("keep me\n")
        case("export: --out a folder of other files", [ex, "--model", model, "--out", other], want_err="not a checkpoint")
        assert os.path.exists(os.path.join(other, "notes.txt")), "export deleted a folder of other files"
        cell = os.path.join(tmp, "cell")
        case("export: trailing slash", [ex, "--model", model, "--out", cell + "/", "--width", "0.5", "--depth", "0.5"], 0,
             want_out="exported")
        case("export: again over its own export", [ex, "--model", model, "--out", cell, "--width", "0.5"], 0, want_out="exported")
        leftovers = [n for n in os.listdir(tmp) if ".tmp." in n or ".old." in n]
        if leftovers:
            FAILED.append(f"export: left {leftovers} beside --out")
        cell8 = os.path.join(tmp, "cell-int8")
        case("export: INT8", [ex, "--model", model, "--out", cell8, "--width", "0.5", "--precision", "int8"], 0,
             want_out="int8")
        tensors, meta = st.load(os.path.join(cell8, "model.safetensors"))
        q = [n for n, a in tensors.items() if a.dtype == np.int8]
        if len(q) != 6 * json.load(open(os.path.join(cell8, "config.json")))["num_hidden_layers"] or \
                not all(n + "_scale" in tensors for n in q) or "dynabert_int8" not in meta:
            FAILED.append(f"export: INT8 tensors {q}")
        else:
            PASSED.append("export: INT8 holds I8 weights with row scales")
        case("export: INT8 checkpoint runs", [exe("dynabert_run"), "--model", cell8, "--inputs", inputs], 0, want_out="logits")

        # ---- dynabert_serve
        if not os.path.exists(vocab):
            print(f"check_cli: {vocab} not fetched; the dynabert_serve cases are skipped")
        else:
            shutil.copy(vocab, os.path.join(model, "vocab.txt"))
            serve = [exe("dynabert_serve"), "--model", model, "--width", "1", "--depth", "1"]
            lines = b"a good film\nbad\x00byte\nbell\x07here\nbroken \xff\xfe utf8\n" + b"x" * 5000 + b"\nfine again\n"
            case("serve: bad lines are reported, the others classified", serve + ["--max-line-bytes", "1000"], 0,
                 want_err=["line 2: holds a NUL byte", "line 3: holds control byte 7", "line 4: invalid UTF-8",
                           "line 5: longer than 1000 bytes", "4 of 6 lines not classified"],
                 want_out=["width 1.00 depth 1.00 fp32"], stdin=lines)
            case("serve: a stream without newlines", serve + ["--max-line-bytes", "4096"], 0,
                 want_err="line 1: longer than 4096 bytes", stdin=b"y" * (8 << 20), timeout=120)
            case("serve: --budget-ms 0", serve + ["--budget-ms", "0"], 105, want_err="--budget-ms", stdin=b"x\n")
            case("serve: INT8 fixed cell", serve + ["--precision", "int8", "--probabilities"], 0, want_out=["int8", "="],
                 stdin=b"a good film\n")
            out = case("serve: --json --batch 3, results in input order",
                       serve + ["--json", "--batch", "3", "--probabilities"], 0,
                       stdin=b"a good film\nbad\x00\nthe staff were kind\nit broke\n\nfine\n")
            if out is not None:
                rows = [json.loads(l) for l in out.splitlines()]
                ok = [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6] and "error" in rows[1] and "error" in rows[4] \
                    and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 and r["batch"] in (1, 2, 3)
                            for r in rows if "error" not in r)
                (PASSED if ok else FAILED).append("serve: --json rows" + ("" if ok else f": {rows}"))
            out = case("serve: --embed mean --json", serve + ["--embed", "mean", "--json"], 0, stdin=b"a good film\nnever\n")
            if out is not None:
                rows = [json.loads(l) for l in out.splitlines()]
                hidden = json.load(open(os.path.join(model, "config.json")))["hidden_size"]
                ok = len(rows) == 2 and all(len(r["embedding"]) == hidden and
                                            abs(sum(x * x for x in r["embedding"]) - 1) < 1e-4 for r in rows)
                (PASSED if ok else FAILED).append("serve: embeddings" + ("" if ok else f": {rows}"))
            grid = os.path.join(tmp, "grid.json")
            json.dump([{"width": 1, "depth": 1, "accuracy": 0.9}], open(grid, "w"))
            case("serve: a grid without the precision asked for",
                 [exe("dynabert_serve"), "--model", model, "--budget-ms", "50", "--precision", "int8", "--grid", grid],
                 want_err="no cell in int8", stdin=b"x\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in FAILED:
        print("FAILED", f)
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
