"""kiln's cuda backend against PyTorch on the same GPU, side by side in one process.

For each (model, batch): torchvision weights from a fixed seed (nothing is downloaded), or
`bert_base`, a BERT-base encoder (12 layers, hidden 768, 12 heads, FFN 3072, GELU, post-LN)
written here in plain torch ops over a (batch, 128, 768) input; fp32 with TF32 off on both
sides. PyTorch eager and torch.compile (Inductor, default mode)
time the model on a device-resident input with CUDA events; kiln compiles the ONNX export
(opset 17) with backend="cuda" and is timed end to end per call, host input in and host
output out, since kiln's Python API takes host arrays. So PyTorch is also timed with the
host copies ("eager+copies"), the like-for-like row. Every kiln output is checked against
eager's (max |diff| / max |ref|). One JSON line per row, and a Markdown table at the end.

torch.compile runs in each mode of --compile-modes (default, max-autotune), one column each.
--torch-fp16 adds PyTorch's own fp16 timings (a `.half()` model, eager and compiled) as
reference columns.

--precisions fp32,fp16 adds an fp16 row per (model, batch): kiln compiled with
enabled_precisions={"fp32", "fp16"} (an fp16 engine, fp32 in and out) against PyTorch on
the `.half()` model (eager and torch.compile on a half input; "eager+copies" casts to half
after the copy in and back to fp32 before the copy out, as kiln does). Every error of an
fp16 row (kiln's, and PyTorch fp16 eager's for scale) is against PyTorch fp32 eager.

Usage: python3 bench/gpu/torch_vs_kiln.py [--models resnet18,resnet50,bert_base] [--batches 1,100]
       [--runs 30] [--no-compile] [--compile-modes default,max-autotune] [--torch-fp16]
       [--precisions fp32,fp16] [--out FILE.json]
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


class BertLayer(torch.nn.Module):
    def __init__(self, hidden=768, heads=12, ffn=3072):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.ln1 = torch.nn.LayerNorm(hidden)
        self.fc1 = torch.nn.Linear(hidden, ffn)
        self.fc2 = torch.nn.Linear(ffn, hidden)
        self.ln2 = torch.nn.LayerNorm(hidden)

    def forward(self, x):
        # Python ints for the sequence and hidden sizes and -1 for the batch: the export's
        # Reshapes get constant shapes, as a model exported for a fixed sequence has.
        s, h = int(x.shape[1]), int(x.shape[2])
        q, k, v = self.qkv(x).split(h, dim=-1)
        q = q.reshape(-1, s, self.heads, h // self.heads).transpose(1, 2)
        k = k.reshape(-1, s, self.heads, h // self.heads).transpose(1, 2)
        v = v.reshape(-1, s, self.heads, h // self.heads).transpose(1, 2)
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / (h // self.heads) ** 0.5, dim=-1)
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(-1, s, h)
        x = self.ln1(x + self.out(ctx))
        return self.ln2(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))


class BertBase(torch.nn.Module):
    """BERT-base's encoder (no embeddings: the input is the embedded sequence)."""

    def __init__(self, layers=12):
        super().__init__()
        self.layers = torch.nn.Sequential(*[BertLayer() for _ in range(layers)])

    def forward(self, x):
        return self.layers(x)


