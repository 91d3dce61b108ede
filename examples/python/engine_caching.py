"""The engine-caching tutorial's two halves (JIT and AOT) with kiln's Python
package, on torchvision's ResNet-18 with random weights (nothing is
downloaded).

    /usr/bin/python3 examples/python/engine_caching.py [--batch 100] [--image 224]

Each half compiles three times and prints the three timings: caching
disabled, caching on (the engine is built and saved), caching on again (the
engine is loaded and refitted). kiln's timing cache is removed before each
compile, as the tutorial removes TensorRT's, so the first two pay a full
build.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import kiln  # noqa: E402
import kiln.torch  # noqa: E402


def jit_compile(model, settings, timing_cache, batch, image, iterations=3):
    times = []
    for i in range(iterations):
        inputs = [torch.rand((batch, 3, image, image))]
        if os.path.exists(timing_cache):
            os.remove(timing_cache)
        caching = i > 0
        start = time.perf_counter()
        compiled = kiln.torch.jit(model, cache_built_engines=caching, reuse_cached_engines=caching, **settings)
        compiled(*inputs)  # triggers the compile
        times.append((time.perf_counter() - start) * 1000)
    print("----------------jit (kiln.torch.jit)----------------")
    print("disable engine caching, used:", round(times[0]), "ms")
    print("enable engine caching to cache engines, used:", round(times[1]), "ms")
    print("enable engine caching to reuse engines, used:", round(times[2]), "ms")


def aot_compile(model, settings, timing_cache, batch, image, iterations=3):
    times = []
    spec = kiln.Input(min_shape=(1, 3, image, image), opt_shape=(batch, 3, image, image),
                      max_shape=(2 * batch, 3, image, image), dtype=torch.float32)
    for i in range(iterations):
        inputs = [torch.rand((batch + i, 3, image, image))]
        if os.path.exists(timing_cache):
            os.remove(timing_cache)
        caching = i > 0
        start = time.perf_counter()
        compiled = kiln.compile(model, inputs=[spec], cache_built_engines=caching, reuse_cached_engines=caching,
                                engine_cache_size=1 << 30, **settings)
        times.append((time.perf_counter() - start) * 1000)
        compiled(*inputs)
    print("----------------aot (kiln.compile, dynamic batch)----------------")
    print("disable engine caching, used:", round(times[0]), "ms")
    print("enable engine caching to cache engines, used:", round(times[1]), "ms")
    print("enable engine caching to reuse engines, used:", round(times[2]), "ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--optimization-level", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    work = tempfile.mkdtemp(prefix="kiln-example-")
    try:
        timing_cache = os.path.join(work, "timing_cache.bin")
        settings = dict(engine_cache_dir=os.path.join(work, "engines"), timing_cache_path=timing_cache,
                        optimization_level=args.optimization_level)
        with torch.no_grad():
            jit_compile(model, settings, timing_cache, args.batch, args.image)
            aot_compile(model, settings, timing_cache, args.batch, args.image)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
