#!/usr/bin/env python3
"""Combines several bench/run result files (the .json) into one latency table: for each
(model, batch, threads) row, the median over the runs of each system's median, the
ONNX Runtime / kiln ratio of every run, and the ratio of the medians.

    bench/median_of_runs.py results/A.json results/B.json results/C.json > table.md

On a small shared VM one run's ratios can swing by 30% or more (a row disturbed while it
ran); the median of three runs is what the closing notes report.

Only records with status "ok" count. Nothing is left out silently: every record that was
dropped (FAILED cross-check, error, skipped, unchecked) is listed with its run file and the
reason, on stderr and in a "dropped" table after the medians, and a row whose ratio covers
fewer runs than were given says which runs it lacks.
"""

import json
import os
import statistics
import sys

# bf16 is compared with ONNX Runtime's fp32 under a looser bound: a precision trade.
BF16 = "bf16 (precision trade: vs ORT fp32)"


def load(paths):
    """(kept, dropped): kept = {(model, batch, threads, system, precision): {run index: median ms}};
    dropped = [(run index, record, why)] for the latency records that did not count."""
    kept, dropped = {}, []
    for i, path in enumerate(paths):
        with open(path) as f:
            result = json.load(f)
        for r in result["records"]:
            if r["case"] != "latency" or r["metric"] != "latency":
                continue
            if r.get("status") != "ok" or r.get("median") is None:
                why = r.get("reason") or r.get("check_error")
                if not why and r.get("status") == "FAILED":
                    why = f"max abs err {r.get('max_abs_err')} over tolerance {r.get('tolerance')}"
                dropped.append((i, r, f"{r.get('status')}: {why or 'no reason recorded'}"))
                continue
            precision = r.get("precision") if r["system"].startswith("kiln") else None
            kept.setdefault((r["model"], r["batch"], r["threads"], r["system"], precision), {})[i] = r["median"]
    return kept, dropped


def row_label(r):
    if r["system"].startswith("kiln"):
        p = r.get("precision", "fp32")
        return f"{r['system']} {BF16 if p == 'bf16' else p} {r.get('threads')}t"
    return f"{r['system']} {r.get('threads')}t"


def peer_of(threads):
    return "onnxruntime" if threads == 1 else f"onnxruntime-{threads}t"


def main(paths):
    kept, dropped = load(paths)
    names = [os.path.basename(p) for p in paths]
    lines = ["| model | batch | threads | ORT ms | kiln fp32 ms | fp32 ratio per run | fp32 ratio | "
             f"kiln {BF16} ms | bf16 ratio (precision trade) | runs counted |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    workloads = dict.fromkeys((m, b, t) for m, b, t, _, _ in kept)
    for model, batch, threads in sorted(workloads, key=lambda w: (w[2], list(workloads).index(w))):
        ort = kept.get((model, batch, threads, peer_of(threads), None))
        fp32 = kept.get((model, batch, threads, "kiln", "fp32"))
        bf16 = kept.get((model, batch, threads, "kiln", "bf16"))
        if not ort or not fp32:
            why = "no ok onnxruntime record" if not ort else "no ok kiln fp32 record"
            lines.append(f"| {model} | {batch} | {threads} | - | - | - | not counted: {why} in any run | - | - | - |")
            continue
        both = [i for i in sorted(fp32) if i in ort]
        if not both:
            lines.append(f"| {model} | {batch} | {threads} | - | - | - | not counted: no run has ok onnxruntime "
                         "and kiln fp32 records both | - | - | - |")
            continue
        per_run = " / ".join(f"{ort[i] / fp32[i]:.2f}" for i in both)
        # Medians over the runs that have both, so the ratio compares the same runs.
        o, f = statistics.median(ort[i] for i in both), statistics.median(fp32[i] for i in both)
        b_runs = [i for i in sorted(bf16 or {}) if i in ort]
        b = statistics.median(bf16[i] for i in b_runs) if b_runs else None
        ob = statistics.median(ort[i] for i in b_runs) if b_runs else None
        lacking = [names[i] for i in range(len(paths)) if i not in both]
        counted = f"{len(both)} of {len(paths)}" + (f" (not in: {', '.join(lacking)})" if lacking else "")
        lines.append(f"| {model} | {batch} | {threads} | {o:,.1f} | {f:,.1f} | {per_run} | **{o / f:.2f}** | "
                     f"{f'{b:,.1f}' if b else '-'} | {f'{ob / b:.2f}' if b else '-'} | {counted} |")
    shown = {"kiln", "onnxruntime"} | {peer_of(t) for _, _, t in workloads}
    others = sorted({k[3] for k in kept if k[3] not in shown})
    if others:
        lines += ["", f"Not in this table (ok, but not a kiln cpu / onnxruntime pair): {', '.join(others)}."]
    if dropped:
        lines += ["", "Dropped (not \"ok\": not in the medians above):", "",
                  "| run | model | batch | row | why |", "|---|---|---|---|---|"]
        for i, r, why in dropped:
            lines.append(f"| {names[i]} | {r['model']} | {r['batch']} | {row_label(r)} | {why} |")
            print(f"median_of_runs: dropped {names[i]}: {r['model']} batch {r['batch']} {row_label(r)}: {why}",
                  file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
