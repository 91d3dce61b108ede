"""Markdown tables and the latency plot of a bench result (see bench/README.md)."""

from common import TOLERANCES, log

COMPILE_CASES = ("compile_cold", "compile_save", "compile_hit")
# How a precision's rows are named in the tables: bf16 rounds the conv/matmul inputs to 8
# mantissa bits and is compared with ONNX Runtime's fp32 under a 30x looser bound, so its
# speed-up is a precision trade, never a like-for-like win.
PRECISION_LABELS = {"fp32": "fp32", "bf16": "bf16 (precision trade: vs ORT fp32)"}


def precision_label(p):
    return PRECISION_LABELS.get(p, p)


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:,.0f}"


def fmt_x(v):
    return f"{v:.2f}x" if v < 10 else f"{v:,.0f}x"


def ratio_text(peer, kiln):
    """peer_median / kiln_median: above 1 kiln is faster."""
    if not (peer and kiln):
        return "-"
    r = peer / kiln
    return f"kiln {r:.2f}x faster" if r >= 1 else f"kiln {1 / r:.2f}x slower"


def find(records, **keys):
    for r in records:
        if all(r.get(k) == v for k, v in keys.items()):
            return r
    return None


def counted(r):
    """A kiln figure counts only when its outputs passed the cross-check."""
    return r is not None and r.get("status") == "ok" and r.get("median") is not None


def cell(r):
    if r is None:
        return "-"
    if r.get("median") is None:
        return r.get("status", "-")
    s = f"{fmt_ms(r['median'])} ({fmt_ms(r['min'])}–{fmt_ms(r['max'])}, n={r['runs']})"
    return s + " " + r["status"] if r.get("status") in ("FAILED", "unchecked") else s


def label(r):
    if r["system"].startswith("kiln"):
        return f"{r['system']} {precision_label(r.get('precision', 'fp32'))} {r.get('threads')}t"
    return r["system"]


def err_text(r):
    """The worst error over the outputs and rounds: absolute, and relative to the output's scale."""
    if r is None:
        return "-"
    if "max_abs_err" in r:
        text = f"{r['max_abs_err']:.1e}"
        if "max_err_over_scale" in r:
            text += f" ({r['max_err_over_scale']:.1e} of max\\|ref\\|)"
        return text
    return r.get("check_error") or r.get("status", "-")


