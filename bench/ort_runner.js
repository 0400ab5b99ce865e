// ONNX Runtime (onnxruntime-node) peer for bench/run.py; same line protocol as
// engine_runner.cc: "load NAME PATH C,H,W", "run NAME BATCH THREADS ITERATIONS", "quit".
'use strict';
const ort = require('onnxruntime-node');
const readline = require('readline');

const paths = new Map();     // name -> path
const shapes = new Map();    // name -> per-image input dims, e.g. [3, 224, 224]
const sessions = new Map();  // name/threads -> session

function seededRandom(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 4294967296 * 2 - 1;
  };
}

async function session(name, threads) {
  const key = `${name}/${threads}`;
  if (!sessions.has(key)) {
    sessions.set(key, await ort.InferenceSession.create(paths.get(name), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    }));
  }
  return sessions.get(key);
}

async function handle(line) {
  const [command, ...args] = line.trim().split(/\s+/);
  if (command === 'load') {
    paths.set(args[0], args[1]);
    shapes.set(args[0], args[2].split(',').map(Number));
    await session(args[0], 1);
    return {ok: true};
  }
  if (command === 'run') {
    const [name, batch, threads, iterations] = [args[0], +args[1], +args[2], +args[3]];
    const s = await session(name, threads);
    const feeds = {};
    const rand = seededRandom(42);
    for (const inputName of s.inputNames) {
      const dims = [batch, ...shapes.get(name)];
      const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; ++i) data[i] = rand();
      feeds[inputName] = new ort.Tensor('float32', data, dims);
    }
    const ms = [];
    for (let k = 0; k < iterations; ++k) {
      const start = process.hrtime.bigint();
      await s.run(feeds);
      ms.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    return {ok: true, ms};
  }
  if (command === 'quit') process.exit(0);
  return {ok: false, error: 'unknown command ' + command};
}

const rl = readline.createInterface({input: process.stdin});
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(() => handle(line))
      .catch((e) => ({ok: false, error: String(e)}))
      .then((answer) => process.stdout.write(JSON.stringify(answer) + '\n'));
});
rl.on('close', () => chain.then(() => process.exit(0)));
