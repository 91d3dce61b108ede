#!/usr/bin/env python3
"""kiln's benchmark harness: kiln and its peers, side by side, in one run, on the same inputs.

For each case it writes the model with `kiln zoo`, writes seeded inputs once as .npy, runs
`kiln run` and the ONNX Runtime peer (bench/peers/ort_runner.mjs) on those files, checks
kiln's outputs against the peer's, and records medians with min and max. Anything kiln
cannot run yet is recorded as skipped with the reason: never a made-up number.
See bench/README.md for the cases, the ratios and the JSON schema.
"""

import argparse
import array
import datetime
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
import npy  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
ORT_RUNNER = os.path.join(BENCH_DIR, "peers", "ort_runner.mjs")

CASES = ["latency", "peak_rss", "compile_cold", "compile_save", "compile_hit", "hit_floor"]
ENGINE_CACHE_MISSING = "kiln has no engine builder/cache yet (issues 4, 5)"
# (model, batch) workloads of the latency and peak_rss cases.
LATENCY_FULL = [("resnet18", 1), ("resnet18", 16), ("resnet50", 1), ("resnet50", 16), ("mobilenet_v2", 1),
                ("mobilenet_v2", 16), ("bert_base", 1)]
LATENCY_QUICK = [("resnet_tiny", 1), ("mobilenet_tiny", 1), ("bert_tiny", 1), ("resnet18", 1)]
COMPILE_WORKLOAD = ("resnet18", 100)  # the tutorial's three compile numbers use this model
SEQ_LEN = 128  # every symbolic dim other than the batch (BERT's sequence length)
WEIGHT_SEED = 1
INPUT_SEED = 2024
# Pass/fail bound of the cross-check: a fast wrong answer must never count as a win.
ABS_TOL = 1e-3


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes

class Proc:
    def __init__(self, rc, out, err, wall_s, maxrss_mib):
        self.rc, self.out, self.err, self.wall_s, self.maxrss_mib = rc, out, err, wall_s, maxrss_mib

    def last_error(self):
        lines = [l for l in self.err.strip().splitlines() if l.strip()]
        return lines[-1][:300] if lines else f"exit code {self.rc}"