def latency_tables(recs):
    lat = [r for r in recs if r["case"] == "latency" and r["metric"] == "latency"]
    lines = []
    peers = sorted({(r["system"], r["threads"]) for r in lat if not r["system"].startswith("kiln")},
                   key=lambda p: p[1])
    precisions = [p for p in TOLERANCES if find(lat, system="kiln", precision=p)]
    workloads = list(dict.fromkeys((r["model"], r["batch"]) for r in lat))
    for peer, threads in peers:
        lines += [f"## latency at {threads} thread{'s' if threads > 1 else ''} (ms per batch; kiln cpu backend "
                  f"`--threads {threads}` vs {peer})", ""]
        head = ["model", "batch", f"{peer}"]
        for p in precisions:
            head += [f"kiln {precision_label(p)}", f"ratio {p}" + (" (precision trade)" if p != "fp32" else "")]
        head += ["kiln compile ms (" + " / ".join(precisions) + ")",
                 "max abs err, all rounds (" + " / ".join(precisions) + ")", "check"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, batch in workloads:
            pr = find(lat, model=model, batch=batch, system=peer)
            ks = [find(lat, model=model, batch=batch, system="kiln", precision=p, threads=threads) for p in precisions]
            if all((x or {}).get("status") == "skipped" for x in ks + [pr]):
                continue  # listed under "skipped"
            row = [model, str(batch), cell(pr)]
            for k in ks:
                row += [cell(k), ratio_text(pr and pr.get("median"), k["median"]) if counted(k) else "not counted"]
            row.append(" / ".join(fmt_ms((k or {}).get("compile_ms")) for k in ks))
            row.append(" / ".join(err_text(k) for k in ks))
            row.append(" / ".join((k or {}).get("status", "-") for k in ks))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += accuracy_table(lat)
    refs = [r for r in lat if r["system"] == "kiln-ref"]
    if refs:
        lines += ["## latency of kiln's ref backend (1 thread; the reference interpreter, not the fast path)", "",
                  "| model | batch | kiln-ref | onnxruntime (1t) | ratio | max abs err | check |",
                  "|---|---|---|---|---|---|---|"]
        for k in refs:
            pr = find(lat, model=k["model"], batch=k["batch"], system="onnxruntime")
            ratio = ratio_text(pr and pr.get("median"), k["median"]) if counted(k) else "not counted"
            lines.append(f"| {k['model']} | {k['batch']} | {cell(k)} | {cell(pr)} | {ratio} | {err_text(k)} | "
                         f"{k.get('status')} |")
        lines.append("")
    return lines


def accuracy_table(lat):
    """Per kiln row and output: the error distribution relative to the output's scale (max |ref|),
    so a user can judge a precision trade by more than its worst element."""
    rows = [r for r in lat if r["system"].startswith("kiln") and (r.get("per_output") or r.get("check_error"))]
    if not rows:
        return []
    lines = ["## accuracy against onnxruntime (1 thread, fp32), every round's outputs", "",
             "Per output: scale = max|ref|; |diff| = |kiln - ref| per element; max, mean and 99th percentile of "
             "|diff| / scale over the output's elements, worst round. The check: max|diff| <= tol × max(1, scale) "
             "for every output in every round; bf16 rows are a precision trade, judged under a looser tol.", "",
             "| model | batch | kiln row | output | elements | scale (max\\|ref\\|) | max\\|diff\\| | "
             "max / scale | mean / scale | p99 / scale | tol | rounds checked | check |",
             "|" + "---|" * 13]
    for r in rows:
        checked = len(r.get("round_checks", [])) or "-"
        if r.get("check_error"):
            lines.append(f"| {r['model']} | {r['batch']} | {label(r)} | - | - | - | - | - | - | - | "
                         f"{r.get('tolerance', '-')} | {checked} | {r['status']}: {r['check_error']} |")
            continue
        # A bf16 row over the fixed bound that its model's bf16 emulation explains passed as
        # rounding-bound (corpus_bf16.judge_against_emulation): say so, not FAILED.
        over = "rounding-bound" if r.get("status") == "ok" and "err" in (r.get("bf16_emulation") or {}) else "FAILED"
        for name, o in r["per_output"].items():
            lines.append(f"| {r['model']} | {r['batch']} | {label(r)} | {name} | {o['elements']} | "
                         f"{o['ref_max_abs']:.3g} | {o['max_abs_err']:.1e} | {o['max_err_over_scale']:.1e} | "
                         f"{o['mean_err_over_scale']:.1e} | {o['p99_err_over_scale']:.1e} | {r.get('tolerance', '-')} "
                         f"| {checked} | {'ok' if o['passed'] else over} |")
    lines.append("")
    return lines


def compile_tables(recs):
    lines = []
    comp = [r for r in recs if r["case"] in COMPILE_CASES and r.get("median") is not None]
    if comp:
        lines += ["## compile: the tutorial's three numbers (ms)", "",
                  "`compile_ms` of `kiln build --json` (the whole compile call: lower + key + cache + build or load "
                  "and refit; the model's import is not in it), import + compile (what ONNX Runtime's session "
                  "creation from the file also covers: reading and parsing the model) and the process's wall time; "
                  "a fresh timing cache each time (`--timing-cache -`). cold: `--no-cache`; save: `--no-reuse` into "
                  "an empty cache dir; hit: the same cache dir, a model of the same architecture with other weights "
                  "(seed 2), so the hit includes the refit.", "",
                  "| model | batch | shapes | case | system | compile_ms median (min–max, n) | import + compile ms "
                  "median (min–max) | wall ms median (min–max) | where the time went (medians) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in comp:
            if r["system"] == "kiln":
                w, ic = r["wall_ms"], r.get("import_compile_ms")
                wall = f"{fmt_ms(w['median'])} ({fmt_ms(w['min'])}–{fmt_ms(w['max'])})"
                both = f"{fmt_ms(ic['median'])} ({fmt_ms(ic['min'])}–{fmt_ms(ic['max'])})" if ic else "-"
                if r["case"] == "compile_hit":
                    detail = (f"lower {fmt_ms(r['lower_ms'])}, key {fmt_ms(r['key_ms'])}, load {fmt_ms(r['load_ms'])}, "
                              f"refit {fmt_ms(r['refit_ms'])}; import {fmt_ms(r['import_ms'])}")
                else:
                    detail = f"lower {fmt_ms(r['lower_ms'])}, build {fmt_ms(r['build_ms'])}"
                    detail += f", save {fmt_ms(r['save_ms'])}" if r["case"] == "compile_save" else ""
                    detail += f"; import {fmt_ms(r['import_ms'])}"
            else:
                # ORT's session creation reads and parses the file: it is import + compile.
                wall, detail, both = "-", r.get("note", ""), cell(r)
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('shapes', '-')} | {r['case']} | {r['system']} | "
                         f"{cell(r) if r['system'] == 'kiln' else '-'} | {both} | {wall} | {detail} |")
        lines.append("")
        for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in comp):
            k = {c: find(comp, model=model, batch=batch, case=c, system="kiln") for c in COMPILE_CASES}
            ort = find(comp, model=model, batch=batch, case="compile_cold", system="onnxruntime")
            parts = []
            if k["compile_cold"] and k["compile_hit"]:
                parts.append(f"cold/hit = {fmt_x(k['compile_cold']['median'] / k['compile_hit']['median'])}")
            if k["compile_cold"] and k["compile_save"]:
                parts.append(f"save/cold = {k['compile_save']['median'] / k['compile_cold']['median']:.3f}")
            # Like with like: ONNX Runtime's session creation from the file includes the model's
            # import, so kiln's side is import + compile, never compile_ms alone.
            for case, name in (("compile_cold", "cold"), ("compile_hit", "hit")):
                if k[case] and ort and k[case].get("import_compile_ms"):
                    parts.append(f"kiln {name} (import + compile) / onnxruntime session creation = "
                                 f"{fmt_x(k[case]['import_compile_ms']['median'] / ort['median'])}")
            if parts:
                lines += [f"Ratios ({model}, batch {batch}, medians; cold/hit and save/cold of compile_ms): "
                          + "; ".join(parts) + ".", ""]
    lines += first_output_table(recs)
    floors = [r for r in recs if r["case"] == "hit_floor" and r.get("median") is not None]
    if floors:
        lines += ["## hit_floor (ms): the least a cache hit can cost", "",
                  "floor = kiln's import of the .onnx (`import_ms`) + one pass over every byte of the file (read from "
                  "the page cache into memory). hit = `import_ms` + `compile_ms` of the same `kiln build` hit "
                  "runs.", "",
                  "| model | batch | hit (import + compile) | floor (import + pass) | import | pass | hit / floor |",
                  "|---|---|---|---|---|---|---|"]
        for r in floors:
            p = r["pass_ms"]
            lines.append(f"| {r['model']} | {r['batch']} | {fmt_ms(r['hit_ms'])} | {cell(r)} | "
                         f"{fmt_ms(r['import_ms'])} "
                         f"| {fmt_ms(p['median'])} ({r['bytes'] / 1e6:.1f} MB at {r['gb_per_s']:.1f} GB/s) | "
                         f"{fmt_x(r['hit_over_floor'])} |")
        lines.append("")
    refit = [r for r in recs if r["case"] == "refit_overhead" and r.get("median") is not None]
    if refit:
        lines += ["## refit_overhead: refittable costs no speed (ms per batch, kiln fp32)", "",
                  "fresh: `kiln run --no-cache`; cache hit + refit: the engine built from the seed-2 model, served "
                  "from the cache and refitted with the seed-1 weights. Same model, inputs, batch and `--threads`; "
                  "runs pooled over rounds that alternate the order. cpu/wall: the kiln process's CPU time over its "
                  "wall time per round (about the number of busy threads; the compile is in it too).", "",
                  "| model | batch | threads | fresh | cache hit + refit | hit / fresh | compile ms (fresh; hit) | "
                  "cpu/wall (fresh; hit) | max abs err (fresh / hit) | check |", "|" + "---|" * 10]
        for model, batch, threads in dict.fromkeys((r["model"], r["batch"], r["threads"]) for r in refit):
            f = find(refit, model=model, batch=batch, threads=threads, engine="fresh")
            h = find(refit, model=model, batch=batch, threads=threads, engine="cache_hit_refit")
            ratio = f"{h['median'] / f['median']:.3f}" if counted(f) and counted(h) else "not counted"
            if counted(f) and counted(h) and abs(h["median"] / f["median"] - 1) > 0.1:
                ratio += " (differs by more than 10%)"
            comp_ms = "; ".join(", ".join(fmt_ms(x) for x in (r or {}).get("compile_ms", [])) for r in (f, h))
            cpu = "; ".join(", ".join(f"{x:.2f}" for x in (r or {}).get("cpu_per_wall", [])) for r in (f, h))
            lines.append(f"| {model} | {batch} | {threads} | {cell(f)} | {cell(h)} | {ratio} | {comp_ms} | {cpu} | "
                         f"{err_text(f)} / {err_text(h)} | {(f or {}).get('status')} / {(h or {}).get('status')} |")
        lines.append("")
    return lines


