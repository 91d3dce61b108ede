"""kiln's cuda backend against PyTorch on the same GPU, side by side in one process.

For each (model, batch): torchvision weights from a fixed seed (nothing is downloaded),
fp32 with TF32 off on both sides. PyTorch eager and torch.compile (Inductor, default mode)
time the model on a device-resident input with CUDA events; kiln compiles the ONNX export
(opset 17) with backend="cuda" and is timed end to end per call, host input in and host
output out, since kiln's Python API takes host arrays. So PyTorch is also timed with the
host copies ("eager+copies"), the like-for-like row. Every kiln output is checked against
eager's (max |diff| / max |ref|). One JSON line per row, and a Markdown table at the end.

Usage: python3 bench/gpu/torch_vs_kiln.py [--models resnet18,resnet50] [--batches 1,100]
       [--runs 30] [--no-compile] [--out FILE.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision

import kiln


def cuda_ms(fn, runs):
    """Median of `runs` calls of fn, timed with CUDA events, after 3 warmups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return float(np.median(times))


def wall_ms(fn, runs):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,100")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    rows = []
    work = tempfile.mkdtemp(prefix="kiln-gpu-bench-")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval().cuda()
        onnx_path = os.path.join(work, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(model, torch.randn(1, 3, 224, 224, device="cuda"), onnx_path, opset_version=17,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
        compiled = None
        compile_s = None
        if not args.no_compile:
            t0 = time.perf_counter()
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled(torch.randn(1, 3, 224, 224, device="cuda"))
            compile_s = time.perf_counter() - t0
        for batch in [int(b) for b in args.batches.split(",")]:
            rng = np.random.default_rng(batch)
            x_host = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
            x_dev = torch.from_numpy(x_host).cuda()
            row = {"gpu": gpu, "torch": torch.__version__, "model": name, "batch": batch, "precision": "fp32"}
            with torch.no_grad():
                ref = model(x_dev).cpu().numpy()
                row["eager_ms"] = cuda_ms(lambda: model(x_dev), args.runs)
                row["eager_copies_ms"] = wall_ms(lambda: model(torch.from_numpy(x_host).cuda()).cpu(), args.runs)
                if compiled is not None:
                    compiled(x_dev)  # a new batch size may recompile
                    row["compile_ms"] = cuda_ms(lambda: compiled(x_dev), args.runs)
                    row["torch_compile_first_s"] = compile_s
            # A kiln failure is a finding for this row, never the end of the run: the PyTorch
            # numbers above still print.
            try:
                t0 = time.perf_counter()
                engine = kiln.compile(onnx_path, inputs=[kiln.Input(shape=(batch, 3, 224, 224))],
                                      backend="cuda", cache_built_engines=False, reuse_cached_engines=False)
                row["kiln_build_s"] = time.perf_counter() - t0
                out = engine(x_host)
                out = out[0] if isinstance(out, (list, tuple)) else out
                row["kiln_rel_err"] = float(np.max(np.abs(np.asarray(out) - ref)) /
                                            max(np.max(np.abs(ref)), 1e-30))
                row["kiln_ms"] = wall_ms(lambda: engine(x_host), args.runs)
                row["engines"] = engine.engines() if hasattr(engine, "engines") else None
                row["eager_copies_over_kiln"] = row["eager_copies_ms"] / row["kiln_ms"]
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                row["kiln_error"] = "%s: %s" % (type(e).__name__, e)
            print(json.dumps(row), flush=True)
            if args.out:  # every row as it comes, so a timeout keeps what ran
                with open(args.out, "w") as f:
                    json.dump(rows + [row], f, indent=1)
            rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print("\n| model | batch | eager ms (device input) | eager+copies ms | torch.compile ms | kiln ms (host in/out)"
          " | eager+copies / kiln | kiln rel err | kiln build s |")
    print("|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        if "kiln_error" in r:
            print(f"| {r['model']} | {r['batch']} | {r['eager_ms']:.2f} | {r['eager_copies_ms']:.2f} | "
                  f"{r.get('compile_ms', nan):.2f} | FAILED: {r['kiln_error'][:120]} | | | |")
            continue
        print(f"| {r['model']} | {r['batch']} | {r['eager_ms']:.2f} | {r['eager_copies_ms']:.2f} | "
              f"{r.get('compile_ms', nan):.2f} | {r['kiln_ms']:.2f} | {r['eager_copies_over_kiln']:.2f} | "
              f"{r['kiln_rel_err']:.1e} | {r['kiln_build_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