def run_measured(cmd, timeout_s):
    """Runs cmd; returns its output and its own peak RSS, from os.wait4's rusage.

    Output goes to files, not pipes, so that we reap the child ourselves with wait4
    (subprocess.communicate would reap it first and lose the rusage).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        timer = threading.Timer(timeout_s, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        rc = p.returncode if wall < timeout_s else 124
        return Proc(rc, out.read(), err.read(), wall, usage.ru_maxrss / 1024.0)  # KiB on Linux


def json_from(proc):
    """The last line of stdout that is a JSON object (kiln prints one pretty object)."""
    text = proc.out.strip()
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    raise ValueError("no JSON on stdout")


# ---------------------------------------------------------------------------- statistics

def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def planned_runs(one_run_ms, opts):
    """Runs to time: enough to fill the budget, at least min_runs, at most max_runs."""
    want = math.ceil(opts.budget * 1000.0 / max(one_run_ms, 1e-3))
    return max(opts.min_runs, min(opts.max_runs, want))


# ---------------------------------------------------------------------------- kiln

class Kiln:
    def __init__(self, build_dir, timeout_s):
        self.exe = os.path.join(build_dir, "tools", "kiln", "kiln")
        if not os.access(self.exe, os.X_OK):
            sys.exit(f"bench: no kiln binary at {self.exe}: build first (make build BUILD_DIR=...)")
        self.timeout_s = timeout_s
        listing = json.loads(subprocess.check_output([self.exe, "zoo", "--list", "--json"], text=True))
        self.zoo = {m["name"]: m.get("description", "") for m in listing.get("models", [])}

    def call(self, *args, timeout_s=None):
        return run_measured([self.exe, *args], timeout_s or self.timeout_s)

    def backends(self, model):
        """The backends this kiln has, from the error it gives for an unknown one."""
        proc = self.call("run", model, "--backend", "no-such-backend", timeout_s=120)
        m = re.search(r"available: ([^)]*)\)", proc.err + proc.out)
        return [b.strip() for b in m.group(1).split(",")] if m else ["ref"]

    def version(self):
        try:
            return subprocess.check_output(["git", "-C", REPO_DIR, "describe", "--always", "--dirty", "--tags"],
                                           text=True, stderr=subprocess.DEVNULL).strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"


# ---------------------------------------------------------------------------- inputs

DTYPE_RE = re.compile(r"^(\w+)\[(.*)\]$")


def parse_type(text):
    """'float32[N,3,224,224]' → ('float32', ['N', 3, 224, 224]) (symbolic dims stay strings)."""
    m = DTYPE_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse input type '{text}'")
    dims = [d.strip() for d in m.group(2).split(",") if d.strip()]
    return m.group(1), [int(d) if d.lstrip("-").isdigit() else d for d in dims]


def vocab_size(inspect, input_name):
    """Rows of the embedding table that `input_name` indexes (Gather's data), if found."""
    # `kiln inspect` prints "weight %NAME: float32[V,H]" and "%out: T = Gather(%data, %indices)".
    graph = inspect.get("graph", "")
    weights = dict(re.findall(r"^\s*weight %(\S+): \w+\[(\d+),", graph, re.M))
    for data, indices in re.findall(r"= Gather\(%([^,\s]+), %([^,)\s]+)", graph):
        if indices == input_name and data in weights:
            return int(weights[data])
    return None


def make_inputs(inspect, batch, directory, notes):
    """Seeded inputs, written once as .npy and fed to every system.

    float: uniform in [-1, 1); int64 token ids: uniform in [0, vocab); attention masks: ones;
    token type ids: zeros. Symbolic dims: the batch where it is the leading dim, else SEQ_LEN.
    """
    rng = random.Random(INPUT_SEED)
    files = []
    for spec in inspect.get("inputs", []):
        name = spec["name"]
        dtype, dims = parse_type(spec["type"])
        shape = [d if isinstance(d, int) and d >= 0 else (batch if i == 0 else SEQ_LEN) for i, d in enumerate(dims)]
        count = math.prod(shape)
        lname = name.lower()
        if dtype in ("float32", "float64"):
            values = array.array("f" if dtype == "float32" else "d", (rng.random() * 2 - 1 for _ in range(count)))
        elif dtype in ("int64", "int32"):
            code = "q" if dtype == "int64" else "i"
            if "mask" in lname:
                values = array.array(code, [1]) * count
            elif "type" in lname or "segment" in lname:
                values = array.array(code, [0]) * count
            else:
                vocab = vocab_size(inspect, name)
                if vocab is None:
                    vocab = 100
                    notes.append(f"input '{name}': embedding size not found, ids drawn from [0, {vocab})")
                values = array.array(code, (rng.randrange(vocab) for _ in range(count)))
        elif dtype == "bool":
            values = array.array("B", [1]) * count
        else:
            raise ValueError(f"input '{name}': no generator for {dtype}")
        path = os.path.join(directory, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy")
        npy.write(path, dtype, shape, values)
        files.append((name, path, shape))
    return files


# ---------------------------------------------------------------------------- the runs

def record(case, model, batch, system, metric, unit, **extra):
    r = {"case": case, "model": model, "batch": batch, "precision": "fp32", "system": system, "metric": metric,
         "unit": unit, "median": None, "min": None, "max": None, "runs": 0}
    r.update(extra)
    return r


def skipped(case, model, batch, system, metric, unit, reason, **extra):
    return record(case, model, batch, system, metric, unit, status="skipped", reason=reason, **extra)


def cross_check(outputs, reference_outputs):
    """Worst errors of `outputs` against `reference_outputs` ({name: file}) over all outputs."""
    worst = {"max_abs_err": 0.0, "max_rel_err": 0.0, "ref_max_abs": 0.0}
    for name, path in outputs.items():
        ref = reference_outputs.get(name)
        if ref is None:
            return {"error": f"output '{name}' missing from the reference"}
        c = npy.compare(path, ref)
        if not c["shape_ok"]:
            return {"error": f"output '{name}': {c['detail']}"}
        if c["nonfinite"]:
            return {"error": f"output '{name}': {c['nonfinite']} non-finite values where the reference differs"}
        for k in worst:
            worst[k] = max(worst[k], c[k])
    worst["passed"] = worst["max_abs_err"] <= ABS_TOL * max(1.0, worst["ref_max_abs"])
    return worst


def apply_check(rec, check, against, judge=True):
    """Stores the errors on rec; `judge`: mark it FAILED when out of bounds (kiln's records only:
    the peer is the reference, so a disagreement is kiln's failure, not the peer's)."""
    rec["checked_against"] = against
    if "error" in check:
        rec["check_error"] = check["error"]
    else:
        rec["max_abs_err"] = check["max_abs_err"]
        rec["max_rel_err"] = check["max_rel_err"]
        rec["ref_max_abs"] = check["ref_max_abs"]
    if judge and not check.get("passed"):
        rec["status"] = "FAILED"


def run_ort(model_path, inputs, out_dir, threads, opts, extra=()):
    cmd = ["node", ORT_RUNNER, "--model", model_path, "--threads", str(threads), "--output-dir", out_dir,
           "--warmup", "1", "--min-runs", str(opts.min_runs), "--max-runs", str(opts.max_runs),
           "--budget-s", str(opts.budget), *extra]
    for name, path, _ in inputs:
        cmd += ["--input", f"{name}={path}"]
    proc = run_measured(cmd, opts.timeout)
    if proc.rc != 0:
        return proc, None
    return proc, json_from(proc)


def latency_workload(kiln, ctx, model, batch, work, opts, records, versions):
    """Latency (and peak RSS) of one zoo model at one batch size: kiln vs every peer."""
    want_latency, want_rss = "latency" in opts.cases, "peak_rss" in opts.cases
    peers = [("onnxruntime", 1)] + ([(f"onnxruntime-{ctx['cpus']}t", ctx["cpus"])] if ctx["cpus"] > 1 else [])
    systems = [("kiln", 1)] + peers

    def skip_all(reason):
        for system, threads in systems:
            if want_latency:
                records.append(skipped("latency", model, batch, system, "latency", "ms", reason, threads=threads))
            if want_rss:
                records.append(skipped("peak_rss", model, batch, system, "peak_rss", "MiB", reason, threads=threads))

    if model not in kiln.zoo:
        skip_all(f"'{model}' is not in kiln's zoo yet (kiln zoo --list)")
        return
    tag = f"{model}-b{batch}"
    d = os.path.join(work, tag)
    os.makedirs(d, exist_ok=True)
    model_path = os.path.join(d, "model.onnx")
    proc = kiln.call("zoo", model, "-o", model_path, "--seed", str(WEIGHT_SEED), "--batch", str(batch), "--json")
    if proc.rc != 0:
        skip_all(f"kiln zoo failed: {proc.last_error()}")
        return
    proc = kiln.call("inspect", model_path, "--json")
    if proc.rc != 0:
        skip_all(f"kiln inspect failed: {proc.last_error()}")
        return
    inspect = json_from(proc)
    notes = []
    inputs = make_inputs(inspect, batch, d, notes)
    for n in notes:
        log(f"{tag}: {n}")
    input_args = [a for name, path, _ in inputs for a in ("--input", f"{name}={path}")]

    # kiln: a probe run sizes the timed run; the timed run's first pass is a warmup (dropped),
    # as the peer's is, so neither side pays first-touch costs in its figures.
    backend = ctx["backend"]
    kiln_rec = kiln_rss = None
    kiln_outputs = {}
    unsupported = inspect.get("unsupported") or []
    if unsupported and backend == "ref":
        u = unsupported[0]
        reason = f"kiln's ref backend cannot run it: {u.get('op')} ({u.get('reason')})"
        kiln_rec = skipped("latency", model, batch, "kiln", "latency", "ms", reason, threads=1, backend=backend)
        kiln_rss = skipped("peak_rss", model, batch, "kiln", "peak_rss", "MiB", reason, threads=1, backend=backend)
    else:
        log(f"{tag}: kiln probe run")
        probe = kiln.call("run", model_path, "--backend", backend, "--json", *input_args)
        if probe.rc != 0:
            reason = f"kiln run failed: {probe.last_error()}"
            kiln_rec = record("latency", model, batch, "kiln", "latency", "ms", status="error", reason=reason,
                              threads=1, backend=backend)
            kiln_rss = record("peak_rss", model, batch, "kiln", "peak_rss", "MiB", status="error", reason=reason,
                              threads=1, backend=backend)
        else:
            one = json_from(probe)["timings_ms"]["run"][0]
            n = planned_runs(one, opts)
            log(f"{tag}: kiln one run {one:.0f} ms → timing {n} runs (+1 warmup)")
            kdir = os.path.join(d, "kiln-out")
            timed = kiln.call("run", model_path, "--backend", backend, "--json", "--repeat", str(n + 1),
                              "--output-dir", kdir, *input_args)
            if timed.rc != 0:
                reason = f"kiln run failed: {timed.last_error()}"
                kiln_rec = record("latency", model, batch, "kiln", "latency", "ms", status="error", reason=reason,
                                  threads=1, backend=backend)
            else:
                report = json_from(timed)
                kiln_outputs = {o["name"]: o["file"] for o in report["outputs"]}
                kiln_rec = record("latency", model, batch, "kiln", "latency", "ms", threads=1, backend=backend,
                                  status="ok", import_ms=report["timings_ms"]["import"],
                                  prepare_ms=report["timings_ms"]["prepare"])
                kiln_rec.update(summary(report["timings_ms"]["run"][1:]))
                kiln_rss = record("peak_rss", model, batch, "kiln", "peak_rss", "MiB", threads=1, backend=backend,
                                  status="ok", median=timed.maxrss_mib, min=timed.maxrss_mib, max=timed.maxrss_mib,
                                  runs=1)

    peer_recs = []
    reference = None  # the single-threaded peer's outputs: what kiln's are checked against
    for system, threads in peers:
        log(f"{tag}: {system} ({threads} thread{'s' if threads > 1 else ''})")
        odir = os.path.join(d, f"{system}-out")
        proc, rep = run_ort(model_path, inputs, odir, threads, opts)
        if rep is None:
            reason = f"onnxruntime failed: {proc.last_error()}"
            peer_recs.append((record("latency", model, batch, system, "latency", "ms", threads=threads,
                                     status="error", reason=reason),
                              record("peak_rss", model, batch, system, "peak_rss", "MiB", threads=threads,
                                     status="error", reason=reason)))
            continue
        versions["onnxruntime"] = rep["version"]
        outs = {o["name"]: o["file"] for o in rep["outputs"] if "file" in o}
        rec = record("latency", model, batch, system, "latency", "ms", threads=threads, status="ok",
                     session_create_ms=rep["load_ms"][0])
        rec.update(summary(rep["latencies_ms"]))
        if kiln_outputs:
            apply_check(rec, cross_check(outs, kiln_outputs), "kiln", judge=False)
        if reference is None:
            reference = (system, outs)
        rss = record("peak_rss", model, batch, system, "peak_rss", "MiB", threads=threads, status="ok",
                     median=proc.maxrss_mib, min=proc.maxrss_mib, max=proc.maxrss_mib, runs=1,
                     note="includes the node.js runtime")
        peer_recs.append((rec, rss))

    if kiln_rec is not None and kiln_rec.get("status") == "ok":
        if reference is None:
            kiln_rec["status"] = "unchecked"
        else:
            apply_check(kiln_rec, cross_check(kiln_outputs, reference[1]), reference[0])
        err = kiln_rec.get("max_abs_err")
        log(f"{tag}: kiln vs {reference[0] if reference else '-'}: max abs err {err}, "
            f"max rel err {kiln_rec.get('max_rel_err')} → {kiln_rec['status']}")

    for rec, rss in [(kiln_rec, kiln_rss)] + peer_recs:
        if want_latency and rec is not None:
            records.append(rec)
            if batch > 1 and rec.get("median"):
                # Throughput from the same runs: samples/s; min comes from the slowest run.
                records.append(record("latency", model, batch, rec["system"], "throughput", "samples/s",
                                      threads=rec.get("threads"), backend=rec.get("backend"), status=rec["status"],
                                      median=batch * 1000.0 / rec["median"], min=batch * 1000.0 / rec["max"],
                                      max=batch * 1000.0 / rec["min"], runs=rec["runs"]))
        if want_rss and rss is not None:
            records.append(rss)


def compile_cases(kiln, ctx, work, opts, records, versions):
    """compile_cold / compile_save / compile_hit and hit_floor, on resnet18 at batch 100."""
    model, batch = COMPILE_WORKLOAD
    wanted = [c for c in ("compile_cold", "compile_save", "compile_hit", "hit_floor") if c in opts.cases]
    if not wanted:
        return
    if model not in kiln.zoo:
        for c in wanted:
            records.append(skipped(c, model, batch, "kiln", c, "ms", f"'{model}' is not in kiln's zoo"))
        return
    d = os.path.join(work, f"{model}-b{batch}")
    os.makedirs(d, exist_ok=True)
    model_path = os.path.join(d, "model.onnx")
    proc = kiln.call("zoo", model, "-o", model_path, "--seed", str(WEIGHT_SEED), "--batch", str(batch), "--json")
    if proc.rc != 0:
        for c in wanted:
            records.append(skipped(c, model, batch, "kiln", c, "ms", f"kiln zoo failed: {proc.last_error()}"))
        return
    # kiln's three compile numbers need the engine builder and cache (not built yet).
    for c in ("compile_cold", "compile_save", "compile_hit"):
        if c in wanted:
            records.append(skipped(c, model, batch, "kiln", c, "ms", ENGINE_CACHE_MISSING))
    if "compile_cold" in wanted:
        # The peer's cold compile: creating an ONNX Runtime session with all graph optimizations.
        log(f"{model}-b{batch}: onnxruntime session creation")
        proc, rep = run_ort(model_path, [], os.path.join(d, "ort-out"), 1,
                            argparse.Namespace(min_runs=0, max_runs=0, budget=0, timeout=opts.timeout),
                            extra=["--loads", str(max(3, opts.min_runs)), "--warmup", "0"])
        if rep is None:
            records.append(record("compile_cold", model, batch, "onnxruntime", "compile_cold", "ms", threads=1,
                                  status="error", reason=f"onnxruntime failed: {proc.last_error()}"))
        else:
            versions["onnxruntime"] = rep["version"]
            r = record("compile_cold", model, batch, "onnxruntime", "compile_cold", "ms", threads=1, status="ok",
                       note="InferenceSession.create from the file, graphOptimizationLevel 'all'")
            r.update(summary(rep["load_ms"]))
            records.append(r)
    if "hit_floor" in wanted:
        records.append(hit_floor(model, batch, model_path, opts))


def hit_floor(model, batch, model_path, opts):
    """The least a cache hit can cost: loading the model file and one pass over its weights.

    Reads the whole .onnx (weights are most of its bytes) from the page cache into a buffer
    allocated once: the kernel's copy touches every byte once. A hit also has to parse the
    file and refit, so this is a lower bound, not an estimate.
    """
    size = os.path.getsize(model_path)
    buf = bytearray(size)
    times = []
    with open(model_path, "rb", buffering=0) as f:
        f.readinto(buf)  # warm the page cache; a hit after a compile finds the file there
        for _ in range(max(10, opts.min_runs)):
            f.seek(0)
            t0 = time.perf_counter()
            view, got = memoryview(buf), 0
            while got < size:
                got += f.readinto(view[got:])
            times.append((time.perf_counter() - t0) * 1000.0)
    r = record("hit_floor", model, batch, "floor", "hit_floor", "ms", status="ok", bytes=size,
               note="read the .onnx from the page cache into memory: one pass over every weight byte")
    r.update(summary(times))
    r["gb_per_s"] = size / (r["median"] / 1000.0) / 1e9
    return r


# ---------------------------------------------------------------------------- reporting

def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:,.0f}"


def ratio_text(peer, kiln):
    """peer_median / kiln_median: above 1 kiln is faster."""
    if not (peer and kiln):
        return "-"
    r = peer / kiln
    return f"kiln {r:.2f}x faster" if r >= 1 else f"kiln {1 / r:.1f}x slower"


def find(records, **keys):
    for r in records:
        if all(r.get(k) == v for k, v in keys.items()):
            return r
    return None


def cell(r):
    if r is None:
        return "-"
    if r.get("median") is None:
        return r.get("status", "-")
    s = f"{fmt_ms(r['median'])} ({fmt_ms(r['min'])}–{fmt_ms(r['max'])}, n={r['runs']})"
    return s + " FAILED" if r.get("status") == "FAILED" else s


def markdown(result, title):
    recs = result["records"]
    m, v = result["machine"], result["versions"]
    lines = [f"# {title}", "",
             f"Machine: {m['cpu']} ({m['arch']}), {m['physical_cores']} cores / {m['logical_cpus']} threads "
             f"({m['usable_cpus']} usable), {m['memory_gib']} GiB; ISA: {', '.join(m['isa']) or '-'}"
             f"{'; virtualized' if m.get('virtualized') else ''}.", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", "",
             "Figures are medians over the runs (min–max, n = runs). Ratio = peer median / kiln median: "
             "above 1 kiln is faster. kiln's outputs are checked against onnxruntime (1 thread) on the same "
             f"inputs; FAILED means max abs err > {ABS_TOL:g} × max(1, max|ref|).", ""]
    lat = [r for r in recs if r["case"] == "latency" and r["metric"] == "latency"]
    peers = sorted({r["system"] for r in lat if r["system"] != "kiln"}, key=lambda s: (len(s), s))
    workloads = list(dict.fromkeys((r["model"], r["batch"]) for r in lat))
    if workloads:
        kb = find(lat, system="kiln", status="ok") or find(lat, system="kiln") or {}
        lines += [f"## latency (ms per batch; kiln backend {kb.get('backend', '-')}, 1 thread)", ""]
        head = ["model", "batch", "kiln"]
        for p in peers:
            t = find(lat, system=p)
            head += [f"{p} ({t.get('threads')}t)", "ratio"]
        head += ["max abs err", "max rel err", "check"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, batch in workloads:
            k = find(lat, model=model, batch=batch, system="kiln")
            if k and k.get("status") == "skipped" and all(
                    (find(lat, model=model, batch=batch, system=p) or {}).get("status") == "skipped" for p in peers):
                continue  # listed under "skipped"
            row = [model, str(batch), cell(k)]
            for p in peers:
                pr = find(lat, model=model, batch=batch, system=p)
                failed = k and k.get("status") == "FAILED"  # a wrong answer's speed never counts
                ratio = ratio_text(pr and pr.get("median"), k and k.get("median"))
                row += [cell(pr), "not counted" if failed else ratio]
            if k and "max_abs_err" in k:
                row += [f"{k['max_abs_err']:.2e}", f"{k['max_rel_err']:.2e}", k["status"]]
            else:
                row += ["-", "-", (k or {}).get("check_error") or (k or {}).get("status", "-")]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    tput = [r for r in recs if r["metric"] == "throughput"]
    if tput:
        lines += ["## throughput (samples/s, from the latency runs)", "",
                  "| model | batch | system | threads | median | min | max |", "|---|---|---|---|---|---|---|"]
        for r in tput:
            lines.append(f"| {r['model']} | {r['batch']} | {r['system']} | {r.get('threads')} | {r['median']:.3g} | "
                         f"{r['min']:.3g} | {r['max']:.3g} |")
        lines.append("")
    rss = [r for r in recs if r["case"] == "peak_rss" and r.get("median") is not None]
    if rss:
        systems = list(dict.fromkeys(r["system"] for r in rss))
        lines += ["## peak_rss (MiB, max RSS of the whole process; the peers' include node.js)", "",
                  "| model | batch | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
        for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in rss):
            cells = [find(rss, model=model, batch=batch, system=s) for s in systems]
            lines.append(f"| {model} | {batch} | " + " | ".join(f"{c['median']:.0f}" if c else "-" for c in cells)
                         + " |")
        lines.append("")
    other = [r for r in recs if r["case"] in ("compile_cold", "compile_save", "compile_hit", "hit_floor")
             and r.get("median") is not None]
    if other:
        lines += ["## compile and cache-hit floor (ms)", "", "| case | model | batch | system | median (min–max, n) |"
                  " note |", "|---|---|---|---|---|---|"]
        for r in other:
            note = r.get("note", "")
            if r["metric"] == "hit_floor":
                note += f" ({r['bytes'] / 1e6:.1f} MB at {r['gb_per_s']:.1f} GB/s)"
            lines.append(f"| {r['case']} | {r['model']} | {r['batch']} | {r['system']} | {cell(r)} | {note} |")
        lines.append("")
    skips = [r for r in recs if r.get("status") in ("skipped", "error")]
    if skips:
        lines += ["## skipped or failed to run", "", "| case | model | batch | system | why |", "|---|---|---|---|---|"]
        for r in skips:
            lines.append(f"| {r['case']} | {r['model']} | {r['batch']} | {r['system']} | {r['status']}: "
                         f"{r.get('reason', '')} |")
        lines.append("")
    return "\n".join(lines)


def plot(result, path):
    """Bar chart of peer median / kiln median per model and batch (log scale; above 1: kiln faster)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing: no plot (bench/install-peers installs it for /usr/bin/python3)")
        return None
    lat = [r for r in result["records"] if r["metric"] == "latency" and r.get("median")]
    kiln = {(r["model"], r["batch"]): r for r in lat if r["system"] == "kiln"}
    peers = sorted({r["system"] for r in lat if r["system"] != "kiln"}, key=lambda s: (len(s), s))
    labels = [k for k in kiln]
    if not labels or not peers:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels) + 2), 4))
    width = 0.8 / len(peers)
    for i, p in enumerate(peers):
        ratios = []
        for key in labels:
            pr = find(lat, model=key[0], batch=key[1], system=p)
            ok = pr and kiln[key].get("status") != "FAILED"  # no bar for a wrong answer
            ratios.append(pr["median"] / kiln[key]["median"] if ok else float("nan"))
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(labels))]
        threads = (find(lat, system=p) or {}).get("threads")
        ax.bar(xs, ratios, width, label=f"{p} ({threads} thread{'s' if threads != 1 else ''})")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{m}\nbatch {b}" + ("\nFAILED" if kiln[(m, b)].get("status") == "FAILED" else "")
                        for m, b in labels])
    ax.set_ylabel("peer median / kiln median\n(above 1: kiln faster)")
    ax.set_title(f"kiln ({next(iter(kiln.values())).get('backend')}) latency vs peers, "
                 f"{result['machine']['cpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO_DIR, "build"), help="kiln's build folder")
    ap.add_argument("--quick", action="store_true", help="batch 1 only, small models, fewer runs")
    ap.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--models", help="comma-separated zoo models for latency/peak_rss (default: the case list)")
    ap.add_argument("--batches", help="comma-separated batch sizes for --models (default 1,16; 1 with --quick)")
    ap.add_argument("--backend", default="auto", help="kiln backend: auto (fastest available), ref, cpu, ...")
    ap.add_argument("--budget", type=float, help="seconds of timed runs per system and workload (10; 2 quick)")
    ap.add_argument("--min-runs", type=int, help="at least this many timed runs (3; 2 quick)")
    ap.add_argument("--max-runs", type=int, help="at most this many timed runs (50; 10 quick)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before one process is killed")
    ap.add_argument("--results-dir", default=os.path.join(BENCH_DIR, "results"))
    ap.add_argument("--keep-work", action="store_true", help="keep the models, inputs and outputs")
    opts = ap.parse_args(argv)
    opts.budget = opts.budget if opts.budget is not None else (2.0 if opts.quick else 10.0)
    opts.min_runs = opts.min_runs if opts.min_runs is not None else (2 if opts.quick else 3)
    opts.max_runs = opts.max_runs if opts.max_runs is not None else (10 if opts.quick else 50)
    opts.cases = opts.cases.split(",") if opts.cases else list(CASES)
    for c in opts.cases:
        if c not in CASES:
            ap.error(f"unknown case '{c}' (cases: {', '.join(CASES)})")
    if opts.models:
        batches = [int(b) for b in (opts.batches or ("1" if opts.quick else "1,16")).split(",")]
        opts.workloads = [(m, b) for m in opts.models.split(",") for b in batches]
    else:
        opts.workloads = LATENCY_QUICK if opts.quick else LATENCY_FULL
        if opts.batches:
            keep = {int(b) for b in opts.batches.split(",")}
            opts.workloads = [w for w in opts.workloads if w[1] in keep]
    return opts


def main(argv):
    opts = parse_args(argv)
    kiln = Kiln(opts.build_dir, opts.timeout)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    versions = {"kiln": kiln.version(), "onnxruntime": None, "node": node,
                "python": sys.version.split()[0]}
    mach = machine.describe()
    ctx = {"cpus": mach["usable_cpus"] or 1}
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    records = []
    started = time.time()
    try:
        probe_model = os.path.join(work, "probe.onnx")
        probe_name = "resnet_tiny" if "resnet_tiny" in kiln.zoo else next(iter(kiln.zoo))
        subprocess.check_call([kiln.exe, "zoo", probe_name, "-o", probe_model], stdout=subprocess.DEVNULL)
        available = kiln.backends(probe_model)
        if opts.backend == "auto":
            # The fastest backend kiln has: the cpu backend once it exists, else ref.
            ctx["backend"] = "cpu" if "cpu" in available else available[0]
        elif opts.backend in available:
            ctx["backend"] = opts.backend
        else:
            sys.exit(f"bench: kiln has no backend '{opts.backend}' (available: {', '.join(available)})")
        if ctx["backend"] != "ref":
            log("note: kiln's thread count for a non-ref backend is recorded as 1; update the harness if it uses more")
        log(f"kiln {versions['kiln']} backend {ctx['backend']}; zoo: {', '.join(kiln.zoo)}; work dir {work}")
        if "latency" in opts.cases or "peak_rss" in opts.cases:
            for model, batch in opts.workloads:
                latency_workload(kiln, ctx, model, batch, work, opts, records, versions)
        compile_cases(kiln, ctx, work, opts, records, versions)
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if versions["onnxruntime"] is None:
        versions["onnxruntime"] = "not run"

    result = {"machine": mach, "versions": versions,
              "run": {"date": datetime.date.today().isoformat(), "quick": opts.quick, "cases": opts.cases,
                      "budget_s": opts.budget, "min_runs": opts.min_runs, "max_runs": opts.max_runs,
                      "input_seed": INPUT_SEED, "weight_seed": WEIGHT_SEED, "seq_len": SEQ_LEN,
                      "duration_s": round(time.time() - started, 1)},
              "records": records}
    os.makedirs(opts.results_dir, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{mach['host']}" + ("-quick" if opts.quick else "")
    base = os.path.join(opts.results_dir, stem)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    table = markdown(result, f"kiln benchmark {stem}")
    with open(base + ".md", "w") as f:
        f.write(table + "\n")
    png = plot(result, base + "-latency.png")
    print(table)
    log(f"wrote {base}.json, {base}.md" + (f", {png}" if png else ""))
    failed = [r for r in records if r.get("status") == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
