"""Tests of the corpus case's bf16 emulation: `/usr/bin/python3 -m pytest bench/test_corpus_bf16.py`.

They need Debian's python3-torch (to export a small model); the test that runs the emulation
also needs ONNX Runtime's node package (bench/install-peers) and skips without it.
"""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip("torch")

import corpus_bf16  # noqa: E402
import npy  # noqa: E402
from common import ORT_RUNNER  # noqa: E402


class Head(torch.nn.Module):
    """fcn_resnet50's shape in small: a conv with a residual sum and ReLU, a classifier conv, and
    a bilinear resize to the input's size, which the exporter computes with int64 shape ops."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 3, 3, padding=2, dilation=2)
        self.b = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x) + x)
        z = self.b(y[:, :, ::2, ::2])
        return torch.nn.functional.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)


def exported():
    torch.manual_seed(3)
    model = Head().eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, 8, 8), buf, opset_version=17, input_names=["x"],
                      output_names=["y"])
    return model, buf.getvalue()


def graph_of(model_bytes):
    model = corpus_bf16.fields(model_bytes)
    graph = corpus_bf16.fields(next(v for n, w, v in model if n == 7))
    nodes = []
    for n, w, v in graph:
        if n == 1:
            f = corpus_bf16.fields(v)
            nodes.append({"op": corpus_bf16._strings(f, 4)[0], "in": corpus_bf16._strings(f, 1),
                          "out": corpus_bf16._strings(f, 2)})
    inits = {}
    for n, w, v in graph:
        if n == 5:
            f = corpus_bf16.fields(v)
            raw = next((bytes(x) for k, _, x in f if k == 9), None)
            inits[corpus_bf16._strings(f, 8)[0]] = raw
    outputs = [corpus_bf16._strings(corpus_bf16.fields(v), 1)[0] for n, w, v in graph if n == 12]
    return nodes, inits, outputs


def test_rounding_is_to_nearest_even():
    one = 1.0
    values = np.array([one + 2 ** -8, one + 3 * 2 ** -8, one + 2 ** -8 + 2 ** -20, -2.5, np.nan, np.inf],
                      dtype=np.float32)
    r = corpus_bf16.round_to_bf16(values)
    assert r[0] == 1.0  # a tie goes to the even neighbour (1.0, not 1 + 2^-7)
    assert r[1] == np.float32(one + 2 ** -6)  # a tie between 1 + 2^-7 (odd) and 1 + 2^-6 (even)
    assert r[2] == np.float32(one + 2 ** -7)  # above the tie: up
    assert r[3] == -2.5 and np.isnan(r[4]) and r[5] == np.inf


def test_emulation_rounds_weights_and_float_activations_and_leaves_shape_arithmetic_alone():
    _, original = exported()
    data, stats = corpus_bf16.emulate_bf16(original)
    nodes, inits, outputs = graph_of(data)
    before_nodes, before_inits, before_outputs = graph_of(original)
    assert outputs == before_outputs == ["y"]

    producers = {o: n for n in nodes for o in n["out"]}
    convs = [n for n in nodes if n["op"] == "Conv"]
    assert len(convs) == 2 and stats["weights"] == 2
    for conv in convs:
        weight = np.frombuffer(inits[conv["in"][1]], dtype="<f4")
        assert np.array_equal(weight, corpus_bf16.round_to_bf16(weight))  # bf16-exact
        assert not np.array_equal(weight, np.frombuffer(before_inits[conv["in"][1]], dtype="<f4"))
        assert inits[conv["in"][2]] == before_inits[conv["in"][2]]  # the bias stays fp32
        # The conv reads a value rounded by a Cast to bf16 and back (perhaps moved since: a Slice).
        source = producers.get(conv["in"][0])
        while source is not None and source["op"] in corpus_bf16.FIRST_INPUT_TYPED:
            source = producers.get(source["in"][0])
        assert source is not None and source["op"] == "Cast"

    # Every computing op's result goes through a Cast to bf16 and back before anyone reads it.
    for n in nodes:
        if n["op"] in ("Conv", "Add", "Relu", "Resize"):
            readers = [m for m in nodes if n["out"][0] in m["in"]]
            assert [m["op"] for m in readers] == ["Cast"], n
            back = [m for m in nodes if readers[0]["out"][0] in m["in"]]
            assert [m["op"] for m in back] == ["Cast"]
    # The int64 arithmetic of the resize's size is as it was: no Cast after Shape, Slice, Concat.
    for n in nodes:
        if n["op"] in ("Shape", "Slice", "Concat"):
            assert all(m["op"] != "Cast" for m in nodes if n["out"][0] in m["in"]), n
    assert sum(n["op"] == "Cast" for n in nodes) == 2 * stats["rounding_points"]
    assert len(nodes) == len(before_nodes) + 2 * stats["rounding_points"]


def rec(err, reason="err too large"):
    return {"status": "FAILED", "max_abs_err": err, "ref_max_abs": 1.0, "tolerance": 3e-2, "reason": reason}


def test_a_row_within_twice_the_emulations_error_passes_as_rounding_bound():
    r = rec(0.23)
    corpus_bf16.judge_against_emulation(r, {"max_abs_err": 0.19 * 4, "ref_max_abs": 4.0})
    assert r["status"] == "ok" and r["reason"].startswith("rounding-bound")
    assert r["bf16_emulation"]["err"] == pytest.approx(0.19)

    far = rec(0.5)
    corpus_bf16.judge_against_emulation(far, {"max_abs_err": 0.19, "ref_max_abs": 1.0})
    assert far["status"] == "FAILED" and "emulation" in far["reason"]

    broken = rec(0.23)
    corpus_bf16.judge_against_emulation(broken, {"error": "onnxruntime failed"})
    assert broken["status"] == "FAILED" and "onnxruntime failed" in broken["reason"]


@pytest.mark.skipif(shutil.which("node") is None or not os.path.isdir(
    os.path.join(os.path.dirname(ORT_RUNNER), "..", "node_modules", "onnxruntime-node")),
    reason="needs node and onnxruntime-node (bench/install-peers)")
def test_onnx_runtime_on_the_emulation_computes_the_rounded_model(tmp_path):
    model, original = exported()
    emulated = tmp_path / "emulated.onnx"
    emulated.write_bytes(corpus_bf16.emulate_bf16(original)[0])
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    npy.write(str(tmp_path / "x.npy"), "float32", [1, 3, 8, 8], x.flatten().tolist())
    out = tmp_path / "out"
    subprocess.run(["node", ORT_RUNNER, "--model", str(emulated), "--input", f"x={tmp_path / 'x.npy'}",
                    "--output-dir", str(out), "--min-runs", "1", "--max-runs", "1"], check=True,
                   stdout=subprocess.DEVNULL)
    got = np.load(out / "y.npy")

    # The same model computed by torch in fp32, rounding where the emulation does.
    def r(t):
        return torch.from_numpy(corpus_bf16.round_to_bf16(t.detach().numpy()))

    with torch.no_grad():
        xr = r(x)
        a = r(torch.nn.functional.conv2d(xr, r(model.a.weight), model.a.bias, padding=2, dilation=2))
        y = r(torch.relu(r(a + xr)))
        z = r(torch.nn.functional.conv2d(y[:, :, ::2, ::2], r(model.b.weight), model.b.bias))
        want = r(torch.nn.functional.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False)).numpy()
        plain = model(x).numpy()
    scale = np.abs(want).max()
    # Equal up to a rare one-ulp flip where fp32 sums in another order land on a rounding tie.
    assert np.abs(got - want).max() <= 2 ** -7 * scale
    assert np.mean(got == want) > 0.95
    # And not the fp32 model: the rounding is there.
    assert np.abs(plain - want).max() > 2 ** -10 * scale


def test_the_accuracy_table_says_rounding_bound_for_a_row_its_emulation_explains():
    import report

    base = {"system": "kiln bf16", "model": "fcn", "batch": 1, "round_checks": [1], "tolerance": 3e-2,
            "per_output": {"out": {"elements": 10, "ref_max_abs": 1.0, "max_abs_err": 0.2,
                                   "max_err_over_scale": 0.2, "mean_err_over_scale": 0.01,
                                   "p99_err_over_scale": 0.1, "passed": False}}}
    explained = dict(base, status="ok", bf16_emulation={"err": 0.19, "factor": 2})
    failed = dict(base, status="FAILED")
    rows = [line for line in report.accuracy_table([explained, failed]) if line.startswith("| fcn")]
    assert rows[0].endswith("| rounding-bound |") and rows[1].endswith("| FAILED |")


def test_a_rejudged_row_shares_its_verdict_with_its_throughput_row():
    latency = {"model": "fcn", "batch": 8, "system": "kiln", "precision": "bf16", "threads": 2,
               "metric": "latency", "status": "ok"}
    same = dict(latency, metric="throughput", status="FAILED")
    other_threads = dict(same, threads=1)
    corpus_bf16.share_verdict(latency, [latency, same, other_threads])
    assert same["status"] == "ok" and other_threads["status"] == "FAILED"
