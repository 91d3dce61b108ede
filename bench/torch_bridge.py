#!/usr/bin/env python3
"""kiln through its PyTorch bridge against eager PyTorch, in one process, on the same
inputs: torchvision models with seeded random weights (nothing downloaded), eval mode,
CPU tensors, the same thread count on both sides.

    /usr/bin/python3 bench/torch_bridge.py --build-dir build [--models resnet50,mobilenet_v2]
        [--batch 1] [--threads 2] [--rounds 5] [--runs 10]

Each round times every system once in turn (runs median), so load from elsewhere falls
on both alike; the table gives the median over rounds and the eager / kiln ratio (above
1: kiln is faster). Every kiln output is checked against eager's (1e-4 of max |ref|,
fp32); a row that does not match is reported as failed, never timed. Also reports the
compile time through the bridge (torch.onnx.export + kiln compile) cold, and as a cache
hit with other weights.
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    root = pathlib.Path(__file__).resolve().parent.parent
    build = pathlib.Path(args.build_dir).resolve()
    libs = sorted(build.glob("src/libkiln.so.[0-9]*"))
    if not libs:
        sys.exit(f"torch_bridge: no libkiln in {build}/src: build kiln first (make build)")
    os.environ.setdefault("KILN_LIBRARY", str(libs[0]))
    sys.path.insert(0, str(root / "python"))

    import numpy as np
    import torch
    import torchvision

    import kiln
    import kiln.torch

    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="kiln-bridge-")
    settings = dict(engine_cache_dir=cache)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, kiln {kiln.__version__}, "
          f"{args.threads} threads, batch {args.batch}")
    print("| model | eager ms | kiln ms | eager / kiln | max rel err | compile cold s | compile hit s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.rand(args.batch, 3, 224, 224)
        spec = [kiln.Input(shape=tuple(x.shape))]
        with torch.no_grad():
            ref = net(x)
            start = time.perf_counter()
            compiled = kiln.torch.compile(net, inputs=spec, **settings)
            cold = time.perf_counter() - start
            out = compiled(x)
            rel = float((out - ref).abs().max() / ref.abs().max())
            if not rel <= 1e-4:
                print(f"| {name} | - | - | - | {rel:.2e} FAILED | {cold:.1f} | - |")
                continue
            torch.manual_seed(1)
            other = getattr(torchvision.models, name)(weights=None).eval()
            start = time.perf_counter()
            hit = kiln.torch.compile(other, inputs=spec, **settings)
            hit_s = time.perf_counter() - start
            statuses = {e["status"] for e in hit.engines()}
            rounds = {"eager": [], "kiln": []}
            for _ in range(args.rounds):
                for system, fn in (("eager", net), ("kiln", compiled)):
                    fn(x)
                    times = []
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        fn(x)
                        times.append(time.perf_counter() - t)
                    rounds[system].append(statistics.median(times) * 1e3)
            eager_ms, kiln_ms = statistics.median(rounds["eager"]), statistics.median(rounds["kiln"])
            print(f"| {name} | {eager_ms:.2f} | {kiln_ms:.2f} | {eager_ms / kiln_ms:.2f}x | {rel:.1e} | "
                  f"{cold:.1f} | {hit_s:.2f} ({'/'.join(sorted(statuses))}) |", flush=True)


if __name__ == "__main__":
    main()
