"""Tests of the corpus export and case: `/usr/bin/python3 -m pytest bench/test_corpus.py`.

They need Debian's python3-torch (the export's own dependency), not a kiln build.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip("torch")

import corpus  # noqa: E402
import corpus_cases  # noqa: E402


class Blown(torch.nn.Module):
    """conv → BatchNorm with weights far from unit scale: uncalibrated stats leave its output huge."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=20.0)
        torch.nn.init.constant_(self.conv.bias, 50.0)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))


def test_calibration_normalises_batchnorm_outputs_in_eval_mode():
    torch.manual_seed(0)
    model = Blown()
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert before.abs().mean() > 10  # default stats: activations far off unit scale

    assert corpus.calibrate_batchnorm(model, 16) == 1
    assert not model.training and not model.bn.training  # exported in eval mode
    assert model.bn.momentum is None
    with torch.no_grad():
        after = model(x)
    # Per channel, the calibrated BatchNorm output is about zero-mean, unit-variance.
    mean = after.mean(dim=(0, 2, 3))
    std = after.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.2
    assert (std - 1).abs().max() < 0.2
    # Dropout stayed off during calibration and after: the outputs are deterministic.
    with torch.no_grad():
        assert torch.equal(model(x), after)


def test_calibration_leaves_models_without_batchnorm_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    assert corpus.calibrate_batchnorm(model, 4) == 0


def test_existing_export_is_reused_and_unknown_models_are_refused(tmp_path):
    folder = tmp_path / f"torch-{torch.__version__}-r{corpus.RECIPE}"
    folder.mkdir()
    (folder / "resnet34-b1.onnx").write_bytes(b"placeholder")
    result = corpus.export(str(tmp_path), ["resnet34"], [1])
    assert result["models"][0]["status"] == "cached"
    assert (folder / "resnet34-b1.onnx").read_bytes() == b"placeholder"
    with pytest.raises(ValueError, match="unknown corpus model"):
        corpus.build_model("no_such_net")


def test_segmentation_models_return_the_out_tensor():
    torch.manual_seed(0)
    model = corpus.build_model("lraspp_mobilenet_v3_large").eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (1, 21, 64, 64)


def kiln_row(**kw):
    r = {"case": "corpus", "model": "m", "batch": 1, "system": "kiln", "metric": "latency", "threads": 2,
         "precision": "fp32", "status": "ok", "median": 2.0, "min": 2.0, "max": 2.0, "runs": 3,
         "max_abs_err": 5e-4, "ref_max_abs": 0.1, "tolerance": 1e-3}
    r.update(kw)
    return r


def test_relative_judgement_fails_small_outputs_the_absolute_bound_would_pass():
    small = kiln_row()
    corpus_cases.judge_relative(small)
    assert small["status"] == "FAILED" and "max|ref|" in small["reason"]
    large = kiln_row(ref_max_abs=10.0)
    corpus_cases.judge_relative(large)
    assert large["status"] == "ok"
    zeros = kiln_row(max_abs_err=0.0, ref_max_abs=0.0)
    corpus_cases.judge_relative(zeros)
    assert zeros["status"] == "unchecked" and "all zeros" in zeros["reason"]
    peer = kiln_row(system="onnxruntime-2t")
    corpus_cases.judge_relative(peer)
    assert peer["status"] == "ok"


def test_markdown_lists_ratios_failures_and_profile():
    ort = kiln_row(system="onnxruntime-2t", median=3.0)
    ok = kiln_row(ref_max_abs=10.0)
    failed = kiln_row(model="n", status="error", median=None, reason="kiln run failed: ScatterND has no kernel")
    export = {"case": "corpus", "model": "x", "batch": 1, "system": "export", "metric": "latency",
              "status": "error", "reason": "torch.onnx.export failed: RuntimeError: boom"}
    prof = {"case": "corpus", "model": "m", "batch": 1, "system": "kiln", "metric": "profile", "threads": 2,
            "status": "ok", "median": 12.5, "total_ms": 1.5, "wall_ms": 40.0,
            "top_ops": [{"op": "Mul", "kind": "onednn", "tactic": "binary:Mul", "ms": 1.2, "layers": 4,
                         "percent": 80.0}],
            "top_non_onednn": [{"name": "softmax_1", "op": "Softmax", "kind": "reference", "ms": 0.25}]}
    bf16 = kiln_row(precision="bf16", median=1.5, ref_max_abs=10.0, tolerance=3e-2)
    text = corpus_cases.markdown({"versions": {}, "records": [ort, ok, bf16, failed, export, prof]})
    assert "| m | 1 | 2 | bf16 (trade vs ORT fp32) | 1.5 | 3 | 2.00 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| m |"))
    assert "| 1.50 |" in row and "| 12.5 | 1.5 / 40 | Mul [binary:Mul] 80% (4) |" in row
    assert "softmax_1 (Softmax, reference, 0.25)" in row
    assert "kiln run failed: ScatterND has no kernel" in text
    assert "export failed: torch.onnx.export failed: RuntimeError: boom" in text


def test_a_json_error_on_stdout_is_the_failure_message():
    from common import Proc

    proc = Proc(1, '{"error": {"kind": "unsupported", "message": "node n: ScatterND has no kernel"}}\n', "", 1.0,
                1.0, 1.0)
    assert proc.last_error() == "node n: ScatterND has no kernel"
    assert Proc(1, "", "", 1.0, 1.0, 1.0).last_error() == "exit code 1"
    assert Proc(1, "{}", "bad flag\nRun with --help for more\n", 1.0, 1.0, 1.0).last_error() == "bad flag"


def test_zero_initialised_weights_are_reinitialised():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    torch.nn.init.zeros_(model[1].weight)
    assert corpus.reinit_zero_weights(model) == ["1.weight"]
    assert model[1].weight.abs().sum() > 0
    assert corpus.reinit_zero_weights(model) == []


def test_profile_summary_shares_groups_and_slowest_non_onednn_layers():
    def layer(name, op, kind, tactic, ms):
        return {"name": name, "op": op, "kind": kind, "tactic": tactic, "ms": ms, "percent": ms}

    layers = [layer("conv1", "Conv", "onednn", "conv:direct", 20.0),
              layer("mul1", "Mul", "onednn", "binary:Mul/ref", 15.0),
              layer("mul2", "Mul", "onednn", "binary:Mul/ref", 15.0),
              layer("scatter", "ScatterND", "reference", "reference", 25.0),
              layer("pad", "Pad", "aux", "aux", 5.0),
              layer("in", "Reorder", "reorder", "a -> b", 10.0),
              layer("resize", "Resize", "aux", "aux", 10.0)]
    rep = {"profile": {"runs": 5, "total_ms": 100.0, "wall_ms": 130.0, "layers": layers,
                       "by_kind": {"onednn": {"ms": 50.0}, "reference": {"ms": 25.0}, "aux": {"ms": 15.0},
                                   "reorder": {"ms": 10.0}}},
           "compile": {"segments": [{"kind": "engine"}, {"kind": "fallback"}]}}
    s = corpus_cases.summarise_profile(rep)
    # reference 25 + aux 5 + 10 + oneDNN's reference binaries 30, of 100.
    assert s["median"] == 70.0 and s["total_ms"] == 100.0 and s["wall_ms"] == 130.0
    assert [l["name"] for l in s["top_non_onednn"]] == ["scatter", "in", "resize"]
    assert [(g["op"], g["layers"], g["percent"]) for g in s["top_ops"]] == [
        ("Mul", 2, 30.0), ("ScatterND", 1, 25.0), ("Conv", 1, 20.0)]
    assert s["fallback_segments"] == 1
