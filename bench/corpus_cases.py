"""The corpus case: public torchvision models kiln was never tuned on, kiln vs ONNX Runtime.

The models come from bench/corpus.py (torch.onnx.export, seeded random weights, calibrated
BatchNorm statistics), cached under the build folder. Each (model, batch) then runs through
the latency case's own machinery (cases.latency_workload: rounds, every kiln row
cross-checked against ONNX Runtime, failures recorded with kiln's message); its records are
relabelled `case: "corpus"`. Per model and batch one more `kiln run --profile --json` (fp32,
the most threads of the matrix, the engine from the latency rows' cache) gives the share of
the run in reference kernels and the slowest layers that are not oneDNN primitives: where
the next performance work should look.
"""

import argparse
import json
import os
import subprocess
import sys

import cases
import corpus_bf16
from common import (PRECISION_FLAGS, TOLERANCES, cross_check, input_args, json_from, log, make_inputs, record,
                    run_ort)

CORPUS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.py")
PROFILE_RUNS = 5
TOP_LAYERS = 3


def add_arguments(ap):
    g = ap.add_argument_group("corpus case (bench/corpus.py's torchvision models; not in the default cases)")
    g.add_argument("--corpus-models", help="comma-separated (default: all of `bench/corpus.py --list`)")
    g.add_argument("--corpus-batches", default="1,8", help="batch sizes (default 1,8)")
    g.add_argument("--corpus-threads", help="thread counts of the kiln and ONNX Runtime rows (default 1,<all CPUs>)")
    g.add_argument("--corpus-dir", help="where exported models are cached (default <build-dir>/bench-corpus)")


def finish_args(opts):
    opts.corpus_batches = [int(b) for b in opts.corpus_batches.split(",")]
    opts.corpus_threads = [int(t) for t in opts.corpus_threads.split(",")] if opts.corpus_threads else None
    opts.corpus_dir = opts.corpus_dir or os.path.join(opts.build_dir, "bench-corpus")


