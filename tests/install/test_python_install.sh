#!/usr/bin/env bash
# The documented Python install (scripts/python-install, what `make python`
# runs) into a temporary venv; then, from another folder and with neither
# KILN_LIBRARY, KILN_BUILD_DIR nor LD_LIBRARY_PATH set, `import kiln` must
# load every kiln library from inside the installed package (none from the
# build tree) and compile and run a small model, matching kiln's reference
# backend.
# Usage: test_python_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$source/scripts/python-install" --build-dir "$build" --venv "$work/venv" > "$work/install.log" ||
  { cat "$work/install.log"; exit 1; }
mkdir "$work/elsewhere"
cd "$work/elsewhere"
env -u KILN_LIBRARY -u KILN_BUILD_DIR -u LD_LIBRARY_PATH -u PYTHONPATH \
  KILN_TEST_WORK="$work" KILN_TEST_BUILD="$(cd "$build" && pwd)" "$work/venv/bin/python" - <<'PY'
import os

import numpy as np

import kiln

work, build = os.environ["KILN_TEST_WORK"], os.environ["KILN_TEST_BUILD"]
package = os.path.dirname(os.path.realpath(kiln.__file__))
assert package.startswith(os.path.realpath(work) + "/venv/"), package

with open("/proc/self/maps") as f:
    mapped = {line.split()[-1] for line in f if "/libkiln" in line}
assert any(p.endswith("/libkiln.so.1") for p in mapped), mapped
outside = sorted(p for p in mapped if not os.path.realpath(p).startswith(package + "/"))
assert not outside, "kiln libraries loaded from outside the package: %s" % outside
assert not any(os.path.realpath(p).startswith(build + "/") for p in mapped)

model = kiln.zoo_model("resnet_tiny", seed=3, batch=2)
x = np.sin(np.arange(2 * 3 * 64 * 64, dtype=np.float32) * 0.37).reshape(2, 3, 64, 64)
settings = dict(engine_cache_dir=os.path.join(work, "cache"), optimization_level=0, timing_cache_path="-")
compiled = kiln.compile(model, **settings)
got = compiled(x)
want = kiln.compile(model, backend="ref", **settings)(x)
assert got.shape == (2, 10), got.shape
scale = float(np.abs(want).max())
assert scale > 0 and float(np.abs(got - want).max()) <= 1e-3 * scale, (got, want)
assert [e["status"] for e in compiled.engines()] == ["miss"]


def mapped_now(*names):
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if any("/" + n in line for n in names)}


# The cuda backend is a plugin: CPU work loads neither it nor NVIDIA's
# libraries. Asked for, it is found inside the package (the no-GPU error,
# "cuda backend: <reason>", comes from the plugin itself).
gpu_libraries = ("libkiln_backend_cuda", "libcublasLt", "libcudnn")
assert not mapped_now(*gpu_libraries), mapped_now(*gpu_libraries)
if os.path.exists(os.path.join(package, "libkiln_backend_cuda.so")):
    try:
        kiln.compile(model, backend="cuda", **settings)
    except kiln.UnsupportedError as e:
        assert "cuda backend: " in str(e), e
    plugin = mapped_now("libkiln_backend_cuda")
    assert plugin and all(os.path.realpath(p).startswith(package + "/") for p in plugin), plugin
print("python install: ok (%s)" % package)
PY
