#!/usr/bin/python3
"""Plain-PyTorch elastic BERT: the oracle dynabert is checked against.

It follows Hugging Face's BertModel / BertForSequenceClassification (post-LayerNorm, additive
(1 - mask) * -10000 attention mask, erf GELU, tanh pooler) and the official DynaBERT code's
slicing rules (DynaLinear): at width m_w a layer keeps n_h = round(N_H * m_w) heads (Python
round: ties to even), Q/K/V rows [0, n_h * d_head), attention-output columns likewise, FFN rows /
columns [0, int(n_h / N_H * I)); at depth m_d it runs layers floor(i / m_d) for
i < round(L * m_d). RoBERTa (config model_type "roberta") differs only in its positions (from
padding_idx + 1) and its heads (RobertaClassificationHead, RobertaLMHead). Run with Debian's
/usr/bin/python3 (python3-torch).
"""
import math

import torch


def dynabert_heads(n_heads, width):
    n = round(n_heads * width)  # Python 3 round: half to even, as the official code
    if not (0 < width <= 1) or n < 1:
        raise ValueError(f"width {width} keeps no head")
    return n


def dynabert_layers(n_layers, depth):
    d = round(n_layers * depth)
    if not (0 < depth <= 1) or d < 1:
        raise ValueError(f"depth {depth} keeps no layer")
    return [int(math.floor(i / depth)) for i in range(d)]


def layer_norm(x, g, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), g, b, eps)


def gelu(x, act):
    if act == "gelu":
        return torch.nn.functional.gelu(x)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class ElasticBert:
    """Parameters in a dict with normalised Hugging Face names (no 'bert.' prefix)."""

    def __init__(self, cfg, params):
        self.cfg, self.p = cfg, params

    def forward(self, ids, types, mask, width=1.0, depth=1.0, heads=None, neurons=None, layers=None,
                gates=None):
        """ids/types/mask: LongTensor [B, S]. Returns (logits or None, pooled or None, [hidden states]).
        heads/neurons/layers override the DynaBERT rule (general form); gates: [L, N_H] multipliers."""
        c, p = self.cfg, self.p
        H, NH, L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
        dh, I, eps = H // NH, c["intermediate_size"], c.get("layer_norm_eps", 1e-12)
        B, S = ids.shape
        roberta = c.get("model_type") == "roberta"
        # RoBERTa (transformers v2.1.1): positions padding_idx + 1, ... for every sequence
        pos = torch.arange(S) + (c.get("pad_token_id", 1) + 1 if roberta else 0)
        x = p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][pos][None] \
            + p["embeddings.token_type_embeddings.weight"][types]
        h = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
        ext = (1.0 - mask[:, None, None, :].to(h.dtype)) * -10000.0
        if layers is None:
            layers = dynabert_layers(L, depth)
        states = [h]
        for l in layers:
            pre = f"encoder.layer.{l}."
            w = lambda n: p[pre + n]
            nh = heads[l] if heads is not None else dynabert_heads(NH, width)
            a = nh * dh if heads is not None else int(nh / NH * H)
            ni = neurons[l] if neurons is not None else max(1, int(nh / NH * I))
            q = h @ w("attention.self.query.weight")[:a].T + w("attention.self.query.bias")[:a]
            k = h @ w("attention.self.key.weight")[:a].T + w("attention.self.key.bias")[:a]
            v = h @ w("attention.self.value.weight")[:a].T + w("attention.self.value.bias")[:a]
            split = lambda t: t.view(B, S, nh, dh).permute(0, 2, 1, 3)
            q, k, v = split(q), split(k), split(v)
            scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + ext
            probs = torch.softmax(scores, dim=-1)
            if gates is not None:
                probs = probs * gates[l, :nh][None, :, None, None]
            ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, S, a)
            attn = ctx @ w("attention.output.dense.weight")[:, :a].T + w("attention.output.dense.bias")
            h1 = layer_norm(attn + h, w("attention.output.LayerNorm.weight"), w("attention.output.LayerNorm.bias"), eps)
            f = gelu(h1 @ w("intermediate.dense.weight")[:ni].T + w("intermediate.dense.bias")[:ni], c.get("hidden_act", "gelu"))
            o = f @ w("output.dense.weight")[:, :ni].T + w("output.dense.bias")
            h = layer_norm(o + h1, w("output.LayerNorm.weight"), w("output.LayerNorm.bias"), eps)
            states.append(h)
        pooled = logits = None
        if roberta:  # RobertaClassificationHead: dense + tanh on <s>, then out_proj (dropout off)
            if "classifier.dense.weight" in p:
                pooled = torch.tanh(h[:, 0] @ p["classifier.dense.weight"].T + p["classifier.dense.bias"])
                logits = pooled @ p["classifier.out_proj.weight"].T + p["classifier.out_proj.bias"]
            return logits, pooled, states
        if "pooler.dense.weight" in p:
            pooled = torch.tanh(h[:, 0] @ p["pooler.dense.weight"].T + p["pooler.dense.bias"])
            if "classifier.weight" in p:
                logits = pooled @ p["classifier.weight"].T + p["classifier.bias"]
        return logits, pooled, states


