"""The bench cases: latency (+ peak_rss), refit_overhead, compile_cold/save/hit and hit_floor.

Every kiln process gets a private engine cache (`--cache-dir` under the run's temp folder)
or none (`--no-cache`), and a private timing cache or none (`--timing-cache -`): the
user's default caches are never read or written.
"""

import argparse
import math
import os
import statistics
import time

from common import (OTHER_WEIGHT_SEED, PRECISION_FLAGS, TOLERANCES, WEIGHT_SEED, apply_check, cross_check,
                    engine_of, input_args, input_shapes, json_from, log, make_inputs, planned_runs, record, run_ort,
                    skipped, summary, with_report, worst_check)


def ort_systems(ctx):
    """(system, threads) of the ONNX Runtime rows: 1 thread and all usable CPUs, or ctx["threads"]."""
    counts = sorted(set(ctx.get("threads") or [1, ctx["cpus"]]))
    return [("onnxruntime" if t == 1 else f"onnxruntime-{t}t", t) for t in counts]


def kiln_configs(ctx, opts):
    """(system, precision, threads, backend) of the kiln rows: every precision at every ORT thread count,
    then the reference backend (1 thread) when asked for."""
    configs = [("kiln", p, t, "cpu") for p in opts.precisions for _, t in ort_systems(ctx)]
    if opts.with_ref:
        configs.append(("kiln-ref", "fp32", 1, "ref"))
    return configs


def kiln_run(kiln, model_path, inputs, out_dir, precision, threads, repeat, backend="cpu", cache=()):
    """`kiln run` with `repeat` passes in one process: one compile, then the runs.
    Returns (proc, JSON report or None)."""
    args = ["run", model_path, "--backend", backend, "--json", "--repeat", str(repeat), "--output-dir", out_dir,
            *input_args(inputs)]
    if backend == "cpu":
        args += ["--precision", PRECISION_FLAGS[precision], "--threads", str(threads), *cache]
    return with_report(kiln.call(*args))


def outputs_of(report):
    return {o["name"]: o["file"] for o in report.get("outputs", []) if "file" in o}


def round_check_summary(index, check):
    """One round's cross-check, short: which round, passed or why not, its worst errors."""
    s = {"round": index + 1, "passed": bool(check.get("passed"))}
    if "error" in check:
        s["error"] = check["error"]
    else:
        s.update(max_abs_err=check["max_abs_err"], max_err_over_scale=check["max_err_over_scale"])
    return s


def prepare_workload(kiln, model, batch, d):
    """Writes the zoo model (seed 1, static batch), inspects it and writes its inputs.
    Returns (model_path, inspect, inputs) or a reason string."""
    os.makedirs(d, exist_ok=True)
    model_path = os.path.join(d, "model.onnx")
    why = kiln.zoo_model(model, model_path, WEIGHT_SEED, batch)
    if why:
        return why
    return inspect_workload(kiln, model, model_path, batch, d)


def inspect_workload(kiln, model, model_path, batch, d):
    """Inspects the model file and writes seeded inputs for it into `d`.
    Returns (model_path, inspect, inputs) or a reason string."""
    proc = kiln.call("inspect", model_path, "--json")
    if proc.rc != 0:
        return f"kiln inspect failed: {proc.last_error()}"
    inspect = json_from(proc)
    notes = []
    inputs = make_inputs(inspect, batch, d, notes)
    for n in notes:
        log(f"{model}-b{batch}: {n}")
    return model_path, inspect, inputs


# ---------------------------------------------------------------------------- latency and peak_rss

