"""Compile times on the GPU: kiln's cold build and cache hit against Inductor's cold and
warm-cache compiles, each in a fresh process, as a user restarting a job meets them.

For a torchvision model at one batch size (default: ResNet-18 at batch 100, the engine-caching
tutorial's workload), fp32 with TF32 off:
  inductor_cold  a new process with an empty TORCHINDUCTOR_CACHE_DIR: torch.compile + first call
  inductor_warm  a second new process on the same, now filled, cache directory
  kiln_cold      a new process with an empty engine cache: kiln.compile(backend="cuda")
  kiln_hit       a new process, the same architecture with other weights (another seed), on the
                 cache kiln_cold filled: kiln.compile loads the engine and refits; its output is
                 checked against PyTorch eager with those weights
Each child reports the time inside the process (compile + first call) and the parent the whole
process's wall time (interpreter, imports, CUDA context included).

Usage: python3 bench/gpu/compile_times.py [--model resnet18] [--batch 100] [--out FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def steady_call(call, torch, runs=5):
    """The median wall time of a call (host input and output included)."""
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def child(kind, model_name, batch, seed, onnx_path, cache_dir):
    import numpy as np
    import torch
    import torchvision
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(seed)
    model = getattr(torchvision.models, model_name)(weights=None).eval().cuda()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    result = {}
    with torch.no_grad():
        if kind.startswith("inductor"):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            compiled = torch.compile(model)
            compiled(x)
            torch.cuda.synchronize()
            result["in_process_s"] = time.perf_counter() - t0
            result["steady_call_s"] = steady_call(lambda: compiled(x), torch)
            # Inductor compiles inside the first call: its compile time is
            # that call less a steady one.
            result["compile_s"] = result["in_process_s"] - result["steady_call_s"]
        else:
            import kiln
            torch.onnx.export(model, x[:1], onnx_path, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              dynamo=False)
            x_host = x.cpu().numpy()
            t0 = time.perf_counter()
            engine = kiln.compile(onnx_path, inputs=[kiln.Input(shape=tuple(x_host.shape))], backend="cuda",
                                  cache_built_engines=True, reuse_cached_engines=True, engine_cache_dir=cache_dir)
            result["compile_s"] = time.perf_counter() - t0  # import, key, build or load + refit
            out = engine(x_host)
            result["in_process_s"] = time.perf_counter() - t0
            result["first_call_s"] = result["in_process_s"] - result["compile_s"]
            result["steady_call_s"] = steady_call(lambda: engine(x_host), torch)
            out = out[0] if isinstance(out, (list, tuple)) else out
            ref = model(x).cpu().numpy()
            result["rel_err"] = float(np.max(np.abs(np.asarray(out) - ref)) / max(np.max(np.abs(ref)), 1e-30))
            result["engines"] = engine.engines()
    print("RESULT " + json.dumps(result), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, seed, onnx_path, cache_dir, _ = args.child
        child(kind, args.model, args.batch, int(seed), onnx_path, cache_dir)
        return 0
    work = tempfile.mkdtemp(prefix="kiln-compile-times-")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(work, "inductor"))
    rows = {"model": args.model, "batch": args.batch}
    steps = [("inductor_cold", 0), ("inductor_warm", 0), ("kiln_cold", 0), ("kiln_hit", 1)]
    for kind, seed in steps:
        onnx_path = os.path.join(work, f"{args.model}-seed{seed}.onnx")
        cmd = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--batch", str(args.batch),
               "--child", kind, str(seed), onnx_path, os.path.join(work, "kiln-cache"), "-"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            rows[kind] = {"error": (proc.stderr or proc.stdout)[-800:], "process_s": wall}
        else:
            rows[kind] = dict(json.loads(line[-1][len("RESULT "):]), process_s=wall)
        print(kind, json.dumps(rows[kind]), flush=True)
    def ratio(a, b, key="in_process_s"):
        try:
            return rows[a][key] / rows[b][key]
        except (KeyError, ZeroDivisionError):
            return None
    # In-process: compile and the first call. Compile: kiln.compile alone
    # against Inductor's first call less a steady call.
    rows["kiln_cold_over_hit"] = ratio("kiln_cold", "kiln_hit")
    rows["inductor_warm_over_kiln_hit"] = ratio("inductor_warm", "kiln_hit")
    rows["inductor_cold_over_kiln_cold"] = ratio("inductor_cold", "kiln_cold")
    rows["compile_kiln_cold_over_hit"] = ratio("kiln_cold", "kiln_hit", "compile_s")
    rows["compile_inductor_warm_over_kiln_hit"] = ratio("inductor_warm", "kiln_hit", "compile_s")
    rows["compile_inductor_cold_over_kiln_cold"] = ratio("inductor_cold", "kiln_cold", "compile_s")
    print(json.dumps(rows, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