def embedding_shapes(V, P, T, H):
    """Shapes of the embedding tensors (normalised names) in Hugging Face's order."""
    return {"embeddings.word_embeddings.weight": (V, H), "embeddings.position_embeddings.weight": (P, H),
            "embeddings.token_type_embeddings.weight": (T, H), "embeddings.LayerNorm.weight": (H,),
            "embeddings.LayerNorm.bias": (H,)}


def encoder_shapes(L, H, I):
    """Shapes of the encoder layers' tensors (normalised names) in Hugging Face's order."""
    shapes = {}
    for l in range(L):
        pre = f"encoder.layer.{l}."
        for n in ("query", "key", "value"):
            shapes[pre + f"attention.self.{n}.weight"] = (H, H)
            shapes[pre + f"attention.self.{n}.bias"] = (H,)
        shapes.update({pre + "attention.output.dense.weight": (H, H), pre + "attention.output.dense.bias": (H,),
                       pre + "attention.output.LayerNorm.weight": (H,), pre + "attention.output.LayerNorm.bias": (H,),
                       pre + "intermediate.dense.weight": (I, H), pre + "intermediate.dense.bias": (I,),
                       pre + "output.dense.weight": (H, I), pre + "output.dense.bias": (H,),
                       pre + "output.LayerNorm.weight": (H,), pre + "output.LayerNorm.bias": (H,)})
    return shapes


def mlm_scores(cfg, p, h):
    """Scores [..., vocab] of the MLM head on hidden states h: BertForMaskedLM's
    (cls.predictions.transform.*) or RobertaForMaskedLM's (lm_head.dense, erf GELU, lm_head.layer_norm),
    the decoder tied to the word embeddings, plus the head's own bias."""
    eps = cfg.get("layer_norm_eps", 1e-12)
    if cfg.get("model_type") == "roberta":
        x = torch.nn.functional.gelu(h @ p["lm_head.dense.weight"].T + p["lm_head.dense.bias"])
        x = layer_norm(x, p["lm_head.layer_norm.weight"], p["lm_head.layer_norm.bias"], eps)
        return x @ p["embeddings.word_embeddings.weight"].T + p["lm_head.bias"]
    x = gelu(h @ p["cls.predictions.transform.dense.weight"].T + p["cls.predictions.transform.dense.bias"],
             cfg.get("hidden_act", "gelu"))
    x = layer_norm(x, p["cls.predictions.transform.LayerNorm.weight"], p["cls.predictions.transform.LayerNorm.bias"], eps)
    return x @ p["embeddings.word_embeddings.weight"].T + p["cls.predictions.bias"]


def normalize_name(n):
    if n.startswith("bert."):
        n = n[5:]
    elif n.startswith("roberta."):
        n = n[8:]
    if n.endswith("LayerNorm.gamma"):
        n = n[:-5] + "weight"
    elif n.endswith("LayerNorm.beta"):
        n = n[:-4] + "bias"
    return n