def latency_workload(kiln, ctx, model, batch, work, opts, records, versions, prepare=None):
    """Latency (and peak RSS) of one zoo model at one batch size: every kiln row vs ONNX Runtime.
    `prepare`: another source of the model than the zoo, as prepare_workload (the corpus case)."""
    want_latency, want_rss = "latency" in opts.cases, "peak_rss" in opts.cases
    peers = ort_systems(ctx)
    configs = kiln_configs(ctx, opts)
    tag = f"{model}-b{batch}"
    load = round(os.getloadavg()[0], 2)  # the 1-minute load average as the workload starts: noise from others

    def rec_pair(system, threads, precision="fp32", **extra):
        return (record("latency", model, batch, system, "latency", "ms", threads=threads, precision=precision,
                       loadavg=load, **extra),
                record("peak_rss", model, batch, system, "peak_rss", "MiB", threads=threads, precision=precision,
                       loadavg=load, **extra))

    def skip_all(reason):
        rows = [(s, t, p) for s, p, t, _ in configs] + [(s, t, "fp32") for s, t in peers]
        for system, threads, precision in rows:
            lat, rss = rec_pair(system, threads, precision, status="skipped", reason=reason)
            if want_latency:
                records.append(lat)
            if want_rss:
                records.append(rss)

    if prepare is None and model not in kiln.zoo:
        skip_all(f"'{model}' is not in kiln's zoo yet (kiln zoo --list)")
        return
    d = os.path.join(work, tag)
    prepared = (prepare or prepare_workload)(kiln, model, batch, d)
    if isinstance(prepared, str):
        skip_all(prepared)
        return
    model_path, inspect, inputs = prepared

    # Rounds: every row is timed once per round, its budget split between the rounds, and the
    # rounds follow each other. A burst of load from elsewhere (this is often a shared VM) then
    # slows every system in the window it lasts, not only whichever ran then, and each row's
    # median is taken over the runs of all rounds. Within a round the peers go first: ONNX
    # Runtime at 1 thread gives the reference outputs, and each peer's first-round median
    # sizes the kiln rows at its thread count (their budget is the same).
    #
    # kiln: one process per row and round, with the row's own engine cache (so no row is served
    # another row's engine: the plan stores its thread count and the engine key does not hash
    # it). The first round builds the engine; later rounds load it from that cache, as a user's
    # next process would, so every round times the same engine. `--repeat N+W`: one compile,
    # then N+W passes; the first W (--warmup) are dropped, as the peer's W warmups are. The
    # compile is reported separately (compile_ms, first round), never in the latency.
    rounds = max(1, opts.rounds)
    warmup = getattr(opts, "warmup", 1)
    per_round = argparse.Namespace(**vars(opts))
    per_round.budget = opts.budget / rounds
    per_round.min_runs = max(1, math.ceil(opts.min_runs / rounds))
    per_round.max_runs = max(1, math.ceil(opts.max_runs / rounds))
    unsupported = inspect.get("unsupported") or []

    peer_rows = [{"system": s, "threads": t, "ms": [], "round_medians": [], "rss": 0.0} for s, t in peers]
    kiln_rows = [{"system": s, "precision": p, "threads": t, "backend": b, "ms": [], "round_medians": [], "rss": 0.0}
                 for s, p, t, b in configs]
    peer_ms = {}
    for r in range(rounds):
        of = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
        for row in peer_rows:
            system, threads = row["system"], row["threads"]
            if "failed" in row:
                continue
            log(f"{tag}: {system} ({threads} thread{'s' if threads > 1 else ''}){of}")
            proc, rep = run_ort(model_path, inputs, os.path.join(d, f"{system}-out-{r}"), threads, per_round)
            if rep is None:
                row["failed"] = f"onnxruntime failed: {proc.last_error()}"
                continue
            versions["onnxruntime"] = rep["version"]
            if r == 0:
                row["outs"] = {o["name"]: o["file"] for o in rep["outputs"] if "file" in o}
                row["session_create_ms"] = rep["load_ms"][0]
                peer_ms.setdefault(threads, statistics.median(rep["latencies_ms"]))
            row["ms"] += rep["latencies_ms"]
            row["round_medians"].append(statistics.median(rep["latencies_ms"]))
            row["rss"] = max(row["rss"], proc.maxrss_mib)

        for row in kiln_rows:
            system, precision, threads, backend = row["system"], row["precision"], row["threads"], row["backend"]
            if "failed" in row or "skipped" in row:
                continue
            label = f"{system} {precision} {threads}t"
            if unsupported and backend == "ref":
                u = unsupported[0]
                row["skipped"] = f"kiln's ref backend cannot run it: {u.get('op')} ({u.get('reason')})"
                continue
            n = per_round.min_runs if backend == "ref" else planned_runs(peer_ms.get(threads), per_round)
            compiling = "compile + " if backend == "cpu" and r == 0 else ""
            log(f"{tag}: {label}: {compiling}{n} runs (+{warmup} warmup){of}")
            cache = ["--cache-dir", os.path.join(work, "cache", f"{precision}-{threads}t")]
            proc, rep = kiln_run(kiln, model_path, inputs, os.path.join(d, f"{system}-{precision}-{threads}t-out-{r}"),
                                 precision, threads, n + warmup, backend, cache)
            if rep is None:
                row["failed"] = f"kiln run failed: {proc.last_error()}"
                continue
            t = rep["timings_ms"]
            # Every round's outputs are checked, not only the first's: later rounds time an
            # engine loaded from the cache and refitted, and give most of the timings.
            row.setdefault("outs_by_round", []).append(outputs_of(rep))
            if r == 0:
                row["outs"] = row["outs_by_round"][0]
                row["import_ms"], row["prepare_ms"] = t["import"], t["prepare"]
                if backend == "cpu":
                    c = rep.get("compile", {})
                    row["compile_ms"], row["engine_status"] = c.get("compile_ms"), engine_of(c).get("status")
            elif backend == "cpu":
                row.setdefault("later_engine_status", []).append(engine_of(rep.get("compile", {})).get("status"))
            row["ms"] += t["run"][warmup:]
            row["round_medians"].append(statistics.median(t["run"][warmup:]))
            row["rss"] = max(row["rss"], proc.maxrss_mib)
            row["cpu_per_wall"] = proc.cpu_per_wall()

    pairs = []  # (latency record, peak_rss record, outputs)
    reference = None
    for row in peer_rows:
        system, threads = row["system"], row["threads"]
        if not row["ms"]:
            pairs.append(rec_pair(system, threads, status="error", reason=row.get("failed")) + ({},))
            continue
        lat, rss = rec_pair(system, threads, status="ok", session_create_ms=row["session_create_ms"],
                            rounds=len(row["round_medians"]), round_medians=row["round_medians"])
        if "failed" in row:
            lat["note"] = f"a later round failed: {row['failed']}"
        lat.update(summary(row["ms"]))
        rss.update(status="ok", median=row["rss"], min=row["rss"], max=row["rss"], runs=1,
                   note="includes the node.js runtime; the largest of the rounds")
        if reference is None:  # the fewest threads: 1 unless ctx["threads"] leaves it out
            reference = (system, row["outs"])
        pairs.append((lat, rss, row["outs"]))

    kiln_pairs = []
    for row in kiln_rows:
        system, precision, threads, backend = row["system"], row["precision"], row["threads"], row["backend"]
        extra = {"backend": backend}
        if backend == "cpu":
            extra["precision_flag"] = PRECISION_FLAGS[precision]
        if "skipped" in row:
            kiln_pairs.append(rec_pair(system, threads, precision, status="skipped", reason=row["skipped"], **extra)
                              + ({},))
            continue
        if not row["ms"]:
            kiln_pairs.append(rec_pair(system, threads, precision, status="error", reason=row["failed"], **extra)
                              + ({},))
            continue
        if backend == "cpu":
            extra.update(compile_ms=row["compile_ms"], engine_status=row["engine_status"])
            if row.get("later_engine_status"):
                extra["later_rounds_engine_status"] = row["later_engine_status"]
        lat, rss = rec_pair(system, threads, precision, status="ok", import_ms=row["import_ms"],
                            prepare_ms=row["prepare_ms"], cpu_per_wall=row["cpu_per_wall"],
                            rounds=len(row["round_medians"]), round_medians=row["round_medians"], **extra)
        if "failed" in row:
            lat["status"], lat["reason"] = "error", f"a later round failed: {row['failed']}"
        lat.update(summary(row["ms"]))
        rss.update(median=row["rss"], min=row["rss"], max=row["rss"], runs=1,
                   note="the whole kiln run process, compile included; the largest of the rounds")
        outs = row["outs"]
        if lat["status"] == "ok":
            if reference is None:
                lat["status"] = "unchecked"
            else:
                checks = [cross_check(o, reference[1], TOLERANCES[precision]) for o in row["outs_by_round"]]
                lat["round_checks"] = [round_check_summary(i, c) for i, c in enumerate(checks)]
                apply_check(lat, worst_check(checks), reference[0])
        compiled = f" (compile {extra['compile_ms']:.0f} ms, {extra['engine_status']})" if "compile_ms" in extra else ""
        log(f"{tag}: {system} {precision} {threads}t: median {lat['median']:.1f} ms over {lat['rounds']} round(s)"
            f"{compiled}; max abs err {lat.get('max_abs_err')} (all rounds) → {lat['status']}"
            + (f" ({lat['check_error']})" if "check_error" in lat else ""))
        kiln_pairs.append((lat, rss, outs))

    # The peers' errors against kiln's first row, for information (they are not judged).
    first = next((p for p in kiln_pairs if p[2] and p[0]["system"] == "kiln"), None)
    for lat, _, outs in pairs:
        if first and outs:
            apply_check(lat, cross_check(outs, first[2], TOLERANCES["fp32"]), "kiln", judge=False)

    for lat, rss, _ in kiln_pairs + pairs:
        if want_latency:
            records.append(lat)
            if batch > 1 and lat.get("median"):
                # Throughput from the same runs: samples/s; min comes from the slowest run.
                records.append(record("latency", model, batch, lat["system"], "throughput", "samples/s",
                                      threads=lat.get("threads"), precision=lat.get("precision"),
                                      backend=lat.get("backend"), status=lat["status"],
                                      median=batch * 1000.0 / lat["median"], min=batch * 1000.0 / lat["max"],
                                      max=batch * 1000.0 / lat["min"], runs=lat["runs"]))
        if want_rss:
            records.append(rss)