def first_output_table(recs):
    rows = [r for r in recs if r["case"] == "first_output"]
    if not rows:
        return []
    lines = ["## first_output: a whole process on a cache hit, start → outputs written (ms)", "",
             "kiln: `kiln run` of the seed-2 model with the engine the compile rounds saved (a hit: load + refit), "
             "one pass, outputs written as .npy. onnxruntime: one node process: session creation from the same "
             "file, one run, outputs written. Both at all cores, the same seeded inputs; wall time of the whole "
             "process (exec to exit). kiln's outputs are checked against onnxruntime's in every process.", "",
             "| model | batch | system | wall ms median (min–max, n) | inside (medians) | check |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["system"] == "kiln":
            inside = (f"import {fmt_ms(r.get('import_ms'))}, compile (hit) {fmt_ms(r.get('compile_ms'))}, "
                      f"run {fmt_ms(r.get('run_ms'))}")
            check = f"{r['status']}, {err_text(r)}"
        else:
            inside = (f"session creation {fmt_ms(r.get('session_create_ms'))}, run {fmt_ms(r.get('run_ms'))}"
                      if r.get("median") is not None else "-")
            check = "reference" if r.get("median") is not None else r["status"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['system']} | {cell(r)} | {inside} | {check} |")
    lines.append("")
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in rows):
        k = find(rows, model=model, batch=batch, system="kiln")
        o = find(rows, model=model, batch=batch, system="onnxruntime")
        if counted(k) and counted(o):
            lines += [f"Ratio ({model}, batch {batch}): onnxruntime process / kiln process = "
                      f"{ratio_text(o['median'], k['median'])} to the first output on a cache hit.", ""]
    return lines


