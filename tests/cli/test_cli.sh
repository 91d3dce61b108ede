#!/usr/bin/env bash
# Drives the kiln CLI as a user would and checks exit codes, messages, --json
# and .npy output. Usage: test_cli.sh PATH/TO/kiln
set -uo pipefail
kiln="$1"
work=$(mktemp -d)
trap 'chattr -R -i "$work" 2>/dev/null; rm -rf "$work"' EXIT
failures=0
# Every compile goes to a private cache, never the user's default one.
cache="--cache-dir $work/cache --optimization-level 0"

check() {  # check DESCRIPTION EXPECTED_EXIT COMMAND... ; output in $work/out
  local what="$1" want="$2"
  shift 2
  "$@" >"$work/out" 2>&1
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"
    sed 's/^/    /' "$work/out"
    failures=$((failures + 1))
  else
    echo "ok:   $what"
  fi
}
expect_output() {  # expect_output DESCRIPTION PATTERN
  if ! grep -q -- "$2" "$work/out"; then
    echo "FAIL: $1: output lacks '$2'"
    sed 's/^/    /' "$work/out"
    failures=$((failures + 1))
  fi
}

check "zoo writes resnet_tiny" 0 "$kiln" zoo resnet_tiny -o "$work/tiny.onnx"
expect_output "zoo reports parameters" "parameters"
check "zoo --list" 0 "$kiln" zoo --list
expect_output "zoo lists resnet18" "resnet18"

check "run with random input" 0 "$kiln" run "$work/tiny.onnx" $cache
expect_output "run prints the output summary" "output  output: float32\[1x10\]"
expect_output "run notes the symbolic batch" "dim 'batch' set to 1"

check "run --json" 0 "$kiln" run "$work/tiny.onnx" --json --shape input=2x3x64x64 $cache
expect_output "json has output shape" '"shape": \[\s*$'
expect_output "json has timings" '"run_median"'
python3 - "$work/out" <<'PY' || failures=$((failures + 1))
import json, sys
r = json.load(open(sys.argv[1]))
assert r["outputs"][0]["shape"] == [2, 10], r["outputs"]
assert r["inputs"][0]["shape"] == [2, 3, 64, 64]
assert all(k in r["outputs"][0] for k in ("min", "max", "mean"))
PY

# A per-layer profile: the table, and a "profile" section in --json.
check "run --profile" 0 "$kiln" run "$work/tiny.onnx" --profile --profile-runs 3 $cache
expect_output "profile table has a header" "tactic"
expect_output "profile lists a fused conv" "Conv+Relu"
expect_output "profile summary by kind" "by kind .*onednn [0-9.]* ms"
check "run --profile --json" 0 "$kiln" run "$work/tiny.onnx" --profile --profile-runs 3 --json $cache
python3 - "$work/out" <<'PY' || failures=$((failures + 1))
import json, sys
p = json.load(open(sys.argv[1]))["profile"]
assert p["runs"] == 3 and p["aggregate"] == "median", p["runs"]
layers = p["layers"]
assert layers and all(l["kind"] in ("onednn", "aux", "native", "reorder", "reference") for l in layers)
assert all(k in l for l in layers for k in ("name", "nodes", "op", "tactic", "ms", "percent"))
assert any(l["op"].startswith("Conv+") and len(l["nodes"]) > 1 for l in layers)
assert abs(sum(l["percent"] for l in layers) - 100) < 1e-3
assert abs(sum(l["ms"] for l in layers) - p["total_ms"]) < 1e-6
assert abs(sum(k["ms"] for k in p["by_kind"].values()) - p["total_ms"]) < 1e-6
assert "onednn" in p["by_kind"] and len(p["slowest"]) <= 5
PY
check "--profile needs an engine backend" 1 "$kiln" run "$work/tiny.onnx" --profile --backend ref
expect_output "--profile names what it needs" "needs an engine backend, not ref"

