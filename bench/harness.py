#!/usr/bin/env python3
"""kiln's benchmark harness: kiln and its peers, side by side, in one run, on the same inputs.

For each case it writes the model with `kiln zoo`, writes seeded inputs once as .npy, runs
`kiln run` (the oneDNN cpu backend, fp32 and bf16, at 1 thread and at all cores) and the
ONNX Runtime peer (bench/peers/ort_runner.mjs) at the same thread counts on those files,
checks every kiln row's outputs against the peer's, and records medians with min and max.
The compile cases time `kiln build` cold, saving and hitting the engine cache, as the
tutorial does. Anything kiln cannot run is recorded as skipped with the reason: never a
made-up number. See bench/README.md for the cases, the ratios and the JSON schema.

Modules: common.py (processes, kiln, inputs, records, cross-check), cases.py (the cases),
report.py (Markdown and plot).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import corpus_cases  # noqa: E402
import machine  # noqa: E402
import report  # noqa: E402
from common import BENCH_DIR, INPUT_SEED, REPO_DIR, SEQ_LEN, TOLERANCES, WEIGHT_SEED, Kiln, log  # noqa: E402

CASES = ["latency", "peak_rss", "refit_overhead", "compile_cold", "compile_save", "compile_hit", "hit_floor",
         "first_output"]
EXTRA_CASES = ["corpus"]  # only when asked for (--cases corpus): bench/corpus_cases.py
# (model, batch) workloads of the latency and peak_rss cases.
LATENCY_FULL = [("resnet18", 1), ("resnet18", 16), ("resnet50", 1), ("resnet50", 16), ("mobilenet_v2", 1),
                ("mobilenet_v2", 16), ("bert_base", 1)]
LATENCY_QUICK = [("resnet_tiny", 1), ("mobilenet_tiny", 1), ("bert_tiny", 1), ("resnet18", 1)]
# The compile cases: (model, batch, dynamic). resnet18 is the tutorial's: a dynamic batch
# (--min 1 --opt 100 --max 200); the others at a fixed batch 1 (sequence SEQ_LEN).
COMPILE_FULL = ["resnet18", "resnet50", "bert_base"]
COMPILE_BATCH = {"resnet18": (100, True)}
REFIT_WORKLOAD = ("resnet18", 1)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO_DIR, "build"), help="kiln's build folder")
    ap.add_argument("--quick", action="store_true",
                    help="small models at batch 1, fewer runs, the ref backend too, compile cases at batch 1")
    ap.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES + EXTRA_CASES))
    ap.add_argument("--models", help="comma-separated zoo models for latency/peak_rss (default: the case list)")
    ap.add_argument("--batches", help="comma-separated batch sizes for --models (default 1,16; 1 with --quick)")
    ap.add_argument("--precisions", default=",".join(TOLERANCES),
                    help="kiln rows: fp32 (--precision fp32), bf16 (--precision fp32,bf16); default both")
    ap.add_argument("--with-ref", action="store_true",
                    help="also time kiln's reference backend (about 30x slower; on with --quick)")
    ap.add_argument("--compile-models",
                    help="models of the compile cases: resnet18 at batch 100 (dynamic 1-200, as the tutorial), "
                         "any other at batch 1, model@N at batch N (default resnet18,resnet50,bert_base; "
                         "resnet18 at batch 1 quick)")
    ap.add_argument("--compile-runs", type=int, help="cold and save builds per compile model (3; 2 quick)")
    ap.add_argument("--hit-runs", type=int, default=6, help="at least this many cache hits per compile model (6)")
    ap.add_argument("--refit-rounds", type=int, help="refit_overhead rounds, each a fresh and a refitted engine "
                                                     "(2; 1 quick)")
    ap.add_argument("--budget", type=float, help="seconds of timed runs per system and workload (3; 1 quick)")
    ap.add_argument("--rounds", type=int, help="latency: time every row this many times in turn, the budget and "
                                               "run counts split between the rounds (3; 1 quick)")
    ap.add_argument("--min-runs", type=int, help="at least this many timed runs (3; 2 quick)")
    ap.add_argument("--max-runs", type=int, help="at most this many timed runs (30; 10 quick)")
    ap.add_argument("--warmup", type=int, help="untimed runs before the timed ones, in every process of every "
                                               "system (3; 1 quick): a small model's first runs at 2 threads "
                                               "can take twice its steady time")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before one process is killed")
    ap.add_argument("--results-dir", default=os.path.join(BENCH_DIR, "results"))
    ap.add_argument("--keep-work", action="store_true", help="keep the models, inputs, outputs and caches")
    corpus_cases.add_arguments(ap)
    opts = ap.parse_args(argv)
    corpus_cases.finish_args(opts)
    q = opts.quick
    opts.budget = opts.budget if opts.budget is not None else (1.0 if q else 3.0)
    opts.min_runs = opts.min_runs if opts.min_runs is not None else (2 if q else 3)
    opts.max_runs = opts.max_runs if opts.max_runs is not None else (10 if q else 30)
    opts.warmup = max(0, opts.warmup if opts.warmup is not None else (1 if q else 3))
    opts.compile_runs = max(1, opts.compile_runs if opts.compile_runs is not None else (2 if q else 3))
    opts.refit_rounds = max(1, opts.refit_rounds if opts.refit_rounds is not None else (1 if q else 2))
    opts.rounds = max(1, opts.rounds if opts.rounds is not None else (1 if q else 3))
    opts.with_ref = opts.with_ref or q
    opts.cases = opts.cases.split(",") if opts.cases else list(CASES)
    for c in opts.cases:
        if c not in CASES + EXTRA_CASES:
            ap.error(f"unknown case '{c}' (cases: {', '.join(CASES + EXTRA_CASES)})")
    opts.precisions = opts.precisions.split(",")
    for p in opts.precisions:
        if p not in TOLERANCES:
            ap.error(f"unknown precision '{p}' (precisions: {', '.join(TOLERANCES)})")
    if opts.models:
        batches = [int(b) for b in (opts.batches or ("1" if q else "1,16")).split(",")]
        opts.workloads = [(m, b) for m in opts.models.split(",") for b in batches]
    else:
        opts.workloads = LATENCY_QUICK if q else LATENCY_FULL
        if opts.batches:
            keep = {int(b) for b in opts.batches.split(",")}
            opts.workloads = [w for w in opts.workloads if w[1] in keep]
    opts.compile_models = opts.compile_models or ("resnet18" if q else ",".join(COMPILE_FULL))
    # --quick: the compile cases at batch 1 (a batch-100 cold build takes minutes).
    def workload(m):
        # "model@batch" picks a fixed batch (a larger batch makes a longer cold build).
        if "@" in m:
            name, b = m.split("@", 1)
            return (name, int(b), False)
        return (m, 1, False) if q else (m, *COMPILE_BATCH.get(m, (1, False)))
    opts.compile_workloads = [workload(m) for m in opts.compile_models.split(",")]
    opts.refit_workload = REFIT_WORKLOAD
    return opts


def main(argv):
    opts = parse_args(argv)
    kiln = Kiln(opts.build_dir, opts.timeout)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    versions = {"kiln": kiln.version(), "onnxruntime": None, "node": node,
                "python": sys.version.split()[0]}
    versions["kiln_binary"] = kiln.binary_info()
    if versions["kiln_binary"]["stale"]:
        log(f"warning: {kiln.exe} is older than {versions['kiln_binary']['newer_count']} tracked source file(s) "
            f"({', '.join(versions['kiln_binary']['newer_sources'])}): rebuild it, or the results are an older "
            f"kiln's than '{versions['kiln']}'")
    mach = machine.describe()
    ctx = {"cpus": mach["usable_cpus"] or 1}
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    records = []
    started = time.time()
    loadavg_start = round(os.getloadavg()[0], 2)
    try:
        probe_model = os.path.join(work, "probe.onnx")
        probe_name = "resnet_tiny" if "resnet_tiny" in kiln.zoo else next(iter(kiln.zoo))
        subprocess.check_call([kiln.exe, "zoo", probe_name, "-o", probe_model], stdout=subprocess.DEVNULL)
        available = kiln.backends(probe_model)
        if "cpu" not in available:
            sys.exit(f"bench: this kiln has no cpu backend (available: {', '.join(available)})")
        log(f"kiln {versions['kiln']}; zoo: {', '.join(kiln.zoo)}; work dir {work}; "
            f"load average {loadavg_start}")
        if "latency" in opts.cases or "peak_rss" in opts.cases:
            for model, batch in opts.workloads:
                cases.latency_workload(kiln, ctx, model, batch, work, opts, records, versions)
        if "refit_overhead" in opts.cases:
            cases.refit_overhead(kiln, ctx, work, opts, records)
        cases.compile_cases(kiln, ctx, work, opts, records, versions)
        if "corpus" in opts.cases:
            corpus_cases.run(kiln, ctx, work, opts, records, versions)
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if versions["onnxruntime"] is None:
        versions["onnxruntime"] = "not run"

    result = {"machine": mach, "versions": versions,
              "run": {"date": datetime.date.today().isoformat(), "quick": opts.quick, "cases": opts.cases,
                      "precisions": opts.precisions, "budget_s": opts.budget, "min_runs": opts.min_runs,
                      "max_runs": opts.max_runs, "warmup": opts.warmup, "compile_runs": opts.compile_runs, "hit_runs": opts.hit_runs,
                      "refit_rounds": opts.refit_rounds, "rounds": opts.rounds, "tolerances": TOLERANCES,
                      "input_seed": INPUT_SEED,
                      "weight_seed": WEIGHT_SEED, "seq_len": SEQ_LEN, "loadavg_start": loadavg_start,
                      "loadavg_end": round(os.getloadavg()[0], 2), "duration_s": round(time.time() - started, 1)},
              "records": records}
    os.makedirs(opts.results_dir, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{mach['host']}" + ("-quick" if opts.quick else "") \
        + ("-corpus" if opts.cases == ["corpus"] else "")
    base = os.path.join(opts.results_dir, stem)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    table = report.markdown(result, f"kiln benchmark {stem}") + corpus_cases.markdown(result)
    with open(base + ".md", "w") as f:
        f.write(table + "\n")
    png = report.plot(result, base + "-latency.png")
    print(table)
    log(f"wrote {base}.json, {base}.md" + (f", {png}" if png else "") + f" in {result['run']['duration_s']:.0f} s")
    failed = [r for r in records if r.get("status") == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
