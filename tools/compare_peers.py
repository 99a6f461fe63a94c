#!/usr/bin/python3
"""Side-by-side speed of dynabert, PyTorch and ONNX Runtime on the DynaBERT grid, written to docs/performance.md.

    /usr/bin/python3 tools/compare_peers.py --bench build/release/bench/dynabert_bench \
        [--batches 1 8] [--threads 1 2] [--rounds 3] [--out docs/performance.md]

All run in the same invocation on the same machine: BERT-base dimensions, sequence length 128,
random weights, widths 1/.75/.5/.25 x depths 1/.75/.5. dynabert: bench/bench_model.cpp (median of
5 repetitions). PyTorch (Debian's torch): plain functional BERT over contiguous per-cell weight
slices (the best case for PyTorch: a compact sub-network, no slicing at call time), under
inference_mode, median of repeated calls. PyTorch's matrix products run in OpenBLAS, so
OPENBLAS_NUM_THREADS is set with torch.set_num_threads, and OMP_WAIT_POLICY=passive (otherwise
its OpenMP threads spin against OpenBLAS's). ONNX Runtime (onnxruntime-node, installed by
`scripts/fetch-data.sh onnxruntime`): each cell exported as its own compact model from the same
PyTorch BERT with torch.onnx (opset 14), run with all graph optimisations, intra-op threads = the
thread count, sequential execution, median of repeated calls (tools/ort_bench.js). dynabert and
ORT, whose times are close, alternate in --rounds rounds and each reports the median over rounds,
with the number of rounds dynabert was ahead; PyTorch is measured once. % of peak uses the FMA
peak measured by the same dynabert_bench runs (BM_PeakFma).
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (1.0, 0.75, 0.5)
H, NH, DH, FF, L, S = 768, 12, 64, 3072, 12, 128


def flops(w, d, seq=S):
    nh = round(NH * w)
    layers = round(L * d)
    a, ni = nh * DH, int(nh / NH * FF)
    return 2.0 * layers * (seq * (4 * H * a + 2 * H * ni) + 2 * seq * seq * a)


def flops_performed(w, d, seq=S):
    """What dynabert computes for logits: its last layer only for each sequence's first token
    (Outputs::first_token_only) past the Q/K/V product."""
    nh = round(NH * w)
    a, ni = nh * DH, int(nh / NH * FF)
    last_all = seq * (4 * H * a + 2 * H * ni) + 2 * seq * seq * a
    last_first = seq * 3 * H * a + (H * a + 2 * H * ni) + 2 * seq * a
    return flops(w, d, seq) - 2.0 * (last_all - last_first)


def torch_worker(threads, batches, reps):
    """Runs in a subprocess whose environment fixes the thread pools; prints JSON results."""
    import ctypes
    import glob
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    blas = "unknown"
    for lib in glob.glob("/usr/lib/x86_64-linux-gnu/openblas*/libopenblas.so.0"):
        try:
            f = ctypes.CDLL(lib).openblas_get_corename
            f.restype = ctypes.c_char_p
            blas = "OpenBLAS " + f().decode() + " kernels"
        except OSError:
            pass
    if "BLAS_INFO=generic" in torch.__config__.show() and blas == "unknown":
        blas = "reference BLAS (install libopenblas0-pthread)"
    a, w = torch.randn(64, 768), torch.randn(256, 768)
    blas_err = (F.linear(a, w).double() - a.double() @ w.double().T).abs().max().item()
    g = torch.Generator().manual_seed(0)
    p = {"word": torch.randn(30522, H, generator=g) * 0.02, "pos": torch.randn(512, H, generator=g) * 0.02,
         "type": torch.randn(2, H, generator=g) * 0.02, "eg": torch.ones(H), "eb": torch.zeros(H)}
    layers = []
    for _ in range(L):
        layers.append({k: torch.randn(*s, generator=g) * 0.02 for k, s in
                       {"q": (H, H), "k": (H, H), "v": (H, H), "o": (H, H), "i": (FF, H), "f": (H, FF)}.items()})
        layers[-1].update({"qb": torch.zeros(H), "kb": torch.zeros(H), "vb": torch.zeros(H), "ob": torch.zeros(H),
                           "ib": torch.zeros(FF), "fb": torch.zeros(H), "g1": torch.ones(H), "b1": torch.zeros(H),
                           "g2": torch.ones(H), "b2": torch.zeros(H)})
    pool_w, pool_b, cls_w, cls_b = torch.randn(H, H, generator=g) * 0.02, torch.zeros(H), torch.randn(2, H, generator=g) * 0.02, torch.zeros(2)

    def cell_weights(w, d):
        nh = round(NH * w)
        a, ni = nh * DH, int(nh / NH * FF)
        kept = [int(math.floor(i / d)) for i in range(round(L * d))]
        out = []
        for l in kept:
            x = layers[l]
            out.append({"nh": nh, "q": x["q"][:a].contiguous(), "k": x["k"][:a].contiguous(), "v": x["v"][:a].contiguous(),
                        "qb": x["qb"][:a].contiguous(), "kb": x["kb"][:a].contiguous(), "vb": x["vb"][:a].contiguous(),
                        "o": x["o"][:, :a].contiguous(), "ob": x["ob"], "i": x["i"][:ni].contiguous(),
                        "ib": x["ib"][:ni].contiguous(), "f": x["f"][:, :ni].contiguous(), "fb": x["fb"],
                        "g1": x["g1"], "b1": x["b1"], "g2": x["g2"], "b2": x["b2"]})
        return out

    def forward(ids, ws):
        B = ids.shape[0]
        h = F.layer_norm(p["word"][ids] + p["pos"][:S][None] + p["type"][0][None, None], (H,), p["eg"], p["eb"], 1e-12)
        for x in ws:
            nh = x["nh"]
            q = F.linear(h, x["q"], x["qb"]).view(B, S, nh, DH).transpose(1, 2)
            k = F.linear(h, x["k"], x["kb"]).view(B, S, nh, DH).transpose(1, 2)
            v = F.linear(h, x["v"], x["vb"]).view(B, S, nh, DH).transpose(1, 2)
            probs = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1)
            ctx = (probs @ v).transpose(1, 2).reshape(B, S, nh * DH)
            h1 = F.layer_norm(F.linear(ctx, x["o"], x["ob"]) + h, (H,), x["g1"], x["b1"], 1e-12)
            h = F.layer_norm(F.linear(F.gelu(F.linear(h1, x["i"], x["ib"])), x["f"], x["fb"]) + h1, (H,), x["g2"], x["b2"], 1e-12)
        return F.linear(torch.tanh(F.linear(h[:, 0], pool_w, pool_b)), cls_w, cls_b)

    res = []
    with torch.inference_mode():
        for batch in batches:
            ids = torch.randint(0, 30522, (batch, S), generator=g)
            for w in WIDTHS:
                for d in DEPTHS:
                    ws = cell_weights(w, d)
                    forward(ids, ws)
                    n = reps if batch == 1 else max(3, reps // 4)
                    ms = time_median(lambda: forward(ids, ws), n)
                    res.append({"batch": batch, "width": w, "depth": d, "threads": threads, "ms": ms})
    print(json.dumps({"torch": torch.__version__, "blas": blas, "blas_err": blas_err, "results": res}))


def onnx_export_worker(width, depth, path):
    """Exports the compact (width, depth) sub-network of a BERT-base with random weights."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    nh = round(NH * width)
    a, ni = nh * DH, int(nh / NH * FF)

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            P = lambda *shape: torch.nn.Parameter(torch.randn(*shape, generator=g) * 0.02)
            self.word, self.pos, self.typ = P(30522, H), P(512, H), P(2, H)
            self.ln = torch.nn.LayerNorm(H, eps=1e-12)
            self.layers = torch.nn.ModuleList()
            for _ in range(round(L * depth)):
                m = torch.nn.Module()
                m.q, m.k, m.v = torch.nn.Linear(H, a), torch.nn.Linear(H, a), torch.nn.Linear(H, a)
                m.o, m.i, m.f = torch.nn.Linear(a, H), torch.nn.Linear(H, ni), torch.nn.Linear(ni, H)
                m.ln1, m.ln2 = torch.nn.LayerNorm(H, eps=1e-12), torch.nn.LayerNorm(H, eps=1e-12)
                self.layers.append(m)
            self.pool, self.cls = torch.nn.Linear(H, H), torch.nn.Linear(H, 2)

        def forward(self, ids):
            B = ids.shape[0]
            h = self.ln(self.word[ids] + self.pos[:S][None] + self.typ[0][None, None])
            for m in self.layers:
                q = m.q(h).view(B, S, nh, DH).transpose(1, 2)
                k = m.k(h).view(B, S, nh, DH).transpose(1, 2)
                v = m.v(h).view(B, S, nh, DH).transpose(1, 2)
                ctx = (torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v).transpose(1, 2).reshape(B, S, a)
                h1 = m.ln1(m.o(ctx) + h)
                h = m.ln2(m.f(F.gelu(m.i(h1))) + h1)
            return self.cls(torch.tanh(self.pool(h[:, 0])))

    model = Bert().eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.randint(0, 30522, (1, S), generator=g),), path, input_names=["input_ids"],
                          output_names=["logits"], dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=14, do_constant_folding=True)


