"""Where a kiln cuda engine's time goes, kernel by kernel, beside PyTorch's.

Runs one bench model (bench/gpu/torch_vs_kiln.py's models) at one batch on
device tensors, kiln and PyTorch eager side by side, and prints for each:

- the per-call time as the bench takes it (CUDA events around the call),
  the host time of the call alone (no synchronisation), and the wall time of
  call + synchronise;
- the GPU kernels of a few calls from torch.profiler (CUPTI sees every
  kernel in the process, kiln's, cuDNN's and cuBLASLt's included): the GPU
  busy time per call and the top kernels by total time.

A call's events time exceeding its GPU busy time by much means the GPU
waits on the host (launch overhead, a host synchronisation); a kernel that
dominates is the next thing to optimise.

Usage: python3 bench/gpu/kernel_timeline.py --model bert_base --batch 32 --precision fp16
"""

import argparse
import importlib.util
import os
import tempfile
import time

import numpy as np
import torch

import kiln
import kiln.torch  # noqa: F401 - registers CUDA tensor support


def load_bench():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_vs_kiln.py")
    spec = importlib.util.spec_from_file_location("torch_vs_kiln", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_times(fn, runs):
    """(events ms, host ms of the call alone, wall ms of call + synchronise), medians."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    events, host, wall = [], [], []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        t1 = time.perf_counter()
        stop.record()
        stop.synchronize()
        t2 = time.perf_counter()
        events.append(start.elapsed_time(stop))
        host.append((t1 - t0) * 1e3)
        wall.append((t2 - t0) * 1e3)
    return float(np.median(events)), float(np.median(host)), float(np.median(wall))


def kernel_table(fn, calls, top):
    """GPU busy ms per call and the top kernels, from torch.profiler."""
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = {}
    busy_us = 0.0
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.device_time if hasattr(e, "device_time") else e.cuda_time
        busy_us += us
        entry = kernels.setdefault(e.name, [0, 0.0])
        entry[0] += 1
        entry[1] += us
    rows = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return busy_us / 1e3 / calls, [(name, count / calls, us / 1e3 / calls) for name, (count, us) in rows]


def report(label, fn, runs, calls, top):
    events, host, wall = call_times(fn, runs)
    busy, rows = kernel_table(fn, calls, top)
    print("\n## %s" % label)
    print("per call: events %.3f ms, host call %.3f ms, call + synchronise %.3f ms; GPU kernels busy %.3f ms"
          % (events, host, wall, busy))
    print("| kernel | launches per call | ms per call |")
    print("|---|---|---|")
    for name, count, ms in rows:
        print("| %s | %.0f | %.3f |" % (name[:110].replace("|", "/"), count, ms))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bert_base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp16")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--calls", type=int, default=5, help="calls under the profiler")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    bench = load_bench()
    torch.manual_seed(0)
    model, sample = bench.build_model(args.model)
    model = model.eval().cuda()
    work = tempfile.mkdtemp(prefix="kiln-timeline-")
    onnx_path = os.path.join(work, args.model + ".onnx")
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(1, *sample, device="cuda"), onnx_path, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
    x = torch.randn(args.batch, *sample, device="cuda")
    precisions = {"fp32"} if args.precision == "fp32" else {"fp32", "fp16"}
    engine = kiln.compile(onnx_path, inputs=[kiln.Input(shape=tuple(x.shape))], backend="cuda",
                          enabled_precisions=precisions, cache_built_engines=False, reuse_cached_engines=False)
    print("# %s batch %d %s on %s, torch %s" % (args.model, args.batch, args.precision,
                                              torch.cuda.get_device_name(0), torch.__version__))
    why = engine.device_io_unavailable()
    if why is not None:
        print("kiln cannot run on device memory here: %s" % why)
        return
    with torch.no_grad():
        report("kiln (device in/out)", lambda: engine(x), args.runs, args.calls, args.top)
        if args.precision == "fp16":
            half = model.half()
            xh = x.half()
            report("PyTorch eager (.half())", lambda: half(xh), args.runs, args.calls, args.top)
        else:
            report("PyTorch eager", lambda: model(x), args.runs, args.calls, args.top)


if __name__ == "__main__":
    main()
