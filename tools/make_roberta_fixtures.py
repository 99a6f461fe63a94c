#!/usr/bin/python3
"""RoBERTa parity fixtures under tests/fixtures/ (run: /usr/bin/python3 tools/make_roberta_fixtures.py [--check]).

tiny_roberta/    a random RoBERTa (4 layers, hidden 32, 4 heads, FFN 64, vocabulary 128, 3 labels,
                 pad_token_id 1, positions from 2, one token type, LayerNorm eps 1e-5) as a Hugging
                 Face folder: config.json + model.safetensors (F16 weights) in the names of
                 RobertaForSequenceClassification ("roberta." encoder, classifier.dense /
                 classifier.out_proj) and RobertaForMaskedLM (lm_head.dense, lm_head.layer_norm,
                 lm_head.bias, lm_head.decoder.weight tied to the word embeddings), plus the
                 RobertaModel pooler (roberta.pooler.dense), which neither head uses;
tiny_roberta_expected.safetensors (computed in float64 from the F16-rounded weights by
tools/torch_reference.py; cell outputs stored as F32, losses and statistics as F64):
  - <cell>.logits [B, 3] and <cell>.hidden_states [(depth + 1), B, S, H] at the 12 DynaBERT cells and
    3 rounding cells, on a padded batch of 4 sequences (<s> ... </s>, <pad> = 1, one mask hole);
  - grad.w<w>_d<d>.loss / .stats: cross-entropy of the classification head (labels 0 2 1 2),
    dropout off, and per tensor [sum(g * r), sum(g^2), max|g|] (r: tools/make_train_fixtures.py's
    proj_vector) at cells (1, 1) and (0.5, 0.75);
  - adamw.stats: the same statistics of the parameters after one reference AdamW step from the
    (1, 1) gradients (lr 1e-3, betas 0.9/0.999, eps 1e-8, decay 0.01 except names containing
    'bias' or 'LayerNorm.weight', as the reference code's no_decay list);
  - mlm.labels [B * S] and mlm.w<w>_d<d>.loss / .stats: the MLM loss of the lm_head on the last
    hidden state (mean over labelled positions) and every gradient, at (1, 1) and (0.5, 0.75);
    mlm_adamw.stats: the parameters after one AdamW step from the (1, 1) MLM gradients (the
    lm_head's layer_norm.weight is decayed, as the reference's name rule has it).
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from make_train_fixtures import stats  # noqa: E402
from torch_reference import ElasticBert, embedding_shapes, encoder_shapes, mlm_scores, normalize_name  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
CELLS = [(w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)] + \
        [(0.375, 2 / 3), (0.625, 0.625), (0.875, 0.375)]
GRAD_CELLS = [(1.0, 1.0), (0.5, 0.75)]
LABELS = [0, 2, 1, 2]
H, I, L, NH, V, P = 32, 64, 4, 4, 128, 14


def adamw_step(name, t):
    """One step of the reference code's AdamW from zero state (bias correction in the step size,
    eps outside the sqrt, decoupled decay except names containing 'bias' or 'LayerNorm.weight')."""
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
    gr = t.grad.detach()
    m, v = (1 - b1) * gr, (1 - b2) * gr * gr
    x = t.detach() - lr * math.sqrt(1 - b2) / (1 - b1) * m / (v.sqrt() + eps)
    if not any(nd in name for nd in ("bias", "LayerNorm.weight")):
        x = x - lr * wd * x
    return x


def cell_name(w, d):
    return f"w{w:.4f}_d{d:.4f}"


def make_model(g):
    shapes = embedding_shapes(V, P, 1, H)
    shapes.update(encoder_shapes(L, H, I))
    shapes.update({"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,),
                   "classifier.dense.weight": (H, H), "classifier.dense.bias": (H,),
                   "classifier.out_proj.weight": (3, H), "classifier.out_proj.bias": (3,),
                   "lm_head.dense.weight": (H, H), "lm_head.dense.bias": (H,),
                   "lm_head.layer_norm.weight": (H,), "lm_head.layer_norm.bias": (H,), "lm_head.bias": (V,)})
    params16 = {}
    for name, shape in shapes.items():
        if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias") or name == "lm_head.bias":
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            t = (0.5 if "embeddings" in name else 0.2) * torch.randn(shape, generator=g)
        params16[name] = t.to(torch.float16)
    return params16


def generate(root):
    g = torch.Generator().manual_seed(20200412)
    cfg = {"model_type": "roberta", "architectures": ["RobertaForSequenceClassification"], "vocab_size": V,
           "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH, "intermediate_size": I,
           "max_position_embeddings": P, "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
           "layer_norm_eps": 1e-5, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
           "attention_probs_dropout_prob": 0.1, "id2label": {"0": "neg", "1": "neu", "2": "pos"},
           "label2id": {"neg": 0, "neu": 1, "pos": 2}}
    params16 = make_model(g)
    on_disk = {}
    for k, v in params16.items():
        top = k.startswith("classifier.") or k.startswith("lm_head.")
        on_disk[("" if top else "roberta.") + k] = v.numpy()
    on_disk["lm_head.decoder.weight"] = params16["embeddings.word_embeddings.weight"].numpy()  # tied, as saved
    os.makedirs(os.path.join(root, "tiny_roberta"), exist_ok=True)
    with open(os.path.join(root, "tiny_roberta", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    st.save(os.path.join(root, "tiny_roberta", "model.safetensors"), on_disk, {"format": "pt"})

    params = {normalize_name(k): v.to(torch.float64) for k, v in params16.items()}
    B, S = 4, 10
    ids = torch.randint(4, V, (B, S), generator=g)
    types = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.long)
    for b, n in enumerate((10, 7, 4, 9)):
        ids[b, 0], ids[b, n - 1] = 0, 2  # <s> ... </s>
        ids[b, n:] = 1  # <pad>
        mask[b, :n] = 1
    mask[3, 2] = 0  # a hole inside sequence 3
    inputs = {"input_ids": ids.tolist(), "token_type_ids": types.tolist(), "attention_mask": mask.tolist()}

    out, cells = {}, []
    model = ElasticBert(cfg, params)
    for w, d in CELLS:
        with torch.no_grad():
            logits, _, states = model.forward(ids, types, mask, w, d)
        name = cell_name(w, d)
        cells.append({"name": name, "width": w, "depth": d})
        out[f"{name}.logits"] = logits.numpy()
        out[f"{name}.hidden_states"] = torch.stack(states).numpy()

    # the classification head's loss, every gradient, and one AdamW step
    names = sorted(n for n in params if not n.startswith("lm_head.") and not n.startswith("pooler."))
    for w, d in GRAD_CELLS:
        p = {k: params[k].clone().requires_grad_(True) for k in names}
        logits, _, _ = ElasticBert(cfg, p).forward(ids, types, mask, w, d)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS))
        loss.backward()
        key = f"grad.w{w:.2f}_d{d:.2f}"
        out[key + ".loss"] = np.array([loss.item()])
        out[key + ".stats"] = np.array([stats(n, p[n].grad) for n in names])
        if (w, d) == (1.0, 1.0):
            out["adamw.stats"] = np.array([stats(n, adamw_step(n, p[n])) for n in names])

    # the MLM head (lm_head) on the last hidden state
    mlm_names = sorted(n for n in params if not n.startswith("classifier.") and not n.startswith("pooler."))
    labels = torch.full_like(ids, -100)
    for b in range(B):
        for s_ in range(1, S):
            if mask[b, s_] and ids[b, s_] > 3 and (b + 2 * s_) % 3 == 1:
                labels[b, s_] = (int(ids[b, s_]) * 7 + 3) % V
    out["mlm.labels"] = labels.view(-1).double().numpy()
    for w, d in GRAD_CELLS:
        p = {k: params[k].clone().requires_grad_(True) for k in mlm_names}
        _, _, states = ElasticBert(cfg, p).forward(ids, types, mask, w, d)
        scores = mlm_scores(cfg, p, states[-1])
        loss = torch.nn.functional.cross_entropy(scores.view(-1, V), labels.view(-1), ignore_index=-100)
        loss.backward()
        key = f"mlm.w{w:.2f}_d{d:.2f}"
        out[key + ".loss"] = np.array([loss.item()])
        out[key + ".stats"] = np.array([stats(n, p[n].grad) for n in mlm_names])
        if (w, d) == (1.0, 1.0):  # lm_head.layer_norm.weight is decayed: its name lacks 'LayerNorm.weight'
            out["mlm_adamw.stats"] = np.array([stats(n, adamw_step(n, p[n])) for n in mlm_names])

    meta = {"cells": json.dumps(cells), "inputs": json.dumps(inputs), "labels": json.dumps(LABELS),
            "tensors": json.dumps(names), "mlm_tensors": json.dumps(mlm_names)}
    st.save(os.path.join(root, "tiny_roberta_expected.safetensors"), {k: v.astype(np.float32 if k.startswith("w") else np.float64) for k, v in out.items()}, meta)
    return len(cells)


def main():
    if "--check" in sys.argv:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            generate(d)
            for name in ("tiny_roberta/model.safetensors", "tiny_roberta_expected.safetensors"):
                new, nm = st.load(os.path.join(d, name))
                old, om = st.load(os.path.join(ROOT, name))
                assert set(new) == set(old) and nm == om, f"{name}: tensors or metadata differ"
                for k in new:
                    assert np.allclose(new[k].astype(np.float64), old[k].astype(np.float64), rtol=1e-9, atol=1e-12), \
                        f"{name}: {k} differs"
            with open(os.path.join(d, "tiny_roberta", "config.json")) as f1, \
                    open(os.path.join(ROOT, "tiny_roberta", "config.json")) as f2:
                assert json.load(f1) == json.load(f2), "config.json differs"
        print("make_roberta_fixtures --check: 3 passed, 0 failed")
        return
    n = generate(ROOT)
    print("wrote RoBERTa fixtures for", n, "cells to", os.path.normpath(ROOT))


if __name__ == "__main__":
    main()