def quantize_onnx_int8(src, dst):
    """Writes the graph ONNX Runtime's quantize_dynamic(per_channel=True, weight_type=QInt8) writes,
    with Debian's python3-onnx: every MatMul by a constant weight W [K, N] becomes
    DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, 0) -> Cast -> Mul(A_scale x w_scale),
    W_q int8 symmetric per output column (scale max|W[:, n]| / 127). ORT fuses the pattern into
    DynamicQuantizeMatMul / MatMulIntegerToFloat. Returns how many products were quantized."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    nodes, count, used = [], 0, set()
    for node in g.node:
        w_init = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        w = numpy_helper.to_array(w_init) if w_init is not None else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            nodes.append(node)
            continue
        count += 1
        p = f"q{count}_"
        amax = np.abs(w).max(axis=0)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        g.initializer.extend([numpy_helper.from_array(q, p + "W_q"), numpy_helper.from_array(scale, p + "W_scale"),
                              numpy_helper.from_array(np.zeros(w.shape[1], np.int8), p + "W_zp")])
        used.add(w_init.name)
        nodes += [helper.make_node("DynamicQuantizeLinear", [node.input[0]], [p + "A_q", p + "A_scale", p + "A_zp"]),
                  helper.make_node("MatMulInteger", [p + "A_q", p + "W_q", p + "A_zp", p + "W_zp"], [p + "Y_int"]),
                  helper.make_node("Cast", [p + "Y_int"], [p + "Y_f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [p + "A_scale", p + "W_scale"], [p + "scale"]),
                  helper.make_node("Mul", [p + "Y_f", p + "scale"], [node.output[0]])]
    still = {i for n in nodes for i in n.input}
    keep = [i for i in g.initializer if i.name not in used or i.name in still]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return count


def export_ort_cells(d):
    """Exports every cell as its own ONNX model into directory d; returns {(width, depth): path}."""
    if not os.path.exists(os.path.join(ROOT, ".data", "onnxruntime", "node_modules", "onnxruntime-node")):
        sys.exit("compare_peers: run scripts/fetch-data.sh onnxruntime first (or pass --no-ort)")
    paths = {}
    for w in WIDTHS:
        for dd in DEPTHS:
            path = os.path.join(d, f"cell-{w:g}-{dd:g}.onnx")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--onnx-export", str(w), str(dd), path],
                           check=True, capture_output=True, text=True)
            paths[(w, dd, "fp32")] = path
            q = os.path.join(d, f"cell-{w:g}-{dd:g}-int8.onnx")
            quantize_onnx_int8(path, q)
            paths[(w, dd, "int8")] = q
    return paths


def check_ort_int8(paths):
    """ORT INT8 against ORT FP32 on one input per cell: the relative error of the logits, and the
    fused INT8 operators ORT ran (from its optimized graph)."""
    import onnx
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for (w, dd, prec), path in paths.items():
            if prec != "int8":
                continue
            opt_path = os.path.join(d, "opt.onnx")
            r = subprocess.run(["node", os.path.join(ROOT, "tools", "ort_bench.js"), path,
                                json.dumps({"compare": paths[(w, dd, "fp32")], "optimized": opt_path})],
                               check=True, capture_output=True, text=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            ops = {}
            for n in onnx.load(opt_path).graph.node:
                ops[n.op_type] = ops.get(n.op_type, 0) + 1
            out[(w, dd)] = {"rel_err": res["rel_err"], "ops": ops}
    return out


def core_rtt(bench):
    """Round trip of a cache line between the first two CPUs in ns (BM_CoreRoundTrip): about 50
    when they share an L3 on this machine kind, 340-450 when they do not."""
    out = subprocess.run([bench, "--benchmark_filter=^BM_CoreRoundTrip/", "--benchmark_format=json"], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)["benchmarks"][0]["round_trip_ns"]


def run_ort(paths, batches, threads, reps, probe=None):
    """One round of ONNX Runtime at every exported cell. With `probe` (two threads measured), each
    cell's results carry the CPUs' round trip before and after its process ("rtt")."""
    res, version = [], "?"
    for (w, dd, prec), path in paths.items():
        before = probe() if probe else None
        out = subprocess.run(["node", os.path.join(ROOT, "tools", "ort_bench.js"), path,
                              json.dumps({"batches": batches, "threads": threads, "reps": reps})],
                             check=True, capture_output=True, text=True)
        after = probe() if probe else None
        r = json.loads(out.stdout.strip().splitlines()[-1])
        version = r["version"]
        res += [dict(x, width=w, depth=dd, precision=prec, rtt=(before, after)) for x in r["results"]]
    return version, res


def placements(dyn_rtt, ort_rtt, near_max_ns):
    """Where the two CPUs were during each two-thread measurement: "near" (sharing an L3: a round
    trip of at most near_max_ns), "far", or None (not measured, or the ORT probes before and after
    its cell disagree). Returns ({key: [label per round]} for dynabert, same for ORT)."""
    seen = [v for r in dyn_rtt for v in r.values() if v] + [v for r in ort_rtt for p in r.values() for v in p if v]
    if not seen:
        return {}, {}
    label = lambda v: None if not v else "near" if v <= near_max_ns else "far"
    dpl = {k: [label(r.get(k)) for r in dyn_rtt] for k in (dyn_rtt[0] if dyn_rtt else {})}
    opl = {}
    for k in (ort_rtt[0] if ort_rtt else {}):
        opl[k] = []
        for r in ort_rtt:
            b, a = (label(v) for v in r.get(k, (None, None)))
            opl[k].append(b if b == a else None)
    return dpl, opl


def same_placement(k, dyn_rounds, ort_rounds, dpl, opl):
    """{placement: ORT ms / dynabert ms} over the rounds in which each program ran with the CPUs in
    that placement (medians), for the placements both met."""
    out = {}
    for pl in ("near", "far"):
        d = [r[k] for r, l in zip(dyn_rounds, dpl.get(k, [])) if l == pl]
        o = [r[k] for r, l in zip(ort_rounds, opl.get(k, [])) if l == pl]
        if d and o:
            out[pl] = statistics.median(o) / statistics.median(d)
    return out


def time_median(fn, n):
    """Median wall time of n calls of fn, in milliseconds."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def torch_env(threads):
    """Environment of a PyTorch worker process using `threads` threads.

    Debian's torch multiplies in OpenBLAS, which ignores torch.set_num_threads: its thread count is
    pinned too, and OMP_WAIT_POLICY=passive stops torch's OpenMP threads spinning against it.
    Some machines here pin OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) to an older core for safety,
    which runs AVX2 kernels; for the peer's best speed, for this process only, the L2 size is unset
    and the core set to that of this CPU's instructions (openblas_core; the worker reports the
    kernels OpenBLAS then picks and checks a product against float64)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive")
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    core = openblas_core()
    if core:
        env["OPENBLAS_CORETYPE"] = core
    return env


def openblas_core():
    """The OpenBLAS core type for this CPU's vector instructions, or None to let OpenBLAS choose.

    Debian's OpenBLAS (0.3.21) identifies cores by model number: on CPUs newer than it knows (an
    Intel Xeon of family 6, model 207 here) it falls back to Prescott's SSE kernels, which made
    PyTorch's FP32 products 4x slower than its AVX-512 kernels on the same CPU (31 against 132
    GFLOP/s, one thread). So the core is named from the CPU's flags, as OpenBLAS picks it on the
    CPUs it knows (Cooperlake on a Zen 4 with AVX512_BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if all(x in flags for x in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        return "Cooperlake" if "avx512_bf16" in flags else "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def run_torch(threads, batches, reps):
    env = torch_env(threads)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-worker", str(threads), "--batches",
                          *map(str, batches), "--reps", str(reps)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_dynabert(bench, batches, threads, precisions):
    filt = "BM_PeakFma|BM_BertBase/precision:(%s)/batch:(%s)/w:[0-9]/d:[0-9]/threads:(%s)/" % (
        "|".join(precisions), "|".join(map(str, batches)), "|".join(map(str, threads)))
    out = subprocess.run([bench, "--benchmark_filter=" + filt, "--benchmark_format=json"], check=True,
                         capture_output=True, text=True)
    data = json.loads(out.stdout)
    peaks, res = {}, []
    for b in data["benchmarks"]:
        if b["name"].startswith("BM_PeakFma"):
            peaks[int(b["name"].split("/")[1])] = b["peak_GFLOP/s"]
        elif b.get("aggregate_name") == "median":
            parts = dict(kv.split(":") for kv in b["run_name"].split("/")[1:] if ":" in kv)
            res.append({"batch": int(parts["batch"]), "width": WIDTHS[int(parts["w"])], "depth": DEPTHS[int(parts["d"])],
                        "threads": int(parts["threads"]), "precision": parts["precision"], "ms": b["real_time"],
                        "rtt": b.get("core_rtt_ns")})
    return data["context"], peaks, res


def machine():
    model = "unknown"
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
        model = f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()}, " \
                f"model {fields.get('Model', '?').strip()}), {os.cpu_count()} cores, L2 {fields.get('L2 cache', '?').strip()}, " \
                f"L3 {fields.get('L3 cache', '?').strip()}"
    except OSError:
        pass
    return f"{model}; {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build/release/bench/dynabert_bench")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"],
                    help="dynabert precisions (ORT runs FP32, and INT8 when int8 is listed)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="alternating dynabert / ONNX Runtime rounds")
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--near-max-ns", type=float, default=150.0,
                    help="largest round trip between the two CPUs (BM_CoreRoundTrip) counted as sharing an L3 "
                         "(this machine kind: about 50 ns near, 340-450 ns far)")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--torch-worker", type=int)
    ap.add_argument("--onnx-export", nargs=3, metavar=("WIDTH", "DEPTH", "PATH"))
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a.torch_worker, a.batches, a.reps)
    if a.onnx_export:
        return onnx_export_worker(float(a.onnx_export[0]), float(a.onnx_export[1]), a.onnx_export[2])
    if "fp32" not in a.precisions:
        a.precisions = ["fp32"] + a.precisions

    t0 = time.time()
    tor, torch_version, blas = [], "not run", "?"
    for t in ([] if a.no_torch else a.threads):
        r = run_torch(t, a.batches, a.reps)
        tor += r["results"]
        torch_version = r["torch"]
        blas = f"{r['blas']}, max error of a 64x256x768 product vs float64 {r['blas_err']:.1e}"
    key = lambda r: (r.get("precision", "fp32"), r["batch"], r["threads"], r["width"], r["depth"])
    tmap = {key(r): r["ms"] for r in tor}
    # dynabert and ONNX Runtime, the close pair, are measured in alternating rounds so that both see
    # the same spells of load on this shared machine; each figure is the median over the rounds.
    dyn_rounds, ort_rounds, peak_rounds, ort_version, ort_checks = [], [], [], "not run", {}
    dyn_rtt, ort_rtt = [], []  # the CPUs' round trip during each two-thread measurement
    probe = (lambda: core_rtt(a.bench)) if max(a.threads) > 1 else None
    with tempfile.TemporaryDirectory() as d:
        paths = {} if a.no_ort else export_ort_cells(d)
        if "int8" not in a.precisions:
            paths = {k: v for k, v in paths.items() if k[2] == "fp32"}
        elif paths:
            ort_checks = check_ort_int8(paths)
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}/{a.rounds}: dynabert", file=sys.stderr, flush=True)
            _, peaks, dyn = run_dynabert(a.bench, a.batches, a.threads, a.precisions)
            dyn_rounds.append({key(r): r["ms"] for r in dyn})
            dyn_rtt.append({key(r): r["rtt"] for r in dyn if r["threads"] > 1})
            peak_rounds.append(peaks)
            if paths:
                print(f"round {rnd + 1}/{a.rounds}: ONNX Runtime", file=sys.stderr, flush=True)
                ort_version, ort = run_ort(paths, a.batches, a.threads, a.reps, probe)
                ort_rounds.append({key(r): r["ms"] for r in ort})
                ort_rtt.append({key(r): r["rtt"] for r in ort if r["threads"] > 1})
    over_rounds = lambda rounds: {k: statistics.median(r[k] for r in rounds) for k in (rounds[0] if rounds else {})}
    peaks, dmap, omap = over_rounds(peak_rounds), over_rounds(dyn_rounds), over_rounds(ort_rounds)
    # rounds in which dynabert was faster than ONNX Runtime (same precision), per combination
    won = {k: sum(dr[k] < orr[k] for dr, orr in zip(dyn_rounds, ort_rounds)) for k in omap if k in dmap}

    lines = []
    cmd = "/usr/bin/python3 tools/compare_peers.py --bench " + a.bench + " --batches " + " ".join(map(str, a.batches)) + \
          " --threads " + " ".join(map(str, a.threads)) + " --precisions " + " ".join(a.precisions) + f" --rounds {a.rounds}"
    lines += ["<!-- generated by tools/compare_peers.py: do not edit the tables by hand -->",
              "## Whole model: dynabert vs PyTorch and ONNX Runtime, same run", "",
              f"Command: `{cmd}` (after `cmake --preset release && cmake --build build/release --target dynabert_bench` "
              "and `scripts/fetch-data.sh onnxruntime`)", "",
              f"Machine: {machine()}. Measured FP32 FMA peak (BM_PeakFma): "
              + ", ".join(f"{v:.0f} GFLOP/s on {k} thread{'s' if k > 1 else ''}" for k, v in sorted(peaks.items())) + ".",
              f"Date {datetime.date.today()}; PyTorch {torch_version} (Debian) on {blas}; "
              f"ONNX Runtime {ort_version} (onnxruntime-node, CPU); run took {time.time() - t0:.0f} s.", "",
              "BERT-base dimensions, sequence length 128, random weights. dynabert and ONNX Runtime are measured "
              f"in {a.rounds} alternating rounds (all dynabert cells, then all ORT cells, and again), so that both "
              "meet the same spells of load on this shared machine; their times are the medians over the rounds of "
              "each round's median (dynabert: 5 Google Benchmark repetitions; ORT: repeated calls). PyTorch, far "
              "behind, is measured once (median of repeated calls). GFLOP counts the encoder's multiply-adds x 2. "
              "Speed-up = peer ms / dynabert ms (above 1: dynabert is faster). \"rounds ahead\": in how many rounds "
              "dynabert was faster than ORT.", "",
              "dynabert runs as a host program asking for logits does: its last layer computes only each "
              "sequence's first token, the pooler's input (`Outputs::first_token_only`; keys and values still use "
              "every token; bitwise the same logits), where PyTorch and ORT compute every row. So \"GFLOP\" is the "
              "whole model's, and \"GFLOP/s\" and \"% of peak\" count what dynabert performs. `BM_BertBaseAllRows` "
              "times dynabert computing every row (docs/performance.md, \"The first-token last layer\").", ""]
    verdict = []
    for batch in a.batches:
        for t in a.threads:
            lines += [f"### FP32, batch {batch}, {t} thread{'s' if t > 1 else ''}", "",
                      "| width | depth | GFLOP | dynabert ms | GFLOP/s | % of peak | PyTorch ms | vs PyTorch | ORT ms | vs ORT | rounds ahead |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for w in WIDTHS:
                for d in DEPTHS:
                    k = ("fp32", batch, t, w, d)
                    dm = dmap[k]
                    tm = tmap.get(k, float("nan"))
                    gf = flops(w, d) * batch / 1e9
                    rate = flops_performed(w, d) * batch / 1e9 / dm * 1e3
                    om = omap.get(k, float("nan"))
                    lines.append(f"| {w:g} | {d:g} | {gf:.2f} | {dm:.1f} | {rate:.0f} | {rate / peaks[t] * 100:.0f} % | "
                                 f"{tm:.1f} | {tm / dm:.2f}x | {om:.1f} | {om / dm:.2f}x | "
                                 f"{won.get(k, 0)}/{len(ort_rounds)} |")
                    verdict.append((batch, t, w, d, dm, tm, rate / peaks[t] * 100, om))
            lines.append("")
    slow = [v for v in verdict if v[0] == 1 and v[4] > v[5]]
    full1 = [v for v in verdict if v[0] == 1 and v[1] == 1 and v[2] == 1.0 and v[3] == 1.0]
    lines += ["### Bars of the inference-core issue", "",
              f"- batch 1, every cell at least as fast as PyTorch at 1 and 2 threads: "
              + ("not measured" if not tmap else 'met' if not slow else 'NOT met for ' + ', '.join(f'({v[2]:g}, {v[3]:g}) x{v[1]}' for v in slow)),
              "- full model, batch 1, one thread, at least 75 % of measured FP32 peak: "
              + (f"{full1[0][6]:.0f} % ({'met' if full1[0][6] >= 75 else 'NOT met'})" if full1 else "not measured"), ""]
    ms = {(v[0], v[1], v[2], v[3]): v[4] for v in verdict}
    fp32_omap = {k: v for k, v in omap.items() if k[0] == "fp32"}
    behind = [v for v in verdict if not v[7] >= v[4]]
    lines += ["### Bars of the deploy-anywhere issue", "",
              "- every cell, batch " + " and ".join(map(str, a.batches)) + ", " + " and ".join(map(str, a.threads))
              + " threads, at least as fast as ONNX Runtime: "
              + ("met" if fp32_omap and not behind else "not measured" if not fp32_omap else "NOT met for " + ", ".join(
                  f"(w {v[2]:g}, d {v[3]:g}, batch {v[0]}, {v[1]}t: {v[4]:.1f} vs {v[7]:.1f} ms)" for v in behind))]
    if 1 in a.threads and 2 in a.threads:
        for batch in a.batches:
            sp = ms[(batch, 1, 1.0, 1.0)] / ms[(batch, 2, 1.0, 1.0)]
            lines.append(f"- two-thread speed-up at full size, batch {batch}: {sp:.2f} ({'met' if sp >= 1.8 else 'NOT met'}, bar 1.8)")
    if 1 in a.batches:
        for t in a.threads:
            r = ms[(1, t, 1.0, 1.0)] / ms[(1, t, 0.25, 0.5)]
            lines.append(f"- smallest cell (0.25, 0.5) vs full, batch 1, {t} thread{'s' if t > 1 else ''}: {r:.1f}x faster "
                         f"({'met' if r >= 6 else 'NOT met'}, bar 6x; it has {flops(1, 1) / flops(0.25, 0.5):.1f}x fewer FLOPs)")
    lines.append("")
    dpl, opl = placements(dyn_rtt, ort_rtt, a.near_max_ns)
    same = {k: same_placement(k, dyn_rounds, ort_rounds, dpl, opl) for k in dpl if k in omap}
    lines += low_precision_section(a, dmap, omap, won, ort_rounds, ort_checks, same, dpl, opl)
    text = "\n".join(lines)
    out = a.out
    doc = open(out).read() if os.path.exists(out) else ""
    begin, end = "<!-- BEGIN compare_peers -->", "<!-- END compare_peers -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = (doc + "\n\n" if doc else "# Performance\n\n") + block + "\n"
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(doc)
    os.replace(tmp, out)
    print(text)


def low_precision_section(a, dmap, omap, won, ort_rounds, ort_checks, same=None, dpl=None, opl=None):
    """Tables and bars of the low-precision issue: dynabert BF16 and INT8 against its FP32 and ORT INT8.
    `same`, `dpl`, `opl`: the two-thread ratios by the CPUs' placement (placements(), same_placement())."""
    same, dpl, opl = same or {}, dpl or {}, opl or {}
    short_pl = lambda labels: "".join("n" if l == "near" else "f" if l == "far" else "?" for l in labels)
    lows = [p for p in ("bf16", "int8") if p in a.precisions]
    if not lows:
        return []
    lines = ["## Low precision: dynabert BF16 and INT8 vs FP32 and ONNX Runtime INT8, same run", "",
             "ORT INT8 is the graph ORT's `quantize_dynamic` writes (per-column int8 weights, `DynamicQuantizeLinear` "
             "on activations, `MatMulInteger`), built by this script with python3-onnx and fused by ORT at load. "
             "\"x FP32\": dynabert FP32 ms / this ms; \"vs ORT INT8\": ORT INT8 ms / dynabert INT8 ms.", "",
             "Two threads: this machine's host moves its two virtual CPUs between cores that share an L3 and cores "
             "that do not, for seconds to minutes at a time, and both programs' two-thread times change with it "
             "(docs/performance.md, \"Where the two CPUs are\"). Each two-thread measurement is labelled with the "
             "round trip of a cache line between the two CPUs (`BM_CoreRoundTrip`; dynabert: measured in each "
             "benchmark, ORT: before and after each cell's process): n(ear) when it is at most "
             f"{a.near_max_ns:g} ns, f(ar) otherwise, ? when ORT's two probes disagree or there was no probe. \"placements\" lists them per round "
             "(dynabert / ORT); \"same placement\" is ORT's median over the rounds it ran in one placement over "
             "dynabert's median in the same placement.", ""]
    if ort_checks:
        errs = [v["rel_err"] for v in ort_checks.values()]
        fused = sorted({op for v in ort_checks.values() for op in v["ops"] if "Integer" in op or "Quantize" in op})
        lines += [f"ORT INT8 graphs checked against the FP32 graphs on one batch: max relative logit error "
                  f"{min(errs):.1e} to {max(errs):.1e} over the cells; INT8 operators in ORT's optimized graphs: "
                  + ", ".join(fused) + ".", ""]
    bars = []
    for batch in a.batches:
        for t in a.threads:
            head = "| width | depth | FP32 ms | " + " | ".join(f"{p.upper()} ms | x FP32" for p in lows)
            sep = "|---:|---:|---:|" + "---:|---:|" * len(lows)
            if "int8" in lows:
                head += " | ORT INT8 ms | vs ORT INT8 | rounds ahead"
                sep += "---:|---:|---:|"
                if t > 1 and opl:
                    head += " | placements | same placement"
                    sep += "---|---|"
            lines += [f"### batch {batch}, {t} thread{'s' if t > 1 else ''}", "", head + " |", sep]
            for w in WIDTHS:
                for d in DEPTHS:
                    f = dmap[("fp32", batch, t, w, d)]
                    row = f"| {w:g} | {d:g} | {f:.1f} | "
                    for p in lows:
                        v = dmap[(p, batch, t, w, d)]
                        row += f"{v:.1f} | {f / v:.2f}x | "
                    if "int8" in lows:
                        k = ("int8", batch, t, w, d)
                        om = omap.get(k, float("nan"))
                        row += f"{om:.1f} | {om / dmap[k]:.2f}x | {won.get(k, 0)}/{len(ort_rounds)} | "
                        if t > 1 and opl:
                            sp = same.get(k, {})
                            row += f"{short_pl(dpl.get(k, []))} / {short_pl(opl.get(k, []))} | " + (
                                ", ".join(f"{pl} {r:.2f}x" for pl, r in sp.items()) or "none in common") + " | "
                        bars.append((batch, t, w, d, dmap[k], om))
                    lines.append(row.rstrip(" "))
            lines.append("")
    lines += ["### Bars of the low-precision issue", ""]
    if "int8" in lows:
        measured = [b for b in bars if b[5] == b[5]]
        short = [b for b in measured if b[5] / b[4] < 1.25]
        lines.append("- INT8 at least 1.25x faster than ORT INT8 in every combination: " +
                     ("not measured" if not measured else "met (worst " +
                      f"{min(b[5] / b[4] for b in measured):.2f}x)" if not short else "NOT met for " + ", ".join(
                          f"(w {b[2]:g}, d {b[3]:g}, batch {b[0]}, {b[1]}t: {b[5] / b[4]:.2f}x)" for b in short)))
        if measured:
            lines.append(f"  ({len(measured) - len(short)} of {len(measured)} combinations at or above 1.25x)")
        two = [b for b in measured if b[1] > 1 and ("int8",) + (b[0], b[1], b[2], b[3]) in same]
        judged = [(b, same[("int8", b[0], b[1], b[2], b[3])]) for b in two]
        none = [b for b, sp in judged if not sp]
        if len(none) < len(judged):
            below = [(b, pl, r) for b, sp in judged for pl, r in sp.items() if r < 1.25]
            lines.append("- the two-thread combinations judged within one placement of the CPUs (both programs measured "
                         "while they shared an L3, or while they did not): " +
                         ("every ratio at or above 1.25x" if not below else "under 1.25x: " + ", ".join(
                             f"(w {b[2]:g}, d {b[3]:g}, batch {b[0]}, {pl}: {r:.2f}x)" for b, pl, r in below)) +
                         (f"; no placement in common for {len(none)} of {len(two)}" if none else ""))
    for p, bar in (("int8", 3.0), ("bf16", 1.8)):
        if p not in lows:
            continue
        for batch in a.batches:
            for t in a.threads:
                r = dmap[("fp32", batch, t, 1.0, 1.0)] / dmap[(p, batch, t, 1.0, 1.0)]
                binding = (p == "int8" and batch == 8 and t == 1) or p == "bf16"
                lines.append(f"- {p.upper()} vs FP32 at full size, batch {batch}, {t} thread{'s' if t > 1 else ''}: {r:.2f}x"
                             + (f" ({'met' if r >= bar else 'NOT met'}, bar {bar:g}x)" if binding else ""))
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