# ---------------------------------------------------------------------------- refit_overhead

def refit_overhead(kiln, ctx, work, opts, records):
    """Latency of an engine served from the cache after a refit vs a freshly built one.

    Same model (seed 1), same batch, same inputs, fp32, at 1 thread and at all cores. fresh:
    `kiln run --no-cache`. refitted: the engine is built and saved from the seed-2 model
    (`kiln build --no-reuse` into an empty cache), then `kiln run` of the seed-1 model hits
    it and refits seed 1's weights. Rounds alternate the order; every process's outputs are
    cross-checked against ONNX Runtime. cpu_per_wall (process CPU time / wall time) shows
    how many threads each side really kept busy.
    """
    model, batch = opts.refit_workload
    thread_counts = [t for _, t in ort_systems(ctx)]
    variants = [("fresh", "built_uncached"), ("cache_hit_refit", "hit")]

    def fail(status, reason, threads=thread_counts):
        for t in threads:
            for v, _ in variants:
                records.append(record("refit_overhead", model, batch, "kiln", "latency", "ms", threads=t, engine=v,
                                      status=status, reason=reason, backend="cpu"))

    if model not in kiln.zoo:
        return fail("skipped", f"'{model}' is not in kiln's zoo")
    d = os.path.join(work, f"refit-{model}-b{batch}")
    prepared = prepare_workload(kiln, model, batch, d)
    if isinstance(prepared, str):
        return fail("skipped", prepared)
    model_path, inspect, inputs = prepared
    other = os.path.join(d, "model-seed2.onnx")
    why = kiln.zoo_model(model, other, OTHER_WEIGHT_SEED, batch)
    if why:
        return fail("skipped", why)
    log(f"refit_overhead {model}-b{batch}: onnxruntime reference outputs")
    once = argparse.Namespace(min_runs=1, max_runs=1, budget=0, timeout=opts.timeout)
    proc, rep = run_ort(model_path, inputs, os.path.join(d, "ort-out"), 1, once)
    if rep is None:
        return fail("error", f"onnxruntime failed: {proc.last_error()}")
    reference = {o["name"]: o["file"] for o in rep["outputs"] if "file" in o}
    n = planned_runs(rep["latencies_ms"][0], argparse.Namespace(
        budget=opts.budget / opts.refit_rounds, min_runs=opts.min_runs, max_runs=opts.max_runs))
    shapes = [a for name, _, shape in input_shapes(inspect, batch)
              for a in ("--shape", f"{name}={'x'.join(map(str, shape))}")]
    for threads in thread_counts:
        tag = f"refit_overhead {model}-b{batch} {threads}t"
        runs = {v: [] for v, _ in variants}
        info = {v: {"compile_ms": [], "cpu_per_wall": [], "checks": []} for v, _ in variants}
        error = None
        for r in range(opts.refit_rounds):
            for v, want in (variants if r % 2 == 0 else variants[::-1]):
                cache = ["--timing-cache", "-"]
                if v == "fresh":
                    cache.append("--no-cache")
                else:
                    cache += ["--cache-dir", os.path.join(work, "refit-cache", f"{threads}t-{r}")]
                    built = kiln.call("build", other, *shapes, "--threads", str(threads), "--no-reuse", "--json",
                                      *cache)
                    status = engine_of(json_from(built)).get("status") if built.rc == 0 else None
                    if status != "miss":
                        error = f"saving the seed-2 engine: {built.last_error() if built.rc else status}"
                        break
                log(f"{tag} round {r + 1}: {v}, {n} runs (+1 warmup)")
                proc, rep = kiln_run(kiln, model_path, inputs, os.path.join(d, f"{v}-{threads}t-{r}"), "fp32",
                                     threads, n + 1, cache=cache)
                if rep is None:
                    error = f"kiln run ({v}) failed: {proc.last_error()}"
                    break
                engine = engine_of(rep.get("compile"))
                if engine.get("status") != want:
                    error = f"{v}: engine status {engine.get('status')}, expected {want} ({engine.get('reason', '')})"
                    break
                runs[v] += rep["timings_ms"]["run"][1:]
                info[v]["compile_ms"].append(round(rep["compile"]["compile_ms"], 1))
                info[v]["cpu_per_wall"].append(proc.cpu_per_wall())
                info[v]["checks"].append(cross_check(outputs_of(rep), reference, TOLERANCES["fp32"]))
            if error:
                break
        if error:
            fail("error", error, [threads])
            continue
        recs = {}
        for v, want in variants:
            rec = record("refit_overhead", model, batch, "kiln", "latency", "ms", threads=threads, engine=v,
                         backend="cpu", status="ok", engine_status=want, rounds=opts.refit_rounds, **info[v])
            del rec["checks"]
            rec.update(summary(runs[v]))
            rec["round_checks"] = [round_check_summary(i, c) for i, c in enumerate(info[v]["checks"])]
            apply_check(rec, worst_check(info[v]["checks"]), "onnxruntime")
            recs[v] = rec
            records.append(rec)
        ratio = recs["cache_hit_refit"]["median"] / recs["fresh"]["median"]
        recs["cache_hit_refit"]["refit_over_fresh"] = ratio
        log(f"{tag}: fresh {recs['fresh']['median']:.2f} ms, cache hit + refit "
            f"{recs['cache_hit_refit']['median']:.2f} ms (ratio {ratio:.3f}; cpu/wall "
            f"{info['fresh']['cpu_per_wall']} vs {info['cache_hit_refit']['cpu_per_wall']})")