def rel_err(out, ref):
    """max |out - ref| / max |ref|."""
    return float(np.max(np.abs(np.asarray(out) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def kiln_row(row, onnx_path, shape, x_host, x_dev, ref, runs, precisions):
    """kiln's columns of `row`: an engine with these enabled_precisions, timed host in, host out,
    then (where the whole model runs on the GPU) on the device-resident input, timed with CUDA
    events like eager."""
    # A kiln failure is a finding for this row, never the end of the run: the PyTorch
    # numbers still print.
    try:
        t0 = time.perf_counter()
        engine = kiln.compile(onnx_path, inputs=[kiln.Input(shape=shape)], backend="cuda",
                              enabled_precisions=precisions, cache_built_engines=False,
                              reuse_cached_engines=False)
        row["kiln_build_s"] = time.perf_counter() - t0
        out = engine(x_host)
        out = out[0] if isinstance(out, (list, tuple)) else out
        row["kiln_rel_err"] = rel_err(out, ref)
        row["kiln_ms"] = wall_ms(lambda: engine(x_host), runs)
        row["engines"] = engine.engines() if hasattr(engine, "engines") else None
        row["eager_copies_over_kiln"] = row["eager_copies_ms"] / row["kiln_ms"]
        why = engine.device_io_unavailable()
        row["kiln_dev_path"] = "device" if why is None else why
        if why is None:
            out_dev = engine(x_dev)
            out_dev = out_dev[0] if isinstance(out_dev, (list, tuple)) else out_dev
            row["kiln_dev_rel_err"] = rel_err(out_dev.cpu().numpy(), ref)
            row["kiln_dev_ms"] = cuda_ms(lambda: engine(x_dev), runs)
            row["eager_over_kiln_dev"] = row["eager_ms"] / row["kiln_dev_ms"]
            if "compile_ms" in row:
                row["compile_over_kiln_dev"] = row["compile_ms"] / row["kiln_dev_ms"]
    except Exception as e:  # noqa: BLE001 (reported, not hidden)
        row["kiln_error"] = "%s: %s" % (type(e).__name__, e)


class Attention(torch.nn.Module):
    """BERT-base's attention alone (12 heads of 64, sequence 128, no projections), to time the
    fused attention kernel by itself. fused_qkv: Q, K and V are column blocks of one
    [batch, 128, 2304] input, split into heads as BERT does (strided operands); otherwise the
    input is [batch, 3, 12, 128, 64] and each operand is contiguous."""

    def __init__(self, fused_qkv):
        super().__init__()
        self.fused_qkv = fused_qkv

    def forward(self, x):
        if self.fused_qkv:
            q, k, v = (t.reshape(-1, 128, 12, 64).transpose(1, 2) for t in x.split(768, dim=-1))
        else:
            q, k, v = x[:, 0], x[:, 1], x[:, 2]
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / 8.0, dim=-1)
        out = torch.matmul(att, v)
        return out.transpose(1, 2).reshape(-1, 128, 768) if self.fused_qkv else out


def build_model(name):
    """The model and its per-sample input shape."""
    if name == "bert_base":
        return BertBase(), (128, 768)
    if name == "attention_fused_qkv":
        return Attention(True), (128, 2304)
    if name == "attention_heads":
        return Attention(False), (3, 12, 128, 64)
    return getattr(torchvision.models, name)(weights=None), (3, 224, 224)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,100")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-modes", default="default",
                    help="comma-separated torch.compile modes, e.g. default,max-autotune")
    ap.add_argument("--torch-fp16", action="store_true", help="also time PyTorch on a .half() model")
    ap.add_argument("--precisions", default="fp32", help="rows per (model, batch): fp32, fp16 or fp32,fp16")
    ap.add_argument("--out", default=None)
    ap.add_argument("--export-only", metavar="DIR", default=None,
                    help="write each model's ONNX (batch dim dynamic) as DIR/NAME.onnx and stop")
    args = ap.parse_args()
    precisions = [p for p in args.precisions.split(",") if p]
    if not precisions or not set(precisions) <= {"fp32", "fp16"}:
        ap.error("--precisions: fp32 and/or fp16")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    rows = []

    def emit(row):
        print(json.dumps(row), flush=True)
        if args.out:  # every row as it comes, so a timeout keeps what ran
            with open(args.out, "w") as f:
                json.dump(rows + [row], f, indent=1)
        rows.append(row)

    work = args.export_only or tempfile.mkdtemp(prefix="kiln-gpu-bench-")
    os.makedirs(work, exist_ok=True)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, sample_shape = build_model(name)
        model = model.eval().cuda()
        onnx_path = os.path.join(work, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(model, torch.randn(1, *sample_shape, device="cuda"), onnx_path, opset_version=17,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
        if args.export_only:
            print(onnx_path, "input:", "Nx" + "x".join(map(str, sample_shape)), flush=True)
            continue
        modes = [] if args.no_compile else [m for m in args.compile_modes.split(",") if m]
        half = None
        if args.torch_fp16 or "fp16" in precisions:
            half = build_model(name)[0].eval().cuda()
            half.load_state_dict(model.state_dict())
            half = half.half()
        for batch in [int(b) for b in args.batches.split(",")]:
            rng = np.random.default_rng(batch)
            x_host = rng.standard_normal((batch, *sample_shape), dtype=np.float32)
            x_dev = torch.from_numpy(x_host).cuda()
            with torch.no_grad():
                ref = model(x_dev).cpu().numpy()  # every row's error is against fp32 eager
            if "fp32" in precisions:
                row = {"gpu": gpu, "torch": torch.__version__, "model": name, "batch": batch, "precision": "fp32"}
                with torch.no_grad():
                    row["eager_ms"] = cuda_ms(lambda: model(x_dev), args.runs)
                    row["eager_copies_ms"] = wall_ms(lambda: model(torch.from_numpy(x_host).cuda()).cpu(), args.runs)
                    for mode in modes:
                        # A fresh compile per (mode, batch): its first call's time is the compile.
                        torch._dynamo.reset()
                        t0 = time.perf_counter()
                        compiled = torch.compile(model, mode=None if mode == "default" else mode)
                        compiled(x_dev)
                        torch.cuda.synchronize()
                        row[f"compile_{mode}_first_s"] = time.perf_counter() - t0
                        row[f"compile_{mode}_ms"] = cuda_ms(lambda: compiled(x_dev), args.runs)
                    if modes:
                        row["compile_ms"] = min(row[f"compile_{m}_ms"] for m in modes)
                    if args.torch_fp16:
                        x_half = x_dev.half()
                        row["eager_fp16_ms"] = cuda_ms(lambda: half(x_half), args.runs)
                        row["eager_fp16_rel_err"] = float((half(x_half).float() - torch.from_numpy(ref).cuda()).abs().max()
                                                          / max(float(np.max(np.abs(ref))), 1e-30))
                        for mode in modes:
                            torch._dynamo.reset()
                            compiled = torch.compile(half, mode=None if mode == "default" else mode)
                            compiled(x_half)
                            row[f"compile_{mode}_fp16_ms"] = cuda_ms(lambda: compiled(x_half), args.runs)
                        torch._dynamo.reset()
                kiln_row(row, onnx_path, (batch, *sample_shape), x_host, x_dev, ref, args.runs, {"fp32"})
                emit(row)
            if "fp16" in precisions:
                row = {"gpu": gpu, "torch": torch.__version__, "model": name, "batch": batch, "precision": "fp16"}
                x_half = x_dev.half()
                with torch.no_grad():
                    row["eager_rel_err"] = rel_err(half(x_half).float().cpu().numpy(), ref)
                    row["eager_ms"] = cuda_ms(lambda: half(x_half), args.runs)
                    row["eager_copies_ms"] = wall_ms(
                        lambda: half(torch.from_numpy(x_host).cuda().half()).float().cpu(), args.runs)
                    for mode in modes:
                        torch._dynamo.reset()
                        t0 = time.perf_counter()
                        compiled = torch.compile(half, mode=None if mode == "default" else mode)
                        compiled(x_half)
                        torch.cuda.synchronize()
                        row[f"compile_{mode}_first_s"] = time.perf_counter() - t0
                        row[f"compile_{mode}_ms"] = cuda_ms(lambda: compiled(x_half), args.runs)
                    if modes:
                        row["compile_ms"] = min(row[f"compile_{m}_ms"] for m in modes)
                    torch._dynamo.reset()
                kiln_row(row, onnx_path, (batch, *sample_shape), x_host, x_dev, ref, args.runs, {"fp32", "fp16"})
                emit(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print("\n| model | batch | precision | eager ms (device input) | eager+copies ms | torch.compile ms"
          " | kiln ms (host in/out) | eager+copies / kiln | kiln dev ms (device in/out) | eager / kiln dev"
          " | compile / kiln dev | kiln rel err (host, dev) | kiln build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        if "kiln_error" in r:
            print(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['eager_ms']:.2f} | "
                  f"{r['eager_copies_ms']:.2f} | {r.get('compile_ms', nan):.2f} | "
                  f"FAILED: {r['kiln_error'][:120]} | | | | | | |")
            continue
        dev = f"{r['kiln_dev_ms']:.2f}" if "kiln_dev_ms" in r else "host segment"
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['eager_ms']:.2f} | "
              f"{r['eager_copies_ms']:.2f} | {r.get('compile_ms', nan):.2f} | {r['kiln_ms']:.2f} | "
              f"{r['eager_copies_over_kiln']:.2f} | {dev} | {r.get('eager_over_kiln_dev', nan):.2f} | "
              f"{r.get('compile_over_kiln_dev', nan):.2f} | "
              f"{r['kiln_rel_err']:.1e}, {r.get('kiln_dev_rel_err', nan):.1e} | {r['kiln_build_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