def binary_text(info):
    if not info:
        return ""
    text = f" kiln binary linked {info['built']}"
    if info.get("stale"):
        return text + (f": STALE, older than {info['newer_count']} tracked source file(s) "
                       f"({', '.join(info['newer_sources'])}), so not what `git describe` says.")
    return text + ", newer than every tracked source file."


def markdown(result, title):
    recs = result["records"]
    m, v, run = result["machine"], result["versions"], result["run"]
    tol = ", ".join(f"{p} {t:g}" for p, t in TOLERANCES.items())
    lines = [f"# {title}", "",
             f"Machine: {m['cpu']} ({m['arch']}), {m['physical_cores']} cores / {m['logical_cpus']} threads "
             f"({m['usable_cpus']} usable), {m['memory_gib']} GiB; ISA: {', '.join(m['isa']) or '-'}"
             f"{'; virtualized' if m.get('virtualized') else ''}. Load average (1 min) at start / end: "
             f"{run.get('loadavg_start', '-')} / {run.get('loadavg_end', '-')}.", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "kiln_binary") + "."
             + binary_text(v.get("kiln_binary")), "",
             "Figures are medians over the runs (min–max, n = runs)"
             + (f"; latency rows pool the runs of {run['rounds']} rounds, every row timed once per round in turn, "
                "so load from elsewhere falls on all systems alike" if run.get("rounds", 1) > 1 else "")
             + ". Ratio = peer median / kiln median: above 1 kiln "
             "is faster. Every kiln row's outputs are checked against onnxruntime (1 thread) on the same inputs. "
             "The outputs of every round are checked (later rounds run an engine loaded from the cache and "
             "refitted), output by output over the reference's outputs: a missing output, a shape mismatch or "
             f"max abs err > tol × max(1, max|ref|) in any output of any round is FAILED, tol per kiln precision: "
             f"{tol}. A FAILED row's ratio is \"not counted\". kiln bf16 is `--precision fp32,bf16` (bf16 kernels "
             "allowed) compared with onnxruntime's fp32 under a 30x looser bound: a precision trade, labelled so "
             "in every table; the accuracy table shows its error distribution per output.", ""]
    lines += latency_tables(recs)
    tput = [r for r in recs if r["metric"] == "throughput"]
    if tput:
        lines += ["## throughput (samples/s, from the latency runs)", "",
                  "| model | batch | system | median | min | max |", "|---|---|---|---|---|---|"]
        for r in tput:
            lines.append(f"| {r['model']} | {r['batch']} | {label(r)} | {r['median']:.3g} | {r['min']:.3g} | "
                         f"{r['max']:.3g} |")
        lines.append("")
    rss = [r for r in recs if r["case"] == "peak_rss" and r.get("median") is not None]
    if rss:
        systems = list(dict.fromkeys(label(r) for r in rss))
        lines += ["## peak_rss (MiB, max RSS of the whole process: kiln's includes its compile, the peers' node.js)",
                  "", "| model | batch | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
        for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in rss):
            cells = {label(r): r for r in rss if r["model"] == model and r["batch"] == batch}
            lines.append(f"| {model} | {batch} | " + " | ".join(
                f"{cells[s]['median']:.0f}" if s in cells else "-" for s in systems) + " |")
        lines.append("")
    lines += compile_tables(recs)
    skips = [r for r in recs if r.get("status") in ("skipped", "error", "FAILED")]
    if skips:
        lines += ["## skipped, failed to run, or FAILED the cross-check", "",
                  "| case | model | batch | system | why |", "|---|---|---|---|---|"]
        for r in skips:
            why = r.get("reason") or r.get("check_error") or f"max abs err {r.get('max_abs_err')}"
            lines.append(f"| {r['case']} | {r['model']} | {r['batch']} | {label(r)} | {r['status']}: {why} |")
        lines.append("")
    return "\n".join(lines)


