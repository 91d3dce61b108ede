#!/usr/bin/env node
// ONNX Runtime (CPU) peer for bench/harness.py: loads a model, feeds it the harness's
// .npy inputs, times warmup + N runs and writes the outputs as .npy, so the harness can
// compare them with kiln's byte for byte on the same inputs.
//
//   node ort_runner.mjs --model M.onnx --input NAME=FILE.npy ... --output-dir DIR
//        --threads T [--warmup W] [--min-runs A] [--max-runs B] [--budget-s S] [--loads K]
//
// Runs until at least --min-runs runs and --budget-s seconds, or --max-runs runs.
// Prints one JSON line: {version, threads, load_ms: [...], latencies_ms: [...], outputs: [...]}.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readNpy, writeNpy } from './npy.mjs';
import { flagPairs } from './flags.mjs';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const opt = { inputs: [], threads: 1, warmup: 1, minRuns: 3, maxRuns: 10, budgetS: 0, loads: 1, outputDir: '' };
  for (const [flag, value] of flagPairs(argv)) {
    switch (flag) {
      case '--model': opt.model = value; break;
      case '--input': opt.inputs.push(value); break;
      case '--output-dir': opt.outputDir = value; break;
      case '--threads': opt.threads = Number(value); break;
      case '--warmup': opt.warmup = Number(value); break;
      case '--min-runs': opt.minRuns = Number(value); break;
      case '--max-runs': opt.maxRuns = Number(value); break;
      case '--budget-s': opt.budgetS = Number(value); break;
      case '--loads': opt.loads = Number(value); break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!opt.model) throw new Error('--model is required');
  return opt;
}

// File names as kiln's run_command.cpp makes them, so both sides' outputs line up.
function fileNameFor(name) {
  let safe = name.replace(/[^A-Za-z0-9_.-]/g, '_');
  if (!safe.length || safe[0] === '.') safe = '_' + safe;
  return safe + '.npy';
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  // Sequential execution with a fixed intra-op pool: the thread count the harness records
  // is the number of threads ORT computes with (inter-op parallelism would add more).
  const sessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: opt.threads,
    interOpNumThreads: 1,
  };
  // Session creation is ORT's "compile": timed separately so it never leaks into latency.
  const loadMs = [];
  let session;
  for (let i = 0; i < Math.max(1, opt.loads); ++i) {
    const t0 = process.hrtime.bigint();
    session = await ort.InferenceSession.create(opt.model, sessionOptions);
    loadMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }

  const feeds = {};
  for (const spec of opt.inputs) {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq);
    const t = readNpy(spec.slice(eq + 1));
    feeds[name] = new ort.Tensor(t.type, t.data, t.shape);
  }

  let outputs;
  for (let i = 0; i < opt.warmup; ++i) outputs = await session.run(feeds);
  const latencies = [];
  const start = process.hrtime.bigint();
  for (;;) {
    const elapsedS = Number(process.hrtime.bigint() - start) / 1e9;
    const enough = latencies.length >= opt.minRuns && elapsedS >= opt.budgetS;
    if (latencies.length >= opt.maxRuns || enough) break;
    const t0 = process.hrtime.bigint();
    outputs = await session.run(feeds);
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }

  const described = [];
  if (opt.outputDir && outputs) mkdirSync(opt.outputDir, { recursive: true });
  for (const name of session.outputNames) {
    const t = outputs ? outputs[name] : undefined;
    const info = { name };
    if (t) {
      info.dtype = t.type;
      info.shape = t.dims.map(Number);
      if (opt.outputDir) {
        info.file = join(opt.outputDir, fileNameFor(name));
        writeNpy(info.file, t.type, info.shape, t.data);
      }
    }
    described.push(info);
  }
  process.stdout.write(JSON.stringify({
    version: ort.env.versions.node ?? ort.env.versions.common,
    threads: opt.threads,
    load_ms: loadMs,
    latencies_ms: latencies,
    outputs: described,
  }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`ort_runner: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