check "same seed, same result" 0 "$kiln" run "$work/tiny.onnx" --json --seed 5 $cache
cp "$work/out" "$work/first.json"
check "same seed again" 0 "$kiln" run "$work/tiny.onnx" --json --seed 5 $cache
python3 - "$work/first.json" "$work/out" <<'PY' || failures=$((failures + 1))
import json, sys
a, b = (json.load(open(p))["outputs"][0] for p in sys.argv[1:])
assert a["mean"] == b["mean"] and a["min"] == b["min"], (a, b)
PY

# An input from a .npy file, outputs written as .npy.
python3 - "$work/ones.npy" <<'PY'
import struct, sys
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 64, 64), }"
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<%df" % (3 * 64 * 64), *([1.0] * (3 * 64 * 64))))
PY
check "run with a .npy input and --output-dir" 0 "$kiln" run "$work/tiny.onnx" --input "input=$work/ones.npy" --output-dir "$work/outs" $cache
[ -f "$work/outs/output.npy" ] || { echo "FAIL: output.npy not written"; failures=$((failures + 1)); }
python3 - "$work/outs/output.npy" <<'PY' || failures=$((failures + 1))
import sys, struct
data = open(sys.argv[1], "rb").read()
assert data[:6] == b"\x93NUMPY"
n = struct.unpack("<H", data[8:10])[0]
header = data[10:10 + n].decode()
assert "'shape': (1, 10)" in header and "<f4" in header, header
assert len(data) == 10 + n + 40
PY

# The reference backend gives the same answer as the cpu engine: every
# element of every output written as .npy, within 1e-3 of max|ref|.
check "run with seed 5, outputs as .npy" 0 "$kiln" run "$work/tiny.onnx" --seed 5 --output-dir "$work/cpu5" $cache
check "run on the reference backend" 0 "$kiln" run "$work/tiny.onnx" --backend ref --json --seed 5 --output-dir "$work/ref5"
python3 - "$work/ref5" "$work/cpu5" <<'PY' || failures=$((failures + 1))
import ast, os, struct, sys

def load(path):  # little-endian float32 .npy: (shape, values)
    data = open(path, "rb").read()
    assert data[:6] == b"\x93NUMPY", path
    if data[6] == 1:
        n, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        n, start = struct.unpack("<I", data[8:12])[0], 12
    header = ast.literal_eval(data[start:start + n].decode("latin1"))
    assert header["descr"] == "<f4" and not header["fortran_order"], (path, header)
    count = 1
    for d in header["shape"]:
        count *= d
    body = data[start + n:]
    assert len(body) == 4 * count, (path, len(body), count)
    return header["shape"], struct.unpack("<%df" % count, body)

ref_dir, cpu_dir = sys.argv[1:]
names = sorted(f for f in os.listdir(ref_dir) if f.endswith(".npy"))
assert names, "the reference run wrote no .npy"
assert names == sorted(f for f in os.listdir(cpu_dir) if f.endswith(".npy")), (names, os.listdir(cpu_dir))
for name in names:
    ref_shape, ref = load(os.path.join(ref_dir, name))
    cpu_shape, cpu = load(os.path.join(cpu_dir, name))
    assert ref_shape == cpu_shape, (name, ref_shape, cpu_shape)
    scale = max(abs(v) for v in ref)
    assert scale > 0, name + ": the reference output is all zeros"
    worst = max(range(len(ref)), key=lambda i: abs(cpu[i] - ref[i]))
    err = abs(cpu[worst] - ref[worst]) / scale
    assert err <= 1e-3, "%s: element %d: cpu %r, ref %r (%.3g of max|ref|)" % (name, worst, cpu[worst], ref[worst], err)
PY

