#!/usr/bin/python3
"""Checks dynabert_export against the PyTorch reference (a ctest test).

For several sub-networks of the committed tiny model (DynaBERT cells and a custom per-layer
shape), runs `dynabert_export`, then loads the exported folder the way Hugging Face's BertModel
builds a pruned model from config.json (per layer num_attention_heads - len(pruned_heads[l])
heads, intermediate_size neurons, or dynabert_intermediate_sizes[l] when present), checks every
tensor has exactly that shape, runs it at full size with tools/torch_reference.py in float64 and
compares logits and every hidden state with the elastic reference run at that cell of the
original model. Also checks that the file size follows the kept parameters, and that a cell of the
tiny RoBERTa exports as a RoBERTa checkpoint (model_type, names) computing the cell.

    /usr/bin/python3 tools/check_export.py build/dev/examples/dynabert_export
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402
from torch_reference import ElasticBert, normalize_name  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def load(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    t, _ = st.load(os.path.join(folder, "model.safetensors"))
    return cfg, {normalize_name(k): torch.from_numpy(v.astype(np.float64)) for k, v in t.items()}


def hf_shapes(cfg):
    """Per-layer (heads, neurons) as Hugging Face derives them from config.json."""
    NH, L = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    pruned = {int(k): v for k, v in cfg.get("pruned_heads", {}).items()}
    sizes = cfg.get("dynabert_intermediate_sizes") or [cfg["intermediate_size"]] * L
    return [NH - len(pruned.get(l, [])) for l in range(L)], sizes


def inputs():
    with open(os.path.join(ROOT, "tiny_inputs.json")) as f:
        j = json.load(f)
    return (torch.tensor(j["input_ids"]), torch.tensor(j["token_type_ids"]), torch.tensor(j["attention_mask"]))


def main():
    exe = sys.argv[1]
    cfg, p = load(os.path.join(ROOT, "tiny"))
    ids, types, mask = inputs()
    src_params = sum(v.numel() for v in p.values())
    cases = [(["--width", "0.5", "--depth", "0.5"], dict(width=0.5, depth=0.5)),
             (["--width", "0.75", "--depth", "1"], dict(width=0.75, depth=1.0)),
             (["--width", "0.25", "--depth", "0.75"], dict(width=0.25, depth=0.75)),
             (["--layers", "0,2,3", "--heads", "4,1,3", "--neurons", "256,40,100"],
              dict(layers=[0, 2, 3], heads=[4, 4, 1, 3], neurons=[256, 256, 40, 100]))]
    failed = 0
    dh = cfg["hidden_size"] // cfg["num_attention_heads"]
    for args, ref_kw in cases:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "small")
            subprocess.run([exe, "--model", os.path.join(ROOT, "tiny"), "--out", out] + args, check=True,
                           stdout=subprocess.DEVNULL)
            ecfg, ep = load(out)
            heads, sizes = hf_shapes(ecfg)
            for l in range(ecfg["num_hidden_layers"]):  # shapes exactly as BertModel builds them
                pre = f"encoder.layer.{l}."
                a = heads[l] * dh
                assert tuple(ep[pre + "attention.self.query.weight"].shape) == (a, cfg["hidden_size"]), (args, l)
                assert tuple(ep[pre + "attention.output.dense.weight"].shape) == (cfg["hidden_size"], a), (args, l)
                assert tuple(ep[pre + "intermediate.dense.weight"].shape) == (sizes[l], cfg["hidden_size"]), (args, l)
            want = ElasticBert(cfg, p).forward(ids, types, mask, **ref_kw)
            got = ElasticBert(ecfg, ep).forward(ids, types, mask, heads=heads, neurons=sizes,
                                                layers=list(range(ecfg["num_hidden_layers"])))
            err = max([float((want[0] - got[0]).abs().max())] +
                      [float((a - b).abs().max()) for a, b in zip(want[2], got[2])])
            kept = sum(v.numel() for v in ep.values())
            size = os.path.getsize(os.path.join(out, "model.safetensors"))
            ok = len(want[2]) == len(got[2]) and err < 1e-5 and abs(size - 4 * kept) < 64 * 1024
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {' '.join(args)}: {ecfg['num_hidden_layers']} layers, heads {heads}, "
                  f"neurons {sizes}, {kept}/{src_params} parameters, {size} bytes, max error {err:.2e}")
    # RoBERTa: the exported folder is a RobertaForSequenceClassification checkpoint (roberta.-prefixed
    # encoder, classifier.dense / classifier.out_proj, lm_head.*) that computes the cell
    rdir = os.path.join(ROOT, "tiny_roberta")
    rcfg, rp = load(rdir)
    _, rmeta = st.load(os.path.join(ROOT, "tiny_roberta_expected.safetensors"))
    j = json.loads(rmeta["inputs"])
    rids, rtypes, rmask = (torch.tensor(j[k]) for k in ("input_ids", "token_type_ids", "attention_mask"))
    rcases = [(["--width", "0.5", "--depth", "0.5"], dict(width=0.5, depth=0.5)),
              (["--width", "0.25", "--depth", "0.75"], dict(width=0.25, depth=0.75))]
    for args, ref_kw in rcases:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "small")
            subprocess.run([exe, "--model", rdir, "--out", out] + args, check=True, stdout=subprocess.DEVNULL)
            raw, _ = st.load(os.path.join(out, "model.safetensors"))
            ecfg, ep = load(out)
            names_ok = (ecfg.get("model_type") == "roberta" and "roberta.embeddings.word_embeddings.weight" in raw
                        and "classifier.out_proj.weight" in raw and "lm_head.layer_norm.weight" in raw
                        and not any(k.startswith("bert.") for k in raw))
            heads, sizes = hf_shapes(ecfg)
            want = ElasticBert(rcfg, rp).forward(rids, rtypes, rmask, **ref_kw)
            got = ElasticBert(ecfg, ep).forward(rids, rtypes, rmask, heads=heads, neurons=sizes,
                                                layers=list(range(ecfg["num_hidden_layers"])))
            err = max([float((want[0] - got[0]).abs().max())] +
                      [float((a - b).abs().max()) for a, b in zip(want[2], got[2])])
            ok = names_ok and len(want[2]) == len(got[2]) and err < 1e-5
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} roberta {' '.join(args)}: {ecfg['num_hidden_layers']} layers, heads {heads}, "
                  f"neurons {sizes}, RoBERTa names {names_ok}, max error {err:.2e}")
    total = len(cases) + len(rcases)
    print(f"check_export: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
