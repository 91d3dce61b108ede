#!/usr/bin/env python3
"""Combines several bench/run result files (the .json) into one latency table: for each
(model, batch, threads) row, the median over the runs of each system's median, the
ONNX Runtime / kiln ratio of every run, and the ratio of the medians.

    bench/median_of_runs.py results/A.json results/B.json results/C.json > table.md

On a small shared VM one run's ratios can swing by 30% or more (a row disturbed while it
ran); the median of three runs is what the closing notes report.
"""

import json
import statistics
import sys

MODELS = [("resnet18", 1), ("resnet18", 16), ("resnet50", 1), ("resnet50", 16),
          ("mobilenet_v2", 1), ("mobilenet_v2", 16), ("bert_base", 1)]


def latency_rows(paths):
    """{(model, batch, threads, system, precision): {run index: median ms}}"""
    rows = {}
    for i, path in enumerate(paths):
        with open(path) as f:
            result = json.load(f)
        for r in result["records"]:
            if r["case"] != "latency" or r["metric"] != "latency" or r.get("status") != "ok":
                continue
            precision = r.get("precision") if r["system"] == "kiln" else None
            rows.setdefault((r["model"], r["batch"], r["threads"], r["system"], precision), {})[i] = r["median"]
    return rows


def main(paths):
    rows = latency_rows(paths)
    print("| model | batch | threads | ORT ms | kiln fp32 ms | fp32 ratio per run | fp32 ratio | "
          "kiln bf16 ms | bf16 ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        peer = "onnxruntime" if threads == 1 else f"onnxruntime-{threads}t"
        for model, batch in MODELS:
            ort = rows.get((model, batch, threads, peer, None))
            fp32 = rows.get((model, batch, threads, "kiln", "fp32"))
            bf16 = rows.get((model, batch, threads, "kiln", "bf16"))
            if not ort or not fp32:
                continue
            per_run = " / ".join(f"{ort[i] / fp32[i]:.2f}" for i in sorted(fp32) if i in ort)
            o, f = statistics.median(ort.values()), statistics.median(fp32.values())
            b = statistics.median(bf16.values()) if bf16 else float("nan")
            print(f"| {model} | {batch} | {threads} | {o:,.1f} | {f:,.1f} | {per_run} | **{o / f:.2f}** | "
                  f"{b:,.1f} | {o / b:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
