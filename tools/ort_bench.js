// ONNX Runtime worker of tools/compare_peers.py. Two modes:
//   node tools/ort_bench.js MODEL.onnx '{"batches":[1,8],"threads":[1,2],"reps":15}'
//       times one exported model (input_ids [B, 128]) at the given batches and intra-op thread
//       counts; prints one JSON line {version, results: [{batch, threads, ms}]}.
//   node tools/ort_bench.js MODEL.onnx '{"compare":"REF.onnx","optimized":"OUT.onnx"}'
//       runs MODEL and REF on one batch of 2 and prints {rel_err}: max |logit difference| / max
//       |REF logit|; writes ORT's optimized MODEL graph to OUT (which operators ORT fused).
const path = require('path');
const ort = require(path.join(__dirname, '..', '.data', 'onnxruntime', 'node_modules', 'onnxruntime-node'));

function inputIds(batch) {
  return new ort.Tensor('int64', BigInt64Array.from({length: batch * 128}, (_, i) => BigInt(1000 + (i * 37) % 20000)),
                        [batch, 128]);
}

async function compare(model, opt) {
  const base = {intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all'};
  const s = await ort.InferenceSession.create(model, Object.assign({optimizedModelFilePath: opt.optimized}, base));
  const r = await ort.InferenceSession.create(opt.compare, base);
  const ids = inputIds(2);
  const a = (await s.run({input_ids: ids})).logits.data, b = (await r.run({input_ids: ids})).logits.data;
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  console.log(JSON.stringify({rel_err: diff / scale}));
}

async function time(model, opt) {
  const results = [];
  for (const threads of opt.threads) {
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all'});
    for (const batch of opt.batches) {
      const ids = inputIds(batch);
      await session.run({input_ids: ids});  // warm-up
      await session.run({input_ids: ids});
      const n = batch === 1 ? opt.reps : Math.max(5, Math.floor(opt.reps / 3));
      const ms = [];
      for (let r = 0; r < n; r++) {
        const t0 = process.hrtime.bigint();
        await session.run({input_ids: ids});
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      ms.sort((a, b) => a - b);
      results.push({batch, threads, ms: ms[Math.floor(ms.length / 2)]});
    }
    await session.release();
  }
  console.log(JSON.stringify({version: ort.env.versions.node, results}));
}

(async () => {
  const model = process.argv[2];
  const opt = JSON.parse(process.argv[3]);
  if (opt.compare) await compare(model, opt);
  else await time(model, opt);
})().catch((e) => { console.error(e); process.exit(1); });
