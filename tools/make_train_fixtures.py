#!/usr/bin/python3
"""Training parity fixtures: tests/fixtures/tiny_train.safetensors (run with /usr/bin/python3).

On the tiny fixture model (tests/fixtures/tiny, float64 from its F16 weights) and its 4 inputs:
- gradients of the loss, dropout off, at cells (1, 1), (0.5, 0.75), (0.25, 0.5), with the
  classification head (cross-entropy, labels 0 2 1 2) and a regression head (classifier row 0,
  MSE against 0.5 -1 2 0.1): the loss and, per tensor, [sum(g * r), sum(g^2), max|g|] where r is
  the deterministic pseudo-random vector of proj_vector() (the C++ test makes the same one), so a
  misplaced gradient cannot match while the fixture stays small;
- one step of the reference code's AdamW (transformers v2.1.1: bias correction in the step size,
  eps outside the sqrt, decoupled decay lr*wd*p except biases and LayerNorm weights) from the
  classification gradients at cell (1, 1): the same per-tensor statistics of the new parameters;
- head and neuron importance over two batches (sequences 0-1, 2-3), evaluation mode, full model,
  in both variants: the official code's cumulative one (gradients never zeroed, |running sum|
  added after each batch) and the paper's (|sum| once);
- the masked-language-model loss of Hugging Face's BertForMaskedLM head (dense, activation,
  LayerNorm, decoder tied to the word embeddings plus its own bias; mean cross-entropy over the
  labelled positions) on the last hidden state, at cells (1, 1) and (0.5, 0.75): the loss and the
  gradient statistics of every tensor, head included. The head's parameters are seeded and
  rounded to F16 values (exact in float) and stored in the file (mlm.param.*), with the labels.

    /usr/bin/python3 tools/make_train_fixtures.py [--check]
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from torch_reference import ElasticBert, normalize_name  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
CELLS = [(1.0, 1.0), (0.5, 0.75), (0.25, 0.5)]
LABELS = [0, 2, 1, 2]
TARGETS = [0.5, -1.0, 2.0, 0.1]


def proj_vector(name, n):
    """r_i in [-1, 1): a 32-bit multiplicative hash of (tensor name, i), identical in C++."""
    seed = 0
    for ch in name.encode():
        seed = (seed * 131 + ch) & 0xFFFFFFFF
    i = np.arange(n, dtype=np.uint64)
    h = ((i + np.uint64(1)) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    h = (h ^ np.uint64(seed)) * np.uint64(2246822519) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    return h.astype(np.float64) / 2.0 ** 32 * 2.0 - 1.0


def stats(name, t):
    if t is None:  # a parameter the cell does not use (a dropped layer): zero gradient
        return [0.0, 0.0, 0.0]
    g = t.detach().double().reshape(-1).numpy()
    return [float((g * proj_vector(name, g.size)).sum()), float((g * g).sum()), float(np.abs(g).max())]


def load_model():
    with open(os.path.join(ROOT, "tiny", "config.json")) as f:
        cfg = json.load(f)
    tensors, _ = st.load(os.path.join(ROOT, "tiny", "model.safetensors"))
    params = {normalize_name(k): torch.tensor(v.astype(np.float64)) for k, v in tensors.items()}
    with open(os.path.join(ROOT, "tiny_inputs.json")) as f:
        inp = json.load(f)
    ids, types, mask = (torch.tensor(inp[k]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    return cfg, params, ids, types, mask


def order(params):
    return sorted(params)


def generate(out_path):
    cfg, base, ids, types, mask = load_model()
    names = order(base)
    out, meta = {}, {"tensors": json.dumps(names), "cells": json.dumps(CELLS)}
    for head in ("cls", "reg"):
        for w, d in CELLS:
            p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
            if head == "reg":
                p["classifier.weight"] = base["classifier.weight"][:1].clone().requires_grad_(True)
                p["classifier.bias"] = base["classifier.bias"][:1].clone().requires_grad_(True)
            logits, _, _ = ElasticBert(cfg, p).forward(ids, types, mask, w, d)
            if head == "cls":
                loss = torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS))
            else:
                loss = torch.nn.functional.mse_loss(logits.view(-1), torch.tensor(TARGETS, dtype=torch.float64))
            loss.backward()
            key = f"grad.{head}.w{w:.2f}_d{d:.2f}"
            out[key + ".loss"] = np.array([loss.item()])
            out[key + ".stats"] = np.array([stats(n, p[n].grad) for n in names])
            if head == "cls" and (w, d) == (1.0, 1.0):
                # one reference AdamW step (state starts at zero, step 1)
                lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
                new = {}
                for n in names:
                    g = p[n].grad.detach()
                    m = (1 - b1) * g
                    v = (1 - b2) * g * g
                    step = lr * math.sqrt(1 - b2) / (1 - b1)
                    x = p[n].detach() - step * m / (v.sqrt() + eps)
                    if not (n.endswith(".bias") or n.endswith("LayerNorm.weight")):
                        x = x - lr * wd * x
                    new[n] = x
                out["adamw.stats"] = np.array([stats(n, new[n]) for n in names])
    for variant in ("cumulative", "paper"):
        p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        L, NH = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        gates = torch.ones(L, NH, dtype=torch.float64, requires_grad=True)
        heads = torch.zeros(L, NH, dtype=torch.float64)
        neurons = torch.zeros(L, cfg["intermediate_size"], dtype=torch.float64)

        def add_scores():
            nonlocal heads, neurons
            heads = heads + gates.grad.abs()
            for l in range(L):
                pre = f"encoder.layer.{l}."
                w1, b1, w2 = p[pre + "intermediate.dense.weight"], p[pre + "intermediate.dense.bias"], p[pre + "output.dense.weight"]
                s_in = (w1 * w1.grad).sum(1) + b1 * b1.grad
                s_out = (w2 * w2.grad).sum(0)
                neurons[l] += (s_in.abs() + s_out.abs()).detach()

        for lo in (0, 2):
            sl = slice(lo, lo + 2)
            logits, _, _ = ElasticBert(cfg, p).forward(ids[sl], types[sl], mask[sl], gates=gates)
            torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS[sl])).backward()  # never zeroed
            if variant == "cumulative":
                add_scores()
        if variant == "paper":
            add_scores()
        out[f"importance.{variant}.heads"] = heads.detach().numpy()
        out[f"importance.{variant}.neurons"] = neurons.numpy()
    # masked-language-model head
    g = torch.Generator().manual_seed(7)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    f16 = lambda t: t.half().double()
    head = {"cls.predictions.transform.dense.weight": f16(torch.randn(H, H, generator=g, dtype=torch.float64) * 0.1),
            "cls.predictions.transform.dense.bias": f16(torch.randn(H, generator=g, dtype=torch.float64) * 0.1),
            "cls.predictions.transform.LayerNorm.weight": f16(1 + torch.randn(H, generator=g, dtype=torch.float64) * 0.1),
            "cls.predictions.transform.LayerNorm.bias": f16(torch.randn(H, generator=g, dtype=torch.float64) * 0.1),
            "cls.predictions.bias": f16(torch.randn(V, generator=g, dtype=torch.float64) * 0.1)}
    labels = torch.full_like(ids, -100)
    for b in range(ids.shape[0]):
        for s_ in range(ids.shape[1]):
            if mask[b, s_] and (b + 2 * s_) % 3 == 1:
                labels[b, s_] = (int(ids[b, s_]) * 7 + 3) % V
    mlm_names = sorted(list(base) + list(head))
    meta["mlm_tensors"] = json.dumps(mlm_names)
    for k, v in head.items():
        out["mlm.param." + k] = v.numpy()
    out["mlm.labels"] = labels.double().numpy()
    for w, d in CELLS[:2]:
        p = {k: v.clone().requires_grad_(True) for k, v in list(base.items()) + list(head.items())}
        _, _, states = ElasticBert(cfg, p).forward(ids, types, mask, w, d)
        x = states[-1] @ p["cls.predictions.transform.dense.weight"].T + p["cls.predictions.transform.dense.bias"]
        x = torch.nn.functional.gelu(x)
        x = torch.nn.functional.layer_norm(x, (H,), p["cls.predictions.transform.LayerNorm.weight"],
                                           p["cls.predictions.transform.LayerNorm.bias"], cfg["layer_norm_eps"])
        scores = x @ p["embeddings.word_embeddings.weight"].T + p["cls.predictions.bias"]
        loss = torch.nn.functional.cross_entropy(scores.view(-1, V), labels.view(-1), ignore_index=-100)
        loss.backward()
        key = f"mlm.w{w:.2f}_d{d:.2f}"
        out[key + ".loss"] = np.array([loss.item()])
        out[key + ".stats"] = np.array([stats(n, p[n].grad) for n in mlm_names])
    st.save(out_path, {k: v.astype(np.float64) for k, v in out.items()}, meta)


def main():
    path = os.path.join(ROOT, "tiny_train.safetensors")
    if "--check" in sys.argv:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            generate(os.path.join(d, "x.safetensors"))
            new, nm = st.load(os.path.join(d, "x.safetensors"))
            old, om = st.load(path)
            assert set(new) == set(old) and nm == om, "tensors or metadata differ"
            for k in new:
                assert np.allclose(new[k], old[k], rtol=1e-9, atol=1e-12), f"{k} differs"
        print("make_train_fixtures --check: 1 passed, 0 failed")
        return
    generate(path)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
