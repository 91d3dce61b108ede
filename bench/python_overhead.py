#!/usr/bin/env python3
"""What the Python package adds over kiln's C++ CLI, side by side in one run:

1. call overhead: a warm resnet18 engine (batch 1, fp32, the same thread count) run
   through kiln.CompiledModel.__call__ (numpy in, numpy out) against `kiln run`'s own
   run median (CompiledModel::run in C++); rounds alternate the two.
2. a cache hit in a new process with other weights: `kiln build` (C++) against
   kiln.compile in a fresh python3, both hitting an engine cached from seed-1 weights with
   a seed-2 model; the compile time each reports (import + compile, in-process) and the
   whole process's wall time.

    /usr/bin/python3 bench/python_overhead.py --build-dir build [--threads 2] [--rounds 5]

Targets: call overhead <= 3%; a Python hit <= 1.2x the C++ hit.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    build = pathlib.Path(args.build_dir).resolve()
    cli = build / "tools/kiln/kiln"
    libs = sorted(build.glob("src/libkiln.so.[0-9]*"))
    if not cli.exists() or not libs:
        sys.exit(f"python_overhead: no kiln CLI or libkiln in {build}: build kiln first (make build)")
    env = dict(os.environ, KILN_LIBRARY=str(libs[0]), PYTHONPATH=str(root / "python"))
    os.environ.update(env)
    sys.path.insert(0, str(root / "python"))
    import numpy as np

    import kiln

    work = pathlib.Path(tempfile.mkdtemp(prefix="kiln-pyoverhead-"))
    cache = work / "cache"
    models = {}
    for seed in (1, 2):
        models[seed] = work / f"{args.model}-{seed}.onnx"
        subprocess.run([str(cli), "zoo", args.model, "--seed", str(seed), "--batch", "1", "-o", str(models[seed])],
                       check=True, capture_output=True)
    shape = (1, 3, 224, 224)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    np.save(work / "input.npy", x)
    common = ["--cache-dir", str(cache), "--threads", str(args.threads)]
    subprocess.run([str(cli), "build", str(models[1])] + common, check=True, capture_output=True)

    # 1. call overhead
    engine = kiln.compile(str(models[1]), inputs=[kiln.Input(shape=shape)], engine_cache_dir=str(cache),
                          num_threads=args.threads)
    py_rounds, cpp_rounds = [], []
    for _ in range(args.rounds):
        for _ in range(3):
            engine(x)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            engine(x)
            times.append((time.perf_counter() - t0) * 1000)
        py_rounds.append(statistics.median(times))
        out = subprocess.run([str(cli), "run", str(models[1]), "--input", f"input={work / 'input.npy'}", "--repeat",
                              str(args.runs), "--json"] + common, check=True, capture_output=True, text=True)
        cpp_rounds.append(json.loads(out.stdout)["timings_ms"]["run_median"])
    py_ms, cpp_ms = statistics.median(py_rounds), statistics.median(cpp_rounds)

    # 2. a hit with other weights, in new processes
    probe = ("import time, kiln; t = time.perf_counter(); kiln.compile({path!r}, inputs=[kiln.Input(shape={shape})], "
             "engine_cache_dir={cache!r}, num_threads={threads}); print((time.perf_counter() - t) * 1000)")
    py_hit, cpp_hit, py_wall, cpp_wall = [], [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe.format(path=str(models[2]), shape=shape, cache=str(cache),
                                                                 threads=args.threads)],
                             check=True, capture_output=True, text=True, env=env)
        py_wall.append((time.perf_counter() - t0) * 1000)
        py_hit.append(float(out.stdout.strip().splitlines()[-1]))
        t0 = time.perf_counter()
        out = subprocess.run([str(cli), "build", str(models[2]), "--json"] + common, check=True, capture_output=True,
                             text=True)
        cpp_wall.append((time.perf_counter() - t0) * 1000)
        report = json.loads(out.stdout)
        if report["engines"][0]["status"] != "hit":
            sys.exit(f"python_overhead: the C++ compile of seed 2 was not a hit: {report['engines'][0]}")
        cpp_hit.append(report["import_ms"] + report["compile_ms"])
    rows = {
        "model": args.model, "threads": args.threads, "rounds": args.rounds,
        "python_call_ms": py_ms, "cpp_run_ms": cpp_ms, "call_overhead": py_ms / cpp_ms - 1,
        "python_hit_ms": statistics.median(py_hit), "cpp_hit_ms": statistics.median(cpp_hit),
        "python_hit_process_ms": statistics.median(py_wall), "cpp_hit_process_ms": statistics.median(cpp_wall),
    }
    rows["hit_ratio"] = rows["python_hit_ms"] / rows["cpp_hit_ms"]
    rows["hit_process_ratio"] = rows["python_hit_process_ms"] / rows["cpp_hit_process_ms"]
    print(json.dumps(rows))
    print(f"\n| measure | Python | C++ | ratio | target |\n|---|---|---|---|---|\n"
          f"| run, {args.model} batch 1, {args.threads} threads (ms) | {py_ms:.2f} | {cpp_ms:.2f} | "
          f"{py_ms / cpp_ms:.3f} | <= 1.03 |\n"
          f"| cache hit, other weights: import + compile (ms) | {rows['python_hit_ms']:.0f} | "
          f"{rows['cpp_hit_ms']:.0f} | {rows['hit_ratio']:.2f} | <= 1.2 |\n"
          f"| cache hit, other weights: whole process (ms) | {rows['python_hit_process_ms']:.0f} | "
          f"{rows['cpp_hit_process_ms']:.0f} | {rows['hit_process_ratio']:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
