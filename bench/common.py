"""Shared pieces of the bench harness: processes, statistics, kiln's CLI, inputs, records, checks."""

import array
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import npy

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
ORT_RUNNER = os.path.join(BENCH_DIR, "peers", "ort_runner.mjs")

SEQ_LEN = 128  # every symbolic dim other than the batch (BERT's sequence length)
WEIGHT_SEED = 1  # the model every system runs
OTHER_WEIGHT_SEED = 2  # same architecture, other weights: what a cache hit refits
INPUT_SEED = 2024
# Pass/fail bounds of the cross-check, per kiln precision: max abs err <= TOL * max(1, max|ref|).
# A fast wrong answer must never count as a win. bf16 keeps 8 mantissa bits (about 2-3
# significant digits) in the matmul/conv inputs, accumulating in fp32: 3e-2 of the output
# scale is a loose, documented bound for that, still far below a wrong answer's error.
TOLERANCES = {"fp32": 1e-3, "bf16": 3e-2}
PRECISION_FLAGS = {"fp32": "fp32", "bf16": "fp32,bf16"}  # kiln's --precision for each row


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes

class Proc:
    def __init__(self, rc, out, err, wall_s, maxrss_mib, cpu_s):
        self.rc, self.out, self.err, self.wall_s, self.maxrss_mib = rc, out, err, wall_s, maxrss_mib
        self.cpu_s = cpu_s  # user + system CPU time of the process: cpu_s / wall_s ~ threads busy

    def cpu_per_wall(self):
        return round(self.cpu_s / self.wall_s, 2) if self.wall_s > 0 else None

    def last_error(self):
        lines = [l.strip() for l in self.err.strip().splitlines() if l.strip() and "Run with --help" not in l]
        if lines:
            return lines[-1][:300]
        try:  # with --json, kiln prints its error as {"error": {"kind", "message"}} on stdout
            return json_from(self).get("error", {}).get("message", "")[:300] or f"exit code {self.rc}"
        except (ValueError, AttributeError):
            return f"exit code {self.rc}"


def run_measured(cmd, timeout_s):
    """Runs cmd; returns its output, wall time, its own peak RSS and CPU time, from os.wait4's rusage.

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
        return Proc(rc, out.read(), err.read(), wall, usage.ru_maxrss / 1024.0,  # KiB on Linux
                    usage.ru_utime + usage.ru_stime)


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
    if not one_run_ms:
        return opts.min_runs
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

    def zoo_model(self, name, path, seed, batch):
        """Writes zoo model `name` (batch: an int or 'symbolic'); returns None or why it failed."""
        proc = self.call("zoo", name, "-o", path, "--seed", str(seed), "--batch", str(batch), "--json")
        return None if proc.rc == 0 else f"kiln zoo failed: {proc.last_error()}"

    def version(self):
        """`git describe` of the sources: what the binary was built from only if it is not stale."""
        try:
            return subprocess.check_output(["git", "-C", REPO_DIR, "describe", "--always", "--dirty", "--tags"],
                                           text=True, stderr=subprocess.DEVNULL).strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    def binary_info(self):
        """When the binary was linked, and the tracked sources changed since (then the binary is stale:
        the results belong to older sources than `git describe` says)."""
        built = os.path.getmtime(self.exe)
        info = {"built": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(built)), "stale": False}
        try:
            files = subprocess.check_output(["git", "-C", REPO_DIR, "ls-files", "src", "include", "tools", "cmake",
                                             "CMakeLists.txt"], text=True, stderr=subprocess.DEVNULL).split()
        except (OSError, subprocess.CalledProcessError):
            return info
        newer = [f for f in files if os.path.getmtime(os.path.join(REPO_DIR, f)) > built] \
            if all(os.path.exists(os.path.join(REPO_DIR, f)) for f in files) else []
        if newer:
            info.update(stale=True, newer_sources=newer[:5], newer_count=len(newer))
        return info


def engine_of(compile_report):
    """The (first) engine record of a compile report: kiln compiles a zoo model into one engine."""
    engines = (compile_report or {}).get("engines") or [{}]
    return engines[0]


# ---------------------------------------------------------------------------- inputs

DTYPE_RE = re.compile(r"^(\w+)\[(.*)\]$")


def parse_type(text):
    """'float32[N,3,224,224]' → ('float32', ['N', 3, 224, 224]) (symbolic dims stay strings)."""
    m = DTYPE_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse input type '{text}'")
    dims = [d.strip() for d in m.group(2).split(",") if d.strip()]
    return m.group(1), [int(d) if d.lstrip("-").isdigit() else d for d in dims]


def input_shapes(inspect, batch):
    """[(name, dtype, shape)]: symbolic dims are the batch where leading, else SEQ_LEN."""
    shapes = []
    for spec in inspect.get("inputs", []):
        dtype, dims = parse_type(spec["type"])
        shape = [d if isinstance(d, int) and d >= 0 else (batch if i == 0 else SEQ_LEN) for i, d in enumerate(dims)]
        shapes.append((spec["name"], dtype, shape))
    return shapes


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
    for name, dtype, shape in input_shapes(inspect, batch):
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


def input_args(inputs):
    return [a for name, path, _ in inputs for a in ("--input", f"{name}={path}")]


# ---------------------------------------------------------------------------- records and checks

def record(case, model, batch, system, metric, unit, **extra):
    r = {"case": case, "model": model, "batch": batch, "precision": "fp32", "system": system, "metric": metric,
         "unit": unit, "median": None, "min": None, "max": None, "runs": 0}
    r.update(extra)
    return r


def skipped(case, model, batch, system, metric, unit, reason, **extra):
    return record(case, model, batch, system, metric, unit, status="skipped", reason=reason, **extra)


def cross_check(outputs, reference_outputs, tolerance):
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
    worst["tolerance"] = tolerance
    worst["passed"] = worst["max_abs_err"] <= tolerance * max(1.0, worst["ref_max_abs"])
    return worst


def apply_check(rec, check, against, judge=True):
    """Stores the errors on rec; `judge`: mark it FAILED when out of bounds (kiln's records only:
    the peer is the reference, so a disagreement is kiln's failure, not the peer's)."""
    rec["checked_against"] = against
    if "error" in check:
        rec["check_error"] = check["error"]
    else:
        for k in ("max_abs_err", "max_rel_err", "ref_max_abs"):
            rec[k] = check[k]
        if judge:
            rec["tolerance"] = check["tolerance"]
    if judge and not check.get("passed"):
        rec["status"] = "FAILED"


def run_ort(model_path, inputs, out_dir, threads, opts, extra=()):
    """The ONNX Runtime peer on `inputs`; returns (proc, its JSON report or None)."""
    cmd = ["node", ORT_RUNNER, "--model", model_path, "--threads", str(threads), "--output-dir", out_dir,
           "--warmup", "1", "--min-runs", str(opts.min_runs), "--max-runs", str(opts.max_runs),
           "--budget-s", str(opts.budget), *extra]
    for name, path, _ in inputs:
        cmd += ["--input", f"{name}={path}"]
    return with_report(run_measured(cmd, opts.timeout))


def with_report(proc):
    """(proc, its --json report), or (proc, None) when it failed or printed no JSON."""
    if proc.rc != 0:
        return proc, None
    try:
        return proc, json_from(proc)
    except ValueError:
        return proc, None