# ---------------------------------------------------------------------------- compile cases

def compile_shape_args(inspect, batch, dynamic):
    """`--shape` per input; dynamic: `--min/--opt/--max` with batch 1 / batch / 2 x batch, as the tutorial."""
    args = []
    for name, _, shape in input_shapes(inspect, batch):
        dims = lambda b: "x".join(map(str, [b] + shape[1:]))  # noqa: E731
        if dynamic:
            args += ["--min", f"{name}={dims(1)}", "--opt", f"{name}={dims(batch)}",
                     "--max", f"{name}={dims(2 * batch)}"]
        else:
            args += ["--shape", f"{name}={dims(batch)}"]
    return args


def kiln_build(kiln, model_path, args, want):
    """One `kiln build --json`; returns (its report, None) or (None, why it is not `want`)."""
    proc = kiln.call("build", model_path, *args, "--json")
    if proc.rc != 0:
        return None, f"kiln build failed: {proc.last_error()}"
    rep = json_from(proc)
    engine = engine_of(rep)
    if engine.get("status") != want:
        return None, f"engine status {engine.get('status')}, expected {want} ({engine.get('reason', '')})"
    rep["wall_ms"] = proc.wall_s * 1000.0
    return rep, None


def compile_cases(kiln, ctx, work, opts, records, versions):
    """compile_cold / compile_save / compile_hit (+ the ONNX Runtime session) and hit_floor, as the tutorial."""
    wanted = [c for c in ("compile_cold", "compile_save", "compile_hit", "hit_floor", "first_output")
              if c in opts.cases]
    for model, batch, dynamic in opts.compile_workloads if wanted else []:
        compile_workload(kiln, ctx, model, batch, dynamic, work, opts, records, versions, wanted)


