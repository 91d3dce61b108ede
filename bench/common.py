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


def compare_output(path, reference_path):
    """Element-wise errors of one output against the reference's, each relative to the output's scale.

    scale = max |ref| over the output's finite elements. Returns max_abs_err, max_rel_err (per
    element, |k - r| / max(|r|, 1e-6 scale)), ref_max_abs, and the distribution of |k - r| / scale:
    its max, mean and 99th percentile, so a user can judge a precision trade by more than its
    worst element. Or {"error": ...} on a shape mismatch or non-finite values the reference lacks.
    """
    _, shape, got = npy.read(path)
    _, ref_shape, ref = npy.read(reference_path)
    if shape != ref_shape:
        return {"error": f"shape {shape} vs reference {ref_shape}"}
    scale = max((abs(y) for y in ref if math.isfinite(y)), default=0.0)
    floor = max(1e-6 * scale, 1e-30)
    diffs = []
    max_rel = 0.0
    nonfinite = 0
    for x, y in zip(got, ref):
        d = abs(x - y)
        if not math.isfinite(d):
            if not x == y:  # equal infinities agree; NaN or a mismatched inf does not
                nonfinite += 1
            continue
        diffs.append(d)
        max_rel = max(max_rel, d / max(abs(y), floor))
    if nonfinite:
        return {"error": f"{nonfinite} non-finite values where the reference differs"}
    diffs.sort()
    over = 1.0 / scale if scale > 0 else 0.0  # an all-zero reference: the absolute errors speak
    n = len(diffs)
    return {"elements": n, "max_abs_err": diffs[-1] if n else 0.0, "max_rel_err": max_rel, "ref_max_abs": scale,
            "max_err_over_scale": (diffs[-1] if n else 0.0) * over,
            "mean_err_over_scale": (math.fsum(diffs) / n if n else 0.0) * over,
            "p99_err_over_scale": (diffs[min(n - 1, math.ceil(0.99 * n) - 1)] if n else 0.0) * over}


WORST_KEYS = ("max_abs_err", "max_rel_err", "ref_max_abs", "max_err_over_scale", "mean_err_over_scale",
              "p99_err_over_scale")


def cross_check(outputs, reference_outputs, tolerance):
    """`outputs` ({name: .npy file}) against `reference_outputs` (the peer's), output by output.

    The loop is over the reference's outputs: one missing from `outputs` (or not written) is
    an error, as is one the reference does not have, a shape mismatch or a non-finite value
    the reference lacks, so a row with fewer outputs can never pass with error 0. Each
    output must satisfy max |k - r| <= tolerance * max(1, max |r|) on its own scale. Returns
    the worst of each figure over the outputs, `per_output`, and `passed`, or {"error": ...}.
    """
    if not reference_outputs:
        return {"error": "the reference wrote no outputs"}
    missing = [name for name in reference_outputs if name not in outputs]
    if missing:
        return {"error": "missing output(s) " + ", ".join(f"'{n}'" for n in missing) +
                f" (has {', '.join(repr(n) for n in outputs) or 'none'})"}
    extra = [name for name in outputs if name not in reference_outputs]
    if extra:
        return {"error": "output(s) " + ", ".join(f"'{n}'" for n in extra) + " not in the reference"}
    worst = dict.fromkeys(WORST_KEYS, 0.0)
    per_output = {}
    passed = True
    for name, ref in reference_outputs.items():
        c = compare_output(outputs[name], ref)
        if "error" in c:
            return {"error": f"output '{name}': {c['error']}"}
        c["passed"] = c["max_abs_err"] <= tolerance * max(1.0, c["ref_max_abs"])
        passed = passed and c["passed"]
        per_output[name] = c
        for k in WORST_KEYS:
            worst[k] = max(worst[k], c[k])
    worst.update(tolerance=tolerance, passed=passed, per_output=per_output)
    return worst


def worst_check(checks):
    """The worst of several cross-checks (e.g. one per round): an error first, then a failure,
    then the largest max abs error."""
    return max(checks, key=lambda c: ("error" in c, not c.get("passed"), c.get("max_abs_err", 0.0)))


def apply_check(rec, check, against, judge=True):
    """Stores the errors on rec; `judge`: mark it FAILED when out of bounds (kiln's records only:
    the peer is the reference, so a disagreement is kiln's failure, not the peer's)."""
    rec["checked_against"] = against
    if "error" in check:
        rec["check_error"] = check["error"]
    else:
        for k in WORST_KEYS + ("per_output",):
            rec[k] = check[k]
        if judge:
            rec["tolerance"] = check["tolerance"]
    if judge and not check.get("passed"):
        rec["status"] = "FAILED"


def run_ort(model_path, inputs, out_dir, threads, opts, extra=()):
    """The ONNX Runtime peer on `inputs`; returns (proc, its JSON report or None)."""
    cmd = ["node", ORT_RUNNER, "--model", model_path, "--threads", str(threads), "--output-dir", out_dir,
           "--warmup", str(getattr(opts, "warmup", 1)), "--min-runs", str(opts.min_runs),
           "--max-runs", str(opts.max_runs),
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
