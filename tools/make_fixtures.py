#!/usr/bin/python3
"""Writes the parity fixtures under tests/fixtures/ (run: /usr/bin/python3 tools/make_fixtures.py).

tiny/            a random BERT (4 layers, hidden 64, 4 heads, FFN 256, vocabulary 512, 3 labels) as a
                 Hugging Face folder: config.json + model.safetensors (F16 weights, 'bert.' prefix)
tiny_inputs.json 4 sequences of length 10: mixed lengths, padding, token types, one mask with a hole
tiny_expected.safetensors
                 per cell (12 DynaBERT cells, 3 rounding cells, one custom per-layer cell with head
                 gates): logits [B, 3] and every hidden state [(depth + 1), B, S, H], computed by
                 tools/torch_reference.py in float64 from the F16-rounded weights
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from torch_reference import ElasticBert, embedding_shapes, encoder_shapes  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
CELLS = [(w, d) for w in (1.0, 0.75, 0.5, 0.25) for d in (1.0, 0.75, 0.5)] + \
        [(0.375, 2 / 3), (0.625, 0.625), (0.875, 0.375)]


def cell_name(w, d):
    return f"w{w:.4f}_d{d:.4f}"


def main():
    import argparse
    ap = argparse.ArgumentParser(description="write (or --check) the parity fixtures")
    ap.add_argument("--out", default=ROOT, help="folder to write into (default tests/fixtures)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare with the committed fixtures")
    a = ap.parse_args()
    if a.check:
        return check()
    generate(a.out)


def check():
    """Regenerates the fixtures and compares them with tests/fixtures (exact weights and inputs,
    outputs within 1e-6): the committed files are what this script makes."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        generate(d)
        for name in ("tiny/model.safetensors", "tiny_expected.safetensors"):
            new, new_meta = st.load(os.path.join(d, name))
            old, old_meta = st.load(os.path.join(ROOT, name))
            assert set(new) == set(old) and new_meta == old_meta, f"{name}: tensors or metadata differ"
            for k in new:
                diff = np.abs(new[k].astype(np.float64) - old[k].astype(np.float64)).max() if new[k].size else 0.0
                assert new[k].shape == old[k].shape and diff <= 1e-6, f"{name}: {k} differs by {diff}"
        for name in ("tiny/config.json", "tiny_inputs.json"):
            with open(os.path.join(d, name)) as f1, open(os.path.join(ROOT, name)) as f2:
                assert json.load(f1) == json.load(f2), f"{name} differs"
    print("make_fixtures --check: 4 passed, 0 failed")


def generate(root):
    g = torch.Generator().manual_seed(20201218)
    cfg = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 512,
           "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
           "max_position_embeddings": 32, "type_vocab_size": 2, "pad_token_id": 0, "layer_norm_eps": 1e-12,
           "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
           "id2label": {"0": "neg", "1": "neu", "2": "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}}
    H, I, L, V = 64, 256, 4, 512
    shapes = embedding_shapes(V, 32, 2, H)
    shapes.update(encoder_shapes(L, H, I))
    shapes.update({"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,), "classifier.weight": (3, H),
                   "classifier.bias": (3,)})
    params16 = {}
    for name, shape in shapes.items():
        if name.endswith("LayerNorm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = 0.05 * torch.randn(shape, generator=g)
        else:
            std = 0.15 if "embeddings" not in name else 0.5
            t = std * torch.randn(shape, generator=g)
        params16[name] = t.to(torch.float16)
    params = {k: v.to(torch.float64) for k, v in params16.items()}

    os.makedirs(os.path.join(root, "tiny"), exist_ok=True)
    with open(os.path.join(root, "tiny", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    st.save(os.path.join(root, "tiny", "model.safetensors"),
            {("" if k.startswith("classifier") else "bert.") + k: v.numpy() for k, v in params16.items()},
            {"format": "pt"})

    B, S = 4, 10
    ids = torch.randint(1, V, (B, S), generator=g)
    types = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.long)
    for b, n in enumerate((10, 7, 4, 9)):
        mask[b, :n] = 1
        ids[b, n:] = 0
        types[b, n // 2:n] = 1
    mask[3, 2] = 0  # a hole inside sequence 3
    with open(os.path.join(root, "tiny_inputs.json"), "w") as f:
        json.dump({"input_ids": ids.tolist(), "token_type_ids": types.tolist(),
                   "attention_mask": mask.tolist()}, f)

    model = ElasticBert(cfg, params)
    out, cells = {}, []
    for w, d in CELLS:
        with torch.no_grad():
            logits, _, states = model.forward(ids, types, mask, w, d)
        name = cell_name(w, d)
        cells.append({"name": name, "width": w, "depth": d})
        out[f"{name}.logits"] = logits.to(torch.float32).numpy()
        out[f"{name}.hidden_states"] = torch.stack(states).to(torch.float32).numpy()
    # The general form: per-layer heads and neurons, layers 0, 2, 3, and per-head gates.
    custom = {"layers": [0, 2, 3], "heads": [4, 1, 3, 2], "neurons": [256, 7, 100, 33]}
    gates = (0.5 + torch.rand(4, 4, generator=g)).to(torch.float32)
    with torch.no_grad():
        logits, _, states = model.forward(ids, types, mask, heads=custom["heads"], neurons=custom["neurons"],
                                          layers=custom["layers"], gates=gates.to(torch.float64))
    cells.append({"name": "custom", **custom})
    out["custom.gates"] = gates.numpy()
    out["custom.logits"] = logits.to(torch.float32).numpy()
    out["custom.hidden_states"] = torch.stack(states).to(torch.float32).numpy()
    st.save(os.path.join(root, "tiny_expected.safetensors"), out, {"cells": json.dumps(cells)})
    print("wrote fixtures for", len(cells), "cells to", os.path.normpath(root))


if __name__ == "__main__":
    main()