def compile_workload(kiln, ctx, model, batch, dynamic, work, opts, records, versions, wanted):
    tag = f"{model}-b{batch}"
    kiln_cases = [c for c in ("compile_cold", "compile_save", "compile_hit") if c in wanted]
    threads = ctx["cpus"]  # kiln build's default --threads 0: all cores

    def fail(status, reason, cases=wanted):
        for c in cases:
            system = "floor" if c == "hit_floor" else "kiln"
            records.append(record(c, model, batch, system, c, "ms", threads=threads, status=status, reason=reason))

    if model not in kiln.zoo:
        return fail("skipped", f"'{model}' is not in kiln's zoo")
    d = os.path.join(work, f"compile-{tag}")
    os.makedirs(d, exist_ok=True)
    m1, m2 = os.path.join(d, "model.onnx"), os.path.join(d, "model-seed2.onnx")
    why = kiln.zoo_model(model, m1, WEIGHT_SEED, "symbolic") or kiln.zoo_model(model, m2, OTHER_WEIGHT_SEED, "symbolic")
    if why:
        return fail("skipped", why)
    proc = kiln.call("inspect", m1, "--json")
    if proc.rc != 0:
        return fail("skipped", f"kiln inspect failed: {proc.last_error()}")
    inspect = json_from(proc)
    shape_args = compile_shape_args(inspect, batch, dynamic)
    # A fresh (no) timing cache every time: every build times its tactics, as a first build does.
    common = [*shape_args, "--timing-cache", "-"]
    note = " ".join(shape_args)

    reps = {"compile_cold": [], "compile_save": [], "compile_hit": []}
    # A hit needs a saved engine; hit_floor compares with the hits; first_output runs from the
    # engine the first round saved.
    hit = "compile_hit" in wanted or "hit_floor" in wanted or "first_output" in wanted
    needed = {c for c, on in (("compile_cold", "compile_cold" in wanted),
                              ("compile_save", hit or "compile_save" in wanted), ("compile_hit", hit)) if on}
    hits_per_round = math.ceil(max(opts.compile_runs, opts.hit_runs) / opts.compile_runs)
    error = None
    for r in range(opts.compile_runs):
        steps = [("compile_cold", m1, ["--no-cache"], "built_uncached", 1),
                 ("compile_save", m1, ["--no-reuse", "--cache-dir", os.path.join(d, f"cache-{r}")], "miss", 1),
                 ("compile_hit", m2, ["--cache-dir", os.path.join(d, f"cache-{r}")], "hit", hits_per_round)]
        for case, path, extra, want, count in steps:
            if case not in needed:
                continue
            for _ in range(count):
                t0 = time.monotonic()
                rep, error = kiln_build(kiln, path, common + extra, want)
                if error:
                    error = f"{case}: {error}"
                    break
                reps[case].append(rep)
                log(f"{tag} round {r + 1}: {case} compile_ms {rep['compile_ms']:.0f} "
                    f"(wall {time.monotonic() - t0:.1f} s)")
            if error:
                break
        if error:
            break
    if error:
        fail("error", error, kiln_cases + [c for c in ("hit_floor", "first_output") if c in wanted])
    else:
        notes = {"compile_cold": "kiln build --no-cache",
                 "compile_save": "kiln build --no-reuse into an empty cache dir (builds and saves)",
                 "compile_hit": f"kiln build, same cache dir, seed-{OTHER_WEIGHT_SEED} weights (load + refit)"}
        for case in kiln_cases:
            rs = reps[case]
            rec = record(case, model, batch, "kiln", case, "ms", threads=threads, status="ok", backend="cpu",
                         shapes=note, note=notes[case] + "; --timing-cache -; compile_ms of kiln build --json")
            rec.update(summary([x["compile_ms"] for x in rs]))
            # What ONNX Runtime's session creation covers: reading and parsing the model too.
            rec["import_compile_ms"] = summary([x["import_ms"] + x["compile_ms"] for x in rs])
            rec["wall_ms"] = summary([x["wall_ms"] for x in rs])
            rec["import_ms"] = statistics.median(x["import_ms"] for x in rs)
            rec["lower_ms"] = statistics.median(x["lower_ms"] for x in rs)
            for k in ("key_ms", "load_ms", "refit_ms", "build_ms", "save_ms"):
                rec[k] = statistics.median(engine_of(x)[k] for x in rs)
            records.append(rec)

    if "compile_cold" in wanted:
        # The peer's cold compile: creating an ONNX Runtime session with all graph optimizations,
        # from the file (so it includes reading and parsing the model: compared with kiln's
        # import + compile), with as many intra-op threads as kiln build uses. One fresh node
        # process per run, timing its first session, as every kiln build is a fresh process: a
        # second session in the same process skips ORT's one-time set-up and would flatter it.
        loads, error_reason = [], None
        for i in range(max(3, opts.compile_runs)):
            log(f"{tag}: onnxruntime session creation, process {i + 1}")
            proc, rep = run_ort(m1, [], os.path.join(d, "ort-out"), threads,
                                argparse.Namespace(min_runs=0, max_runs=0, budget=0, timeout=opts.timeout),
                                extra=["--loads", "1", "--warmup", "0"])
            if rep is None:
                error_reason = f"onnxruntime failed: {proc.last_error()}"
                break
            versions["onnxruntime"] = rep["version"]
            loads.append(rep["load_ms"][0])
        if error_reason:
            records.append(record("compile_cold", model, batch, "onnxruntime", "compile_cold", "ms",
                                  threads=threads, status="error", reason=error_reason))
        else:
            r = record("compile_cold", model, batch, "onnxruntime", "compile_cold", "ms", threads=threads,
                       status="ok", note="InferenceSession.create from the file (read + parse + optimize), "
                                         "graphOptimizationLevel 'all', the first session of a fresh process")
            r.update(summary(loads))
            records.append(r)
    if "hit_floor" in wanted and not error:
        records.append(hit_floor(model, batch, m2, reps["compile_hit"], opts))
    if "first_output" in wanted and not error:
        first_output(kiln, model, batch, threads, m2, inspect, common, os.path.join(d, "cache-0"), d, opts,
                     records, versions)


