#!/usr/bin/env node
// ONNX Runtime's own per-node profile of one model, for bench/layers_vs_ort.py:
// loads the model with profiling on, runs warmup + N runs on a seeded input and
// prints ORT's profile file's path as one JSON line.
//
//   node ort_profile.mjs --model M.onnx --shape 1x3x224x224 --threads T [--warmup W] [--runs N]
//        --prefix DIR/name
import { createRequire } from 'node:module';
import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { flagPairs } from './flags.mjs';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const opt = { threads: 1, warmup: 5, runs: 20 };
  for (const [flag, value] of flagPairs(argv)) {
    switch (flag) {
      case '--model': opt.model = value; break;
      case '--shape': opt.shape = value.split('x').map(Number); break;
      case '--threads': opt.threads = Number(value); break;
      case '--warmup': opt.warmup = Number(value); break;
      case '--runs': opt.runs = Number(value); break;
      case '--prefix': opt.prefix = value; break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!opt.model || !opt.shape || !opt.prefix) throw new Error('--model, --shape and --prefix are required');
  return opt;
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(opt.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: opt.threads,
    interOpNumThreads: 1,
    enableProfiling: true,
    profileFilePrefix: opt.prefix,
  });
  const n = opt.shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; ++i) data[i] = Math.sin(0.37 * i);  // the same input every run
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, opt.shape) };
  for (let i = 0; i < opt.warmup + opt.runs; ++i) await session.run(feeds);
  session.endProfiling();
  // ORT names the file <prefix>_<date and time>.json; the node binding does
  // not return the name.
  const dir = dirname(opt.prefix);
  const stem = basename(opt.prefix) + '_';
  const files = readdirSync(dir)
    .filter((f) => f.startsWith(stem) && f.endsWith('.json'))
    .map((f) => join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!files.length) throw new Error(`no profile file ${opt.prefix}_*.json was written`);
  process.stdout.write(JSON.stringify({ profile: files[0], warmup: opt.warmup, runs: opt.runs }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`ort_profile: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
