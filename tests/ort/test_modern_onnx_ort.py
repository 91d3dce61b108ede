"""Today's exporters' ONNX (IR 10, opsets 18 to 21) against ONNX Runtime.

Each case is a small model written here field by field (kiln's own protobuf
writer, python/kiln/_onnx_proto.py), with seeded random inputs. ONNX Runtime
(onnxruntime-node, pinned in bench/package.json and installed by
scripts/install-deps) computes the expected outputs in the test's setup;
kiln's CLI runs the same model on the reference backend and on the cpu
backend (oneDNN engines where it takes the nodes), and every output must
match, element by element.

Run by ctest (modern_onnx_vs_ort) with KILN_CLI and KILN_SOURCE_DIR set.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

SOURCE = os.environ.get("KILN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "python"))
from kiln import _onnx_proto as P  # noqa: E402  (the package's writer, not the package)

CLI = os.environ.get("KILN_CLI", "kiln")
ORT_RUNNER = os.path.join(SOURCE, "bench", "peers", "ort_runner.mjs")
IR_VERSION = 10
# float outputs: max |kiln - ORT| <= TOL * max(1, max |ORT|); integer and bool outputs exactly.
TOL = 1e-4


class Case:
    """One model: its opset, nodes, initializers, inputs (numpy arrays) and output names."""

    def __init__(self, name, opset, inputs, outputs):
        self.name, self.opset = name, opset
        self.inputs = {k: np.asarray(v) for k, v in inputs.items()}
        self.outputs = outputs
        self.nodes, self.inits = [], []

    def node(self, op, ins, outs, **attrs):
        self.nodes.append(P.node(op, ins, outs, "%s_%d" % (op, len(self.nodes)), attrs))
        return self

    def init(self, name, array):
        self.inits.append(P.tensor_chunks(name, np.asarray(array)))
        return self

    def bytes(self):
        ins = [P.value_info(k, P.onnx_dtype(v.dtype), v.shape) for k, v in self.inputs.items()]
        outs = [_untyped_output(name, dtype) for name, dtype in self.outputs]
        return P.model(self.name, self.nodes, self.inits, ins, outs, self.opset, producer="kiln-test",
                       ir_version=IR_VERSION)


def _untyped_output(name, elem_type):
    """A ValueInfoProto with an element type and no shape: ORT and kiln infer the shape."""
    return P._bytes(1, name) + P._bytes(2, P._bytes(1, P._int(1, elem_type)))


def rng(seed):
    return np.random.default_rng(seed)


def f32(shape, seed):
    return rng(seed).standard_normal(shape).astype(np.float32)


F, I64, B = P.FLOAT, P.INT64, P.BOOL


def cases():
    out = []
    x = f32((2, 3, 4, 5), 1)

    c = Case("reduce18_axes_input", 18, {"x": x}, [("mean", F), ("max", F), ("l2", F), ("sumsq", F)])
    c.init("a1", np.array([1], np.int64)).init("a_last", np.array([-1, 2], np.int64))
    c.node("ReduceMean", ["x", "a1"], ["mean"], keepdims=0)
    c.node("ReduceMax", ["x", "a_last"], ["max"], keepdims=1)
    c.node("ReduceL2", ["x", "a1"], ["l2"])
    c.node("ReduceSumSquare", ["x", "a_last"], ["sumsq"], keepdims=0)
    out.append(c)

    c = Case("reduce18_without_axes", 18, {"x": x}, [("all", F), ("same", F)])
    c.node("ReduceMean", ["x"], ["all"], keepdims=0)
    c.node("ReduceMin", ["x"], ["m"], noop_with_empty_axes=1)
    c.node("Relu", ["m"], ["same"])
    out.append(c)

    c = Case("split18_num_outputs", 18, {"x": f32((2, 7, 3), 2)}, [("s0", F), ("s1", F), ("s2", F)])
    c.node("Split", ["x"], ["s0", "s1", "s2"], axis=1, num_outputs=3)
    out.append(c)

    c = Case("pad18_axes_and_modes", 18, {"x": f32((1, 2, 4, 5), 3)},
             [("constant", F), ("reflect", F), ("edge", F)])
    c.init("pads", np.array([1, 2, 2, 0], np.int64)).init("axes", np.array([-1, 2], np.int64))
    c.init("value", np.array(0.5, np.float32))
    c.node("Pad", ["x", "pads", "value", "axes"], ["constant"])
    c.node("Pad", ["x", "pads", "", "axes"], ["reflect"], mode="reflect")
    c.node("Pad", ["x", "pads", "", "axes"], ["edge"], mode="edge")
    out.append(c)

    c = Case("pad19_wrap", 19, {"x": f32((1, 2, 4, 5), 4)}, [("wrap", F)])
    c.init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))
    c.node("Pad", ["x", "pads"], ["wrap"], mode="wrap")
    out.append(c)

    c = Case("resize18_sizes_with_axes", 18, {"x": f32((1, 3, 5, 6), 5)}, [("linear", F), ("nearest", F)])
    c.init("sizes", np.array([9, 4], np.int64)).init("scales", np.array([2.0, 0.5], np.float32))
    c.node("Resize", ["x", "", "", "sizes"], ["linear"], mode="linear", axes=[2, 3],
           coordinate_transformation_mode="half_pixel")
    c.node("Resize", ["x", "", "scales"], ["nearest"], mode="nearest", axes=[3, 2],
           coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    out.append(c)

    c = Case("resize19_half_pixel_symmetric", 19, {"x": f32((1, 2, 4, 4), 6)}, [("y", F)])
    c.init("scales", np.array([1, 1, 1.5, 0.75], np.float32))
    c.node("Resize", ["x", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel_symmetric")
    out.append(c)

    c = Case("avgpool19_dilations", 19, {"x": f32((1, 2, 7, 7), 7)}, [("y", F)])
    c.node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0])
    out.append(c)

    c = Case("opset21_shape_ops", 21, {"x": f32((2, 3, 4), 8)}, [("y", F), ("shape", I64), ("z", F)])
    c.init("new_shape", np.array([0, -1], np.int64)).init("ax", np.array([0], np.int64))
    c.node("Shape", ["x"], ["shape"], start=-1, end=3)            # [4]
    c.node("ConstantOfShape", ["shape"], ["twos"], value=np.array([2.0], np.float32))
    c.node("Reshape", ["x", "new_shape"], ["r"])                 # [2, 12]
    c.node("Transpose", ["r"], ["t"], perm=[1, 0])               # [12, 2]
    c.node("Flatten", ["t"], ["f"], axis=0)                      # [1, 24]
    c.node("Squeeze", ["f", "ax"], ["s"])                        # [24]
    c.node("Unsqueeze", ["s", "ax"], ["u"])                      # [1, 24]
    c.node("Cast", ["u"], ["h"], to=P.FLOAT16)
    c.node("CastLike", ["h", "x"], ["y0"])
    c.node("Identity", ["y0"], ["y"])
    c.node("ReduceSum", ["x", "ax"], ["sum0"], keepdims=0)       # [3, 4]
    c.node("Mul", ["sum0", "twos"], ["z"])
    out.append(c)

    data = f32((3, 4), 9)
    c = Case("scatter18_reductions", 18, {"data": data}, [("elements_max", F), ("nd_mul", F)])
    c.init("idx", np.array([[1, 0, 2, 1], [0, 2, 1, 0]], np.int64)).init("upd", f32((2, 4), 10))
    c.init("nd_idx", np.array([[1], [1], [0]], np.int64)).init("nd_upd", f32((3, 4), 11))
    c.node("ScatterElements", ["data", "idx", "upd"], ["elements_max"], axis=0, reduction="max")
    c.node("ScatterND", ["data", "nd_idx", "nd_upd"], ["nd_mul"], reduction="mul")
    out.append(c)

    c = Case("gelu20_tanh_and_erf", 20, {"x": f32((2, 64), 12)}, [("tanh", F), ("erf", F)])
    c.node("Gelu", ["x"], ["tanh"], approximate="tanh")
    c.node("Gelu", ["x"], ["erf"])
    out.append(c)

    # A small CNN whose weights are initializers: the cpu backend runs it on oneDNN primitives.
    c = Case("cnn21_on_onednn", 21, {"image": f32((2, 3, 16, 16), 13)}, [("logits", F)])
    c.init("w1", f32((8, 3, 3, 3), 14) * 0.3).init("b1", f32((8,), 15))
    c.init("w2", f32((8, 1, 3, 3), 16) * 0.3).init("fc", f32((5, 8), 17)).init("fc_b", f32((5,), 18))
    c.node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])
    c.node("Relu", ["c1"], ["r1"])
    c.node("Conv", ["r1", "w2"], ["c2"], group=8, strides=[2, 2], pads=[1, 1, 1, 1])
    c.node("Add", ["c2", "c2"], ["a2"])
    c.node("GlobalAveragePool", ["a2"], ["g"])
    c.node("Flatten", ["g"], ["flat"])
    c.node("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1)
    out.append(c)

    # LayerNorm as torch's dynamo exporter decomposes it at opset 18 (ReduceMean with axes as inputs).
    c = Case("layernorm18_decomposed", 18, {"x": f32((2, 5, 16), 19)}, [("y", F)])
    c.init("axes", np.array([-1], np.int64)).init("two", np.array(2.0, np.float32))
    c.init("eps", np.array(1e-5, np.float32)).init("gamma", f32((16,), 20)).init("beta", f32((16,), 21))
    c.node("ReduceMean", ["x", "axes"], ["mu"])
    c.node("Sub", ["x", "mu"], ["d"])
    c.node("Pow", ["d", "two"], ["d2"])
    c.node("ReduceMean", ["d2", "axes"], ["var"])
    c.node("Add", ["var", "eps"], ["ve"])
    c.node("Sqrt", ["ve"], ["sd"])
    c.node("Div", ["d", "sd"], ["n"])
    c.node("Mul", ["n", "gamma"], ["g"])
    c.node("Add", ["g", "beta"], ["y"])
    out.append(c)
    return out


CASES = cases()


def _write_case(case, root):
    d = os.path.join(root, case.name)
    os.makedirs(d, exist_ok=True)
    model = os.path.join(d, "model.onnx")
    with open(model, "wb") as f:
        f.write(case.bytes())
    feeds = []
    for name, value in case.inputs.items():
        path = os.path.join(d, "in_%s.npy" % name)
        np.save(path, value)
        feeds.append("%s=%s" % (name, path))
    return d, model, feeds


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ort_outputs(tmp_path_factory):
    """ONNX Runtime's outputs for every case, computed once: {case name: {output: array}}."""
    root = str(tmp_path_factory.mktemp("ort"))
    rc, text = _run(["node", "--version"])
    assert rc == 0, "node is missing (scripts/install-deps installs it): " + text
    results = {}
    for case in CASES:
        d, model, feeds = _write_case(case, root)
        cmd = ["node", ORT_RUNNER, "--model", model, "--output-dir", os.path.join(d, "ort"), "--threads", "1",
               "--warmup", "0", "--min-runs", "1", "--max-runs", "1"]
        for feed in feeds:
            cmd += ["--input", feed]
        rc, text = _run(cmd)
        assert rc == 0, "ONNX Runtime failed on %s (is onnxruntime-node installed? scripts/install-deps):\n%s" % (
            case.name, text)
        described = json.loads(text.strip().splitlines()[-1])["outputs"]
        results[case.name] = {o["name"]: np.load(o["file"]) for o in described}
        results[case.name]["__dir__"] = (d, model, feeds)
    return results