def first_output(kiln, model, batch, threads, model_path, inspect, compile_args, cache_dir, d, opts, records,
                 versions):
    """A user's whole process on a cache hit: start → outputs written, kiln vs ONNX Runtime.

    kiln: `kiln run` of the seed-2 model with the engine the compile rounds saved (status must
    be `hit`: load + refit), one pass on the seeded inputs, outputs written as .npy. ONNX
    Runtime: one node process that creates the session from the same file, runs once and
    writes its outputs. Both at all cores. The figure is the wall time of the whole process
    (exec, import, compile or load, run, writing the outputs, exit). Every kiln process's
    outputs are checked against ONNX Runtime's.
    """
    tag = f"first_output {model}-b{batch}"
    notes = []
    inputs = make_inputs(inspect, batch, d, notes)
    for n in notes:
        log(f"{tag}: {n}")

    def fail(system, reason, t=threads):
        records.append(record("first_output", model, batch, system, "first_output", "ms", threads=t,
                              status="error", reason=reason))

    one = argparse.Namespace(min_runs=1, max_runs=1, budget=0, timeout=opts.timeout)
    ort_walls, ort_load, ort_run, reference = [], [], [], None
    for i in range(max(3, opts.compile_runs)):
        log(f"{tag}: onnxruntime process {i + 1}")
        proc, rep = run_ort(model_path, inputs, os.path.join(d, f"first-ort-{i}"), threads, one,
                            extra=["--warmup", "0"])
        if rep is None:
            fail("onnxruntime", f"onnxruntime failed: {proc.last_error()}")
            return fail("kiln", "no ONNX Runtime outputs to check against")
        versions["onnxruntime"] = rep["version"]
        reference = reference or {o["name"]: o["file"] for o in rep["outputs"] if "file" in o}
        ort_walls.append(proc.wall_s * 1000.0)
        ort_load.append(rep["load_ms"][0])
        ort_run.append(rep["latencies_ms"][0])
    r = record("first_output", model, batch, "onnxruntime", "first_output", "ms", threads=threads, status="ok",
               note="node process: InferenceSession.create from the file, one run, outputs written",
               session_create_ms=statistics.median(ort_load), run_ms=statistics.median(ort_run))
    r.update(summary(ort_walls))
    records.append(r)

    walls, parts, checks = [], {"import_ms": [], "compile_ms": [], "run_ms": []}, []
    for i in range(max(opts.hit_runs, 1)):
        log(f"{tag}: kiln run process {i + 1} (cache hit)")
        args = ["run", model_path, *compile_args, "--cache-dir", cache_dir, "--threads", str(threads), "--json",
                "--repeat", "1", "--output-dir", os.path.join(d, f"first-kiln-{i}"), *input_args(inputs)]
        proc, rep = with_report(kiln.call(*args))
        if rep is None:
            return fail("kiln", f"kiln run failed: {proc.last_error()}")
        engine = engine_of(rep.get("compile"))
        if engine.get("status") != "hit":
            return fail("kiln", f"engine status {engine.get('status')}, expected hit ({engine.get('reason', '')})")
        walls.append(proc.wall_s * 1000.0)
        parts["import_ms"].append(rep["timings_ms"]["import"])
        parts["compile_ms"].append(rep["compile"]["compile_ms"])
        parts["run_ms"].append(rep["timings_ms"]["run"][0])
        checks.append(cross_check(outputs_of(rep), reference, TOLERANCES["fp32"]))
    r = record("first_output", model, batch, "kiln", "first_output", "ms", threads=threads, status="ok",
               backend="cpu", engine_status="hit",
               note="kiln run process: import, cache hit (load + refit), one run, outputs written",
               **{k: statistics.median(v) for k, v in parts.items()})
    r.update(summary(walls))
    r["round_checks"] = [round_check_summary(i, c) for i, c in enumerate(checks)]
    apply_check(r, worst_check(checks), "onnxruntime")
    records.append(r)
    log(f"{tag}: kiln {r['median']:.0f} ms vs onnxruntime {statistics.median(ort_walls):.0f} ms (whole process); "
        f"{r['status']}")


