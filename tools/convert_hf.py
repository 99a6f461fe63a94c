#!/usr/bin/python3
"""Convert a Hugging Face BERT or RoBERTa `pytorch_model.bin` to `model.safetensors` (run with Debian's python3).

    /usr/bin/python3 tools/convert_hf.py CHECKPOINT_DIR [--out OUT_DIR] [--keep-names]
    /usr/bin/python3 tools/convert_hf.py --self-test

Names are normalised as dynabert reads them (old LayerNorm 'gamma'/'beta' become 'weight'/'bias';
the 'bert.' / 'roberta.' prefix is kept so plain Hugging Face code still loads the result) unless
--keep-names;
the 'embeddings.position_ids' buffer is dropped; tensors are written as F32 (F16/BF16 are widened).
After writing, the file is read back and compared tensor by tensor with the source (round trip).
config.json, vocab.txt (BERT) or vocab.json + merges.txt (RoBERTa) and the tokenizer files are
copied alongside.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

COPY = ("config.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
        "tokenizer.json")


def rename(name, keep):
    if keep:
        return name
    if name.endswith("LayerNorm.gamma"):
        return name[:-5] + "weight"
    if name.endswith("LayerNorm.beta"):
        return name[:-4] + "bias"
    return name


def convert(src_dir, out_dir, keep_names=False):
    state = torch.load(os.path.join(src_dir, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    tensors = {}
    for name, t in state.items():
        if name.endswith("position_ids"):
            continue
        new = rename(name, keep_names)
        if new in tensors:
            raise SystemExit(f"error: '{name}' and another tensor both become '{new}'")
        tensors[new] = t.detach().to(torch.float32).contiguous().numpy()
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "model.safetensors")
    st.save(out, tensors, {"format": "pt", "converted_by": "dynabert tools/convert_hf.py"})
    back, _ = st.load(out)  # round trip
    if set(back) != set(tensors):
        raise SystemExit("error: round trip lost tensors: " + ", ".join(sorted(set(tensors) ^ set(back))))
    for k, v in tensors.items():
        if back[k].shape != v.shape or not np.array_equal(back[k], v):
            raise SystemExit(f"error: round trip changed tensor '{k}'")
    if os.path.abspath(src_dir) != os.path.abspath(out_dir):
        for f in COPY:
            if os.path.exists(os.path.join(src_dir, f)):
                shutil.copy(os.path.join(src_dir, f), os.path.join(out_dir, f))
    return out, len(tensors)


def self_test():
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        state = {"bert.embeddings.LayerNorm.gamma": torch.randn(8, generator=g),
                 "bert.embeddings.LayerNorm.beta": torch.randn(8, generator=g),
                 "bert.embeddings.position_ids": torch.arange(4)[None],
                 "bert.pooler.dense.weight": torch.randn(8, 8, generator=g).to(torch.float16),
                 "classifier.weight": torch.randn(2, 8, generator=g)}
        torch.save(state, os.path.join(d, "pytorch_model.bin"))
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{}")
        out, n = convert(d, os.path.join(d, "out"))
        back, meta = st.load(out)
        assert n == 4 and "bert.embeddings.position_ids" not in back, back.keys()
        assert np.array_equal(back["bert.embeddings.LayerNorm.weight"], state["bert.embeddings.LayerNorm.gamma"].numpy())
        assert np.array_equal(back["bert.pooler.dense.weight"], state["bert.pooler.dense.weight"].float().numpy())
        assert os.path.exists(os.path.join(d, "out", "config.json")) and meta["format"] == "pt"
        with open(out, "rb") as f:
            assert int.from_bytes(f.read(8), "little") % 8 == 0
    print("convert_hf self-test: 1 passed, 0 failed")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--keep-names", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.checkpoint:
        ap.error("CHECKPOINT_DIR is required")
    out, n = convert(a.checkpoint, a.out or a.checkpoint, a.keep_names)
    print(f"wrote {out}: {n} tensors, round trip checked")


if __name__ == "__main__":
    main()