# The engine cache through the CLI: a cold build misses, the next one hits,
# and a model with other weights hits the same entry.
"$kiln" zoo resnet_tiny --seed 9 -o "$work/tiny9.onnx" >/dev/null
check "build cold" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --json --cache-dir "$work/c2" --optimization-level 0
expect_output "cold build misses" '"status": "miss"'
check "build again" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0
expect_output "second build hits" " hit "
check "build other weights" 0 "$kiln" build "$work/tiny9.onnx" --shape input=1x3x64x64 --json --cache-dir "$work/c2" --optimization-level 0
expect_output "other weights hit" '"status": "hit"'
check "explain another batch" 0 "$kiln" cache explain "$work/tiny.onnx" --shape input=4x3x64x64 --cache-dir "$work/c2" --optimization-level 0
expect_output "explain names the part" "differs in: inputs"
check "cache stats" 0 "$kiln" cache stats --cache-dir "$work/c2"
expect_output "stats count hits" "Hits                 2"
expect_output "stats give misses by reason" "  not in cache       1"
expect_output "stats report build time saved" "Build time saved     "
check "cache verify" 0 "$kiln" cache verify --cache-dir "$work/c2"
expect_output "verify finds no bad entry" "1 entries verified, 0 bad"
# The opt-in fused attention is a compile setting in the key: the flag, or
# KILN_CPU_FUSED_ATTENTION=1 as the CLI's default.
check "explain with --cpu-fused-attention" 0 "$kiln" cache explain "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --cpu-fused-attention
expect_output "fused attention is a settings difference" "differs in: settings"
check "explain with KILN_CPU_FUSED_ATTENTION=1" 0 env KILN_CPU_FUSED_ATTENTION=1 "$kiln" cache explain "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0
expect_output "the environment variable sets it" "differs in: settings"
check "no reuse" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --json --no-cache --optimization-level 0 --timing-cache -
expect_output "no cache builds uncached" '"status": "built_uncached"'
check "build an artifact" 0 "$kiln" build "$work/tiny.onnx" --min input=1x3x64x64 --opt input=2x3x64x64 --max input=4x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --save "$work/tiny.kiln"
expect_output "build says where the artifact is" "saved   $work/tiny.kiln"
check "run the artifact" 0 "$kiln" run "$work/tiny.kiln" --shape input=3x3x64x64 --no-cache
check "profile the artifact" 0 "$kiln" run "$work/tiny.kiln" --shape input=3x3x64x64 --no-cache --profile --profile-runs 2 --json
python3 - "$work/out" <<'PY' || failures=$((failures + 1))
import json, sys
p = json.load(open(sys.argv[1]))["profile"]
assert p["runs"] == 2 and p["layers"], p
PY
# --save never destroys the input model or a file that is not an artifact.
cp "$work/tiny.onnx" "$work/model-copy.onnx"
ln "$work/model-copy.onnx" "$work/hardlink.onnx"
ln -s "$work/model-copy.onnx" "$work/symlink.onnx"
for target in model-copy.onnx hardlink.onnx symlink.onnx; do
  check "--save over the input model ($target) is refused" 1 "$kiln" build "$work/model-copy.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --save "$work/$target"
  expect_output "the refusal names the input model ($target)" "is the input model"
done
check "the input model is intact" 0 cmp "$work/tiny.onnx" "$work/model-copy.onnx"
echo "notes" >"$work/notes.txt"
check "--save over a file that is not an artifact is refused" 1 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --save "$work/notes.txt"
expect_output "the refusal suggests --force" "not a kiln artifact; pass --force"
check "--force replaces it" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --save "$work/notes.txt" --force
check "an artifact is replaced without --force" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c2" --optimization-level 0 --save "$work/notes.txt"
expect_output "the artifact's engine serves the run" " hit "
check "an artifact refuses shapes outside its range" 1 "$kiln" run "$work/tiny.kiln" --shape input=5x3x64x64 --no-cache
expect_output "the range error names input, dim and range" "input 'input' dim 0 is 5, outside the compiled range .1, 4."
# A size too large for 64 bits is an error, never a wrapped or zero size
# (prune once read 99999999999G as 0 and deleted every entry).
for size in 99999999999G 1e30 inf nan -1 18446744073709551616; do
  check "prune --max-size $size is refused" 1 "$kiln" cache prune --max-size "$size" --cache-dir "$work/c2"
  expect_output "prune names the bad size $size" "is not a size"
