"""kiln's per-layer profile beside ONNX Runtime's per-node profile of the same model: where
kiln loses time against its peer, layer by layer.

Runs `kiln run --profile --json` and bench/peers/ort_profile.mjs (ORT's own profiler) at the same
thread count, then matches each kiln layer to the ORT nodes it covers by node name (ORT's fused
nodes keep their anchor's name, e.g. "<conv>_output_0_nchwc" or "<mul>/QuickGeluFusion/"). Prints
both sums and the layers sorted by kiln's time, or by kiln's time minus ORT's with --by-gap. ORT's
profiler adds a little time per node and kiln's profile synchronises every step, so compare
layers, not totals; rerun before trusting a small gap on a shared machine.

Usage: /usr/bin/python3 bench/layers_vs_ort.py MODEL.onnx --shape input=1x3x224x224 [--threads 2]
       [--kiln build/tools/kiln/kiln] [--top 30] [--by-gap]
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def ort_node_ms(profile_path, warmup, runs):
    """Mean ms per node over the model runs after the first `warmup` in ORT's profile file."""
    with open(profile_path) as f:
        events = json.load(f)
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    kept = model_runs[warmup:] if len(model_runs) > warmup else model_runs
    if not kept:
        sys.exit("layers_vs_ort: ORT's profile has no model runs")
    start = kept[0]["ts"]
    per_node = collections.defaultdict(float)
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e["ts"] < start:
            continue
        node = name[: -len("_kernel_time")]
        node = re.sub(r"_output_0_nchwc$", "", node)
        node = re.sub(r"/[A-Za-z]+Fusion/$", "", node)
        per_node[node] += e["dur"] / len(kept) / 1000.0
    return per_node


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--shape", required=True, help="NAME=DIMS of the model's single input, e.g. input=1x3x224x224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kiln", default=os.path.join(BENCH_DIR, "..", "build", "tools", "kiln", "kiln"))
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--by-gap", action="store_true", help="sort by kiln ms minus ORT ms")
    args = ap.parse_args()

    if "=" not in args.shape:
        sys.exit("layers_vs_ort: --shape is NAME=DIMS, e.g. input=1x3x224x224")
    dims = args.shape.split("=", 1)[1]
    work = tempfile.mkdtemp(prefix="kiln-layers-vs-ort-")
    kiln = subprocess.run([args.kiln, "run", args.model, "--threads", str(args.threads), "--shape", args.shape,
                           "--repeat", str(args.runs), "--profile", "--profile-runs", str(args.runs),
                           "--no-cache", "--json"], capture_output=True, text=True)
    if kiln.returncode != 0:
        sys.exit("layers_vs_ort: kiln run failed: " + kiln.stderr[-800:])
    profile = json.loads(kiln.stdout)["profile"]
    ort = subprocess.run(["node", os.path.join(BENCH_DIR, "peers", "ort_profile.mjs"), "--model", args.model,
                          "--shape", dims, "--threads", str(args.threads), "--runs", str(args.runs),
                          "--prefix", os.path.join(work, "ort")], capture_output=True, text=True)
    if ort.returncode != 0:
        sys.exit("layers_vs_ort: ort_profile failed: " + ort.stderr[-800:])
    info = json.loads(ort.stdout)
    ort_ms = ort_node_ms(info["profile"], info["warmup"], info["runs"])

    kiln_ms = collections.defaultdict(float)
    nodes = {}
    for layer in profile["layers"]:
        kiln_ms[layer["name"]] += layer["ms"]
        nodes.setdefault(layer["name"], set()).update(layer["nodes"])
    rows = []
    matched = 0.0
    for name, ms in kiln_ms.items():
        peer = sum(ort_ms.get(n, 0.0) for n in nodes[name])
        matched += peer
        rows.append((ms, peer, name))
    rows.sort(key=(lambda r: r[1] - r[0]) if args.by_gap else (lambda r: -r[0]))
    print(f"kiln {sum(kiln_ms.values()):.3f} ms in layers ({profile['wall_ms']:.3f} ms per run); "
          f"ORT {sum(ort_ms.values()):.3f} ms in nodes, {matched:.3f} of it matched to kiln's layers")
    print(f"{'kiln ms':>8} {'ORT ms':>8}  layer")
    for ms, peer, name in rows[: args.top]:
        print(f"{ms:8.3f} {peer:8.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