def _compare(case, got_dir, want, backend):
    for name, _ in case.outputs:
        ref = want[name]
        path = os.path.join(got_dir, name + ".npy")
        assert os.path.exists(path), "%s on %s: output %s missing" % (case.name, backend, name)
        got = np.load(path)
        assert got.shape == ref.shape, "%s on %s: %s has shape %s, ONNX Runtime %s" % (
            case.name, backend, name, got.shape, ref.shape)
        if np.issubdtype(ref.dtype, np.floating):
            bound = TOL * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
            err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
            assert err <= bound, "%s on %s: %s differs from ONNX Runtime by %g (bound %g)" % (
                case.name, backend, name, err, bound)
        else:
            assert got.dtype == ref.dtype and np.array_equal(got, ref), "%s on %s: %s differs from ONNX Runtime" % (
                case.name, backend, name)


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kiln_matches_onnx_runtime(case, backend, ort_outputs, tmp_path):
    d, model, feeds = ort_outputs[case.name]["__dir__"]
    out = str(tmp_path / backend)
    cmd = [CLI, "run", model, "--backend", backend, "--output-dir", out, "--no-cache", "--threads", "1"]
    for feed in feeds:
        cmd += ["--input", feed]
    rc, text = _run(cmd)
    assert rc == 0, "kiln run --backend %s failed on %s:\n%s" % (backend, case.name, text)
    _compare(case, out, ort_outputs[case.name], backend)


def test_the_cnn_runs_on_onednn_primitives(ort_outputs, tmp_path):
    """The cpu rows above prove outputs; this one proves the CNN's convs and Gemm ran in an engine."""
    d, model, feeds = ort_outputs["cnn21_on_onednn"]["__dir__"]
    cmd = [CLI, "run", model, "--backend", "cpu", "--no-cache", "--threads", "1", "--json", "--profile",
           "--profile-runs", "1"]
    for feed in feeds:
        cmd += ["--input", feed]
    rc, text = _run(cmd)
    assert rc == 0, text
    report = json.loads(text[text.index("{"):])
    kinds = {layer["op"]: layer["kind"] for layer in report["profile"]["layers"]}
    convs = [k for op, k in kinds.items() if op.startswith("Conv")]
    assert convs and all(k == "onednn" for k in convs), kinds
    assert any(op.startswith("Gemm") and k == "onednn" for op, k in kinds.items()), kinds