def plot(result, path):
    """Bar chart of peer median / kiln median per workload, one bar per kiln row (log scale; above 1: kiln faster)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing: no plot (bench/install-peers installs it for /usr/bin/python3)")
        return None
    lat = [r for r in result["records"] if r["case"] == "latency" and r["metric"] == "latency"]
    peer_of = {r["threads"]: r["system"] for r in lat if not r["system"].startswith("kiln")}
    series = list(dict.fromkeys((r["system"], r["precision"], r["threads"]) for r in lat
                                if r["system"].startswith("kiln") and r["threads"] in peer_of))
    labels = list(dict.fromkeys((r["model"], r["batch"]) for r in lat if counted(r)))
    if not labels or not series:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 5), 4.5))
    width = 0.8 / len(series)
    for i, (system, precision, threads) in enumerate(series):
        ratios = []
        for model, batch in labels:
            k = find(lat, model=model, batch=batch, system=system, precision=precision, threads=threads)
            p = find(lat, model=model, batch=batch, system=peer_of[threads])
            ok = counted(k) and p and p.get("median")  # no bar for a wrong answer
            ratios.append(p["median"] / k["median"] if ok else float("nan"))
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, ratios, width, label=f"{system} {precision_label(precision)} vs {peer_of[threads]}, "
                                        f"{threads} thread{'s' if threads != 1 else ''}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ticks = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    finite = [bar.get_height() for bars in ax.containers for bar in bars if bar.get_height() == bar.get_height()]
    if finite:
        ax.set_ylim(min(0.8, min(finite) / 1.15), max(1.25, max(finite) * 1.15))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{m}\nbatch {b}" for m, b in labels])
    ax.set_ylabel("onnxruntime median / kiln median\n(above 1: kiln faster)")
    ax.set_title(f"kiln latency vs onnxruntime at the same threads, {result['machine']['cpu']}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