done
check "huge sizes removed nothing" 0 "$kiln" cache verify --cache-dir "$work/c2"
expect_output "every entry is still there" "2 entries verified, 0 bad"
check "ram tier of 2^64 bytes is refused" 1 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-tiers ram:17179869184G --optimization-level 0
expect_output "the ram tier size is named" "ram:17179869184G"
check "the largest cache size is a size, not 0" 0 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --json --cache-dir "$work/c2" --cache-size 18446744073709551615 --optimization-level 0
expect_output "a cap of 2^64-1 bytes still caches" '"status": "hit"'
# A cache whose entries cannot be removed (immutable shard folders: root
# ignores permissions, not the immutable flag) reports each failure and
# exits non-zero instead of "removed 0 entries".
if chattr +i "$work"/c2/v1/entries/* 2>/dev/null; then
  check "clear of undeletable entries fails" 1 "$kiln" cache clear --cache-dir "$work/c2"
  expect_output "clear names what it could not remove" "could not remove: cannot remove $work/c2/v1/entries/"
  expect_output "clear says why" "Operation not permitted"
  check "prune of undeletable entries fails" 1 "$kiln" cache prune --max-size 0 --cache-dir "$work/c2" --json
  expect_output "prune lists the failures" '"failures"'
  chattr -i "$work"/c2/v1/entries/*
else
  echo "skip: chattr +i is not available here; undeletable entries not tested"
fi
check "cache clear" 0 "$kiln" cache clear --cache-dir "$work/c2"
check "refittable off is not a flag" 1 "$kiln" build "$work/tiny.onnx" --not-a-flag

# User errors: exit code 1 with a message that names the culprit.
check "missing model" 1 "$kiln" run "$work/nope.onnx"
expect_output "missing model is named" "nope.onnx"
head -c 300 "$work/tiny.onnx" >"$work/truncated.onnx"
check "truncated model" 1 "$kiln" run "$work/truncated.onnx"
expect_output "truncated model is named" "truncated.onnx"
check "unknown input name" 1 "$kiln" run "$work/tiny.onnx" --input bogus=random $cache
expect_output "unknown input is named" "no input 'bogus'"
check "bad shape" 1 "$kiln" run "$work/tiny.onnx" --shape input=1xAx3
expect_output "bad shape is quoted" "1xAx3"
check "wrong static dim" 1 "$kiln" run "$work/tiny.onnx" --shape input=1x3x65x64 $cache
expect_output "wrong dim is explained" "dim 2 is fixed at 64"
check "unknown backend" 1 "$kiln" run "$work/tiny.onnx" --backend nope
check "json error" 1 "$kiln" run "$work/nope.onnx" --json
expect_output "json error object" '"error"'
check "empty --cache-dir" 1 "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir '' --optimization-level 0
expect_output "empty --cache-dir is named, not the default folder" "cache-dir is empty"
check "empty --cache-dir for cache stats" 1 "$kiln" cache stats --cache-dir ''
check "garbage KILN_ENGINE_CACHE still compiles" 0 env KILN_ENGINE_CACHE='tape,ram:lots' "$kiln" build "$work/tiny.onnx" --shape input=1x3x64x64 --cache-dir "$work/c3" --optimization-level 0
expect_output "garbage KILN_ENGINE_CACHE is a warning" "KILN_ENGINE_CACHE: engine cache tier 'tape'"
check "no subcommand" 1 "$kiln"
check "help" 0 "$kiln" run --help

if [ "$failures" -ne 0 ]; then
  echo "$failures CLI check(s) failed"
  exit 1
fi
echo "all CLI checks passed"