def export_models(opts):
    """Runs bench/corpus.py (torch in its own process); returns its JSON manifest."""
    cmd = [sys.executable, CORPUS_SCRIPT, "--out-dir", opts.corpus_dir,
           "--batches", ",".join(map(str, opts.corpus_batches))]
    if opts.corpus_models:
        cmd += ["--models", opts.corpus_models]
    log(f"corpus: exporting (or reusing) the models into {opts.corpus_dir}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=opts.timeout)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout)


def prepare_from(path):
    """A cases.latency_workload `prepare`: the exported file instead of a zoo model."""

    def prepare(kiln, model, batch, d):
        os.makedirs(d, exist_ok=True)
        return cases.inspect_workload(kiln, model, path, batch, d)

    return prepare


def profile(kiln, model, batch, path, work, threads, opts):
    """One `kiln run --profile --json` record: reference-kernel share and the slowest non-oneDNN layers."""
    rec = record("corpus", model, batch, "kiln", "profile", "%", threads=threads, backend="cpu", precision="fp32")
    d = os.path.join(work, f"{model}-b{batch}")
    inputs = make_inputs(json_from(kiln.call("inspect", path, "--json")), batch, d, [])
    # The fp32 latency rows' cache at this thread count: the profile times the engine they timed.
    cache = os.path.join(work, "cache", f"fp32-{threads}t")
    proc = kiln.call("run", path, "--backend", "cpu", "--precision", PRECISION_FLAGS["fp32"], "--threads",
                     str(threads), "--cache-dir", cache, "--json", "--profile", "--profile-runs", str(PROFILE_RUNS),
                     *input_args(inputs))
    if proc.rc != 0:
        rec.update(status="error", reason=f"kiln run --profile failed: {proc.last_error()}")
        return rec
    rec.update(status="ok", **summarise_profile(json_from(proc)),
               note="share of the profiled layer time in reference kernels: fallback (\"reference\"), in-engine "
                    "(\"aux\") and oneDNN's own reference implementations (tactic \"/ref\")")
    return rec


def on_reference_kernel(layer):
    """Whether a profiled layer runs a reference kernel: a fallback segment's layer ("reference"), a
    reference kernel inside an engine ("aux"), or a oneDNN primitive whose implementation is oneDNN's
    own unoptimised reference one (kiln marks its tactic "/ref")."""
    kind, tactic = layer.get("kind"), layer.get("tactic") or ""
    return kind in ("reference", "aux") or (kind == "onednn" and tactic.endswith("/ref"))


def summarise_profile(rep):
    """The fields of a profile record from a `kiln run --profile --json` report."""
    prof = rep.get("profile") or {}
    total = prof.get("total_ms") or 0.0
    by_kind = {k: v.get("ms", 0.0) for k, v in (prof.get("by_kind") or {}).items()}
    ref_ms = sum(l.get("ms", 0.0) for l in prof.get("layers", []) if on_reference_kernel(l))
    share = 100.0 * ref_ms / total if total > 0 else None
    others = sorted((l for l in prof.get("layers", []) if l.get("kind") != "onednn"), key=lambda l: -l.get("ms", 0))
    # Layer time summed per (op, tactic), every kind: one slow primitive repeated in every block
    # (a broadcast Mul, say) shows up here even when each of its layers is small.
    groups = {}
    for l in prof.get("layers", []):
        key = (l.get("op"), l.get("kind"), l.get("tactic"))
        g = groups.setdefault(key, {"op": key[0], "kind": key[1], "tactic": key[2], "ms": 0.0, "layers": 0})
        g["ms"] += l.get("ms", 0.0)
        g["layers"] += 1
    top_ops = sorted(groups.values(), key=lambda g: -g["ms"])[:TOP_LAYERS]
    for g in top_ops:
        g["percent"] = 100.0 * g["ms"] / total if total > 0 else None
    segments = [s for s in (rep.get("compile") or {}).get("segments", []) if s.get("kind") == "fallback"]
    return dict(median=share, min=share, max=share, runs=prof.get("runs", 0), total_ms=total,
                wall_ms=prof.get("wall_ms"), layers=len(prof.get("layers", [])),
                by_kind_ms={k: round(v, 3) for k, v in by_kind.items()},
                top_non_onednn=[{k: l.get(k) for k in ("name", "op", "kind", "tactic", "ms", "percent")}
                                for l in others[:TOP_LAYERS]],
                top_ops=top_ops, fallback_segments=len(segments))


def judge_relative(rec):
    """FAILED when max abs err > tol * max|ref|: the latency case's bound, tol * max(1, max|ref|), is
    looser for outputs whose scale is below 1 (small logits), and the corpus has such models."""
    if rec["system"] != "kiln" or rec.get("status") != "ok" or "max_abs_err" not in rec or "tolerance" not in rec:
        return
    if rec["ref_max_abs"] == 0:
        rec["status"] = "unchecked"
        rec["reason"] = "the reference output is all zeros: the cross-check proves nothing"
        return
    bound = rec["tolerance"] * rec["ref_max_abs"]
    if rec["max_abs_err"] > bound:
        rec["status"] = "FAILED"
        rec["reason"] = (f"max abs err {rec['max_abs_err']:.3g} > {rec['tolerance']:g} x max|ref| "
                         f"({rec['ref_max_abs']:.3g})")


def bf16_emulation_check(kiln, model, batch, path, work, opts):
    """ONNX Runtime (1 thread, one run) on the model and on its bf16 emulation (corpus_bf16), on
    the seeded inputs: the emulation's cross-check against the fp32 outputs, or {"error": ...}."""
    d = os.path.join(work, f"{model}-b{batch}", "bf16-emulation")
    os.makedirs(d, exist_ok=True)
    inputs = make_inputs(json_from(kiln.call("inspect", path, "--json")), batch, d, [])
    emulated = os.path.join(d, "model.onnx")
    try:
        stats = corpus_bf16.write_emulation(path, emulated)
    except (ValueError, IndexError, UnicodeDecodeError, OSError) as e:
        return {"error": f"could not write the bf16 emulation: {e}"}
    log(f"corpus {model}-b{batch}: bf16 emulation ({stats['weights']} weights, {stats['rounding_points']} "
        "rounding points) on onnxruntime")
    once = argparse.Namespace(min_runs=1, max_runs=1, budget=0, timeout=opts.timeout)
    outs = {}
    for name, model_file in (("fp32", path), ("bf16", emulated)):
        proc, rep = run_ort(model_file, inputs, os.path.join(d, f"{name}-out"), 1, once)
        if rep is None:
            return {"error": f"onnxruntime failed on the {name} model: {proc.last_error()}"}
        outs[name] = {o["name"]: o["file"] for o in rep["outputs"] if "file" in o}
    return cross_check(outs["bf16"], outs["fp32"], TOLERANCES["bf16"])


def run(kiln, ctx, work, opts, records, versions):
    manifest = export_models(opts)
    versions["torch"], versions["torchvision"] = manifest["torch"], manifest["torchvision"]
    sub = argparse.Namespace(**vars(opts))
    sub.cases, sub.with_ref = ["latency"], False
    sub_ctx = dict(ctx, threads=opts.corpus_threads)
    threads = [t for _, t in cases.ort_systems(sub_ctx)]
    for entry in manifest["models"]:
        model, batch = entry["name"], entry["batch"]
        extra = {"input_shape": entry["input_shape"], "source": f"torchvision {manifest['torchvision']}, "
                 f"torch.onnx.export opset {manifest['opset']}, seed {manifest['seed']}, BatchNorm calibrated"}
        if entry["status"] == "failed":
            records.append(record("corpus", model, batch, "export", "latency", "ms", status="error",
                                  reason=f"torch.onnx.export failed: {entry['error']}", **extra))
            log(f"corpus {model}-b{batch}: export failed: {entry['error']}")
            continue
        first = len(records)
        cases.latency_workload(kiln, sub_ctx, model, batch, work, sub, records, versions,
                               prepare=prepare_from(entry["path"]))
        for r in records[first:]:
            r["case"] = "corpus"
            r.update(extra)
            judge_relative(r)
            if r.get("precision") == "bf16" and r["system"] == "kiln":
                r["note"] = "precision trade: kiln bf16 kernels vs ONNX Runtime fp32"
        # A bf16 row over the fixed bound: is it what bf16 rounding does to this model anyway?
        over = [r for r in records[first:] if r["system"] == "kiln" and r.get("precision") == "bf16"
                and r.get("status") == "FAILED" and "max_abs_err" in r]
        if over:
            emulation = bf16_emulation_check(kiln, model, batch, entry["path"], work, opts)
            for r in over:
                corpus_bf16.judge_against_emulation(r, emulation)
                corpus_bf16.share_verdict(r, records[first:])
                log(f"corpus {model}-b{batch}: kiln bf16 {r['threads']}t: {r['status']} ({r['reason']})")
        if any(r["system"] == "kiln" and r.get("precision") == "fp32" and r.get("median") is not None
               for r in records[first:]):
            log(f"corpus {model}-b{batch}: profile")
            records.append(dict(profile(kiln, model, batch, entry["path"], work, max(threads), opts), **extra))


# ---------------------------------------------------------------------------- report

def _ms(v):
    return "-" if v is None else (f"{v:.3g}" if v < 10 else f"{v:,.0f}")


def _cell(text):
    """Free text (kiln's or torch's messages) inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(result):
    recs = [r for r in result["records"] if r["case"] == "corpus"]
    if not recs:
        return ""
    lat = [r for r in recs if r["metric"] == "latency"]
    profs = {(r["model"], r["batch"]): r for r in recs if r["metric"] == "profile"}
    lines = ["", "## corpus: torchvision models kiln was never tuned on", "",
             "Exported by bench/corpus.py (torch " + result["versions"].get("torch", "?") + ", torchvision "
             + result["versions"].get("torchvision", "?") + ", opset 17, seeded random weights, BatchNorm running "
             "stats calibrated on seeded random batches). ratio = ONNX Runtime ms / kiln ms at the same threads "
             "(above 1: kiln faster). err = max |kiln - ORT| / max |ORT| against the ONNX Runtime row with the "
             "fewest threads; fp32 fails above " + f"{TOLERANCES['fp32']:g}, bf16 above {TOLERANCES['bf16']:g} unless "
             f"within {corpus_bf16.EMULATION_FACTOR:g}x the error of the model's bf16 emulation (weights and "
             "activations rounded to bf16, run by ONNX Runtime; shown in brackets): bf16 rounding that the model "
             "itself amplifies. "
             "bf16 rows are a precision trade (kiln bf16 kernels vs ONNX Runtime fp32). ref % = share of kiln's "
             "profiled layer time in reference kernels (fp32, `kiln run --profile`): fallback segments, reference "
             "kernels inside engines (aux) and oneDNN's own reference implementations (tactic /ref); layers / run = the profile's "
             "sum of layer times and its end-to-end time per run, ms (a gap is time outside the layers: "
             "scheduling, synchronisation); top ops = the three (op, tactic) groups with the most profiled time, "
             "every kind, as % of the layer time (layers in the group); the last column lists the three slowest "
             "layers that are not oneDNN primitives.", "",
             "| model | batch | threads | precision | kiln ms | ORT ms | ratio | err | ref % | layers / run ms "
             "| top ops (% of layer time) | top non-oneDNN layers (op, kind, ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    workloads = list(dict.fromkeys((r["model"], r["batch"]) for r in lat))
    for model, batch in workloads:
        rows = [r for r in lat if r["model"] == model and r["batch"] == batch]
        export = next((r for r in rows if r["system"] == "export"), None)
        if export:
            lines.append(f"| {model} | {batch} | - | - | - | - | - | - | - | - | - | export failed: "
                         f"{_cell(export['reason'])} |")
            continue
        peers = {r["threads"]: r for r in rows if r["system"].startswith("onnxruntime")}
        prof = profs.get((model, batch))
        for k in (r for r in rows if r["system"] == "kiln"):
            p = peers.get(k["threads"])
            pm = p.get("median") if p else None
            ratio = f"{pm / k['median']:.2f}" if pm and k.get("median") and k["status"] == "ok" else "-"
            err = "-"
            if "max_abs_err" in k and k.get("ref_max_abs"):
                err = f"{k['max_abs_err'] / k['ref_max_abs']:.1e}"
                emulated = (k.get("bf16_emulation") or {}).get("err")
                if emulated is not None:
                    err += f" (bf16 emulation {emulated:.1e})"
            status = "" if k["status"] == "ok" else f" **{k['status']}**"
            ref, top, split, ops = "-", "-", "-", "-"
            if prof and k.get("precision") == "fp32" and k["threads"] == prof["threads"]:
                if prof["status"] == "ok":
                    ref = f"{prof['median']:.1f}" if prof["median"] is not None else "-"
                    split = f"{_ms(prof.get('total_ms'))} / {_ms(prof.get('wall_ms'))}"
                    ops = "; ".join(_cell(f"{g['op']} [{g['tactic']}] {g['percent']:.0f}% ({g['layers']})")
                                    for g in prof.get("top_ops", []) if g.get("percent") is not None) or "-"
                    top = "; ".join(f"{l['name']} ({l['op']}, {l['kind']}, {l['ms']:.2f})"
                                    for l in prof["top_non_onednn"]) or "none"
                else:
                    top = _cell(f"profile {prof['status']}: {prof.get('reason')}")
            kiln_ms = _ms(k.get("median")) if k.get("median") is not None else (
                _cell(f"{k['status']}: {k.get('reason') or k.get('check_error')}"))
            precision = k["precision"] + (" (trade vs ORT fp32)" if k["precision"] == "bf16" else "")
            lines.append(f"| {model} | {batch} | {k['threads']} | {precision}{status} | {kiln_ms} | "
                         f"{_ms(pm) if p else '-'} | {ratio} | {err} | {ref} | {split} | {ops} | {top} |")
    lines.append("")
    return "\n".join(lines)
