// ONNX Runtime worker of tools/compare_peers.py: times one exported model (input_ids [B, 128]) at
// the given batches and intra-op thread counts; prints one JSON line.
//   node tools/ort_bench.js MODEL.onnx '{"batches":[1,8],"threads":[1,2],"reps":15}'
const path = require('path');
const ort = require(path.join(__dirname, '..', '.data', 'onnxruntime', 'node_modules', 'onnxruntime-node'));

(async () => {
  const model = process.argv[2];
  const opt = JSON.parse(process.argv[3]);
  const results = [];
  for (const threads of opt.threads) {
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all'});
    for (const batch of opt.batches) {
      const ids = new ort.Tensor('int64', BigInt64Array.from({length: batch * 128}, (_, i) => BigInt(1000 + (i * 37) % 20000)),
                                 [batch, 128]);
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
})().catch((e) => { console.error(e); process.exit(1); });