def hit_floor(model, batch, model_path, hits, opts):
    """The least a cache hit can cost: loading the model, plus one pass over its weights.

    Loading: kiln's own import of the file (`import_ms` of the hit runs' `kiln build --json`).
    The pass: reading the whole .onnx (weights are most of its bytes) from the page cache
    into a buffer allocated once: the kernel's copy touches every byte once. A hit also
    lowers the graph, computes the key, loads the plan and refits (reorders) the weights,
    so this is a lower bound, not an estimate. Compared with the hits' import + compile.
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
    imports = [h["import_ms"] for h in hits]
    pass_ms = summary(times)
    imp = summary(imports)
    r = record("hit_floor", model, batch, "floor", "hit_floor", "ms", status="ok", bytes=size,
               note="kiln's import of the .onnx (import_ms) + one pass over every byte of it (page cache → memory)")
    r.update(median=imp["median"] + pass_ms["median"], min=imp["min"] + pass_ms["min"],
             max=imp["max"] + pass_ms["max"], runs=pass_ms["runs"])
    r["import_ms"] = imp["median"]
    r["pass_ms"] = pass_ms
    r["gb_per_s"] = size / (pass_ms["median"] / 1000.0) / 1e9
    # The hit as the floor counts it: import + the whole compile call, run by run.
    r["hit_ms"] = statistics.median(h["import_ms"] + h["compile_ms"] for h in hits)
    r["hit_over_floor"] = r["hit_ms"] / r["median"]
    return r
