"""CompiledModel.refit: new weights in place equal a fresh compile with
them; bad updates raise and change nothing; kiln.torch's AOT module and JIT
wrapper refit instead of compiling again."""

import numpy as np
import pytest

import kiln
from kiln import _onnx_proto
from conftest import assert_close, ramp


def zoo(seed):
    return kiln.zoo_model("resnet_tiny", seed=seed, batch=2)


def spec():
    return [kiln.Input(shape=(2, 3, 64, 64))]


def uncached(fast):
    """No engine cache: each compile builds (level 0: the same tactics)."""
    return dict(fast, cache_built_engines=False, reuse_cached_engines=False)


def test_refit_equals_a_fresh_compile_with_the_new_weights(fast):
    a, b = zoo(1), zoo(2)
    model = kiln.compile(a, spec(), **uncached(fast))
    fresh = kiln.compile(b, spec(), **uncached(fast))
    x = ramp((2, 3, 64, 64))
    before = model.run([x])[0].copy()
    assert model.report()["last_refit"] is None

    names = [w["name"] for w in model.weights()]
    assert len(names) > 10 and all(w["dtype"] == "float32" for w in model.weights())
    new = _onnx_proto.read_initializers(b)
    values = {n: new[n].copy() for n in names}
    stats = model.refit(values)
    assert stats["weights"] == len(names) and stats["engines"] == 1 and stats["refit_ms"] > 0
    assert model.report()["last_refit"] == stats
    for v in values.values():  # copied: the caller's arrays may change
        v.fill(0)
    after = model.run([x])[0]
    np.testing.assert_array_equal(after, fresh.run([x])[0])
    assert not np.array_equal(after, before)
    with pytest.raises(kiln.InvalidArgumentError, match="refitted"):
        model.save(fast["engine_cache_dir"] + "-never.kiln")


def test_bad_updates_name_the_weight_and_change_nothing(fast):
    model = kiln.compile(zoo(1), spec(), **uncached(fast))
    x = ramp((2, 3, 64, 64))
    before = model.run([x])[0].copy()
    first = model.weights()[0]
    good = np.full(first["shape"], 0.5, dtype=np.float32)
    name = first["name"]
    cases = [
        ({name: good, "no_such_weight": good}, "no initializer named 'no_such_weight'"),
        ({name: good.reshape(-1)}, "weight '%s' is float32" % name),
        ({name: good.astype(np.float64)}, "the new value is float64"),
    ]
    for weights, message in cases:
        with pytest.raises(kiln.InvalidArgumentError, match=message):
            model.refit(weights)
        np.testing.assert_array_equal(model.run([x])[0], before)
    assert model.report()["last_refit"] is None


def test_torch_tensors_are_accepted(fast):
    torch = pytest.importorskip("torch")
    a, b = zoo(1), zoo(2)
    model = kiln.compile(a, spec(), **uncached(fast))
    fresh = kiln.compile(b, spec(), **uncached(fast))
    new = _onnx_proto.read_initializers(b)
    model.refit({w["name"]: torch.from_numpy(new[w["name"]].copy()) for w in model.weights()})
    x = ramp((2, 3, 64, 64))
    np.testing.assert_array_equal(model.run([x])[0], fresh.run([x])[0])


def test_immutable_weights_refuse(fast):
    model = kiln.compile(zoo(1), spec(), immutable_weights=True, **uncached(fast))
    w = model.weights()[0]
    with pytest.raises(kiln.InvalidArgumentError, match="refittable = false"):
        model.refit({w["name"]: np.zeros(w["shape"], dtype=np.float32)})


def test_the_reference_backend_refits_too(fast):
    a, b = zoo(1), zoo(2)
    model = kiln.compile(a, spec(), backend="ref", **uncached(fast))
    fresh = kiln.compile(b, spec(), backend="ref", **uncached(fast))
    new = _onnx_proto.read_initializers(b)
    model.refit({w["name"]: new[w["name"]] for w in model.weights()})
    x = ramp((2, 3, 64, 64))
    np.testing.assert_array_equal(model.run([x])[0], fresh.run([x])[0])


# ---- kiln.torch: the AOT module and the JIT wrapper -------------------------------------


def _torch():
    torch = pytest.importorskip("torch")
    import kiln.torch  # noqa: F401 - the module kiln.torch.* below needs

    return torch


def conv_bn(seed):
    """torch.onnx.export fuses the BatchNorm into the conv (torch 1.13 renames
    the folded weights onnx::Conv_N), so a refit goes through a new export."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def mlp(seed):
    """Every ONNX weight is a parameter under its own name: refit reads the
    changed parameters directly."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def eager(net, x):
    with _torch().no_grad():
        return net(x)


@pytest.mark.parametrize("make", [conv_bn, mlp])
def test_jit_refits_in_place_after_a_weight_change(make, fast):
    torch = _torch()
    net = make(0)
    x = torch.rand(2, 3, 12, 12) if make is conv_bn else torch.rand(4, 6)
    jit = kiln.torch.jit(net, **fast)
    before = jit(x).clone()
    model = jit.last_model
    assert_close(before.numpy(), eager(net, x).numpy())

    net.load_state_dict(make(1).state_dict())  # in place: new versions
    after = jit(x)
    assert jit.refits == 1 and jit.recompiles == 0 and jit.last_model is model
    assert_close(after.numpy(), eager(net, x).numpy())
    assert float((after - before).abs().max()) > 1e-3

    with torch.no_grad():
        net[0].weight.mul_(-1)
    assert_close(jit(x).numpy(), eager(net, x).numpy())
    assert jit.refits == 2 and jit.recompiles == 0
    stats = model.report()["last_refit"]
    if make is mlp:  # straight from the one changed parameter
        assert stats["weights"] == 1
    jit(x)
    assert jit.refits == 2  # nothing changed since


def test_compiled_module_refits_from_another_module(fast):
    torch = _torch()
    net = conv_bn(0)
    x = torch.rand(2, 3, 12, 12)
    model = kiln.torch.compile(net, inputs=[x], **fast)
    other = conv_bn(3)
    stats = model.refit(other)
    assert stats["engines"] == 1
    assert_close(model(x).numpy(), eager(other, x).numpy())
    # A dict of initializer names (as weights() lists them) works too.
    w = model.weights()[0]
    model.refit({w["name"]: torch.zeros(w["shape"])})
    nn = torch.nn
    wider = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 5)).eval()
    with pytest.raises(kiln.InvalidArgumentError, match="compile it instead"):
        model.refit(wider)  # another architecture
    with pytest.raises(kiln.InvalidArgumentError, match="cannot export"):
        model.refit(mlp(0))  # not even for these inputs


def test_jit_refits_the_model_of_every_shape_it_compiled(fast):
    torch = _torch()
    net = mlp(0)
    jit = kiln.torch.jit(net, **fast)
    xs = [torch.rand(2, 6), torch.rand(5, 6)]
    models = []
    for x in xs:
        jit(x)
        models.append(jit.last_model)
    net.load_state_dict(mlp(1).state_dict())
    for x, model in zip(xs, models):  # each signature's model catches up on its next call
        assert_close(jit(x).numpy(), eager(net, x).numpy())
        assert jit.last_model is model
    assert jit.refits == 2 and jit.recompiles == 0


def _export_folding_batchnorm_under_the_convs_name(module, inputs, output_count=None):
    """What torch 2's dynamo exporter may write for conv_bn: its optimizer
    folds the BatchNorm into the conv and keeps the names ``0.weight`` and
    ``0.bias`` for the folded values, which are not the module's tensors."""
    conv, bn, linear = module[0], module[1], module[5]
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
    weight = conv.weight.detach().numpy() * scale[:, None, None, None]
    bias = (conv.bias.detach().numpy() - bn.running_mean.detach().numpy()) * scale + bn.bias.detach().numpy()
    p = _onnx_proto
    name, shape = inputs[0].name, list(inputs[0].opt_shape)
    nodes = [p.node("Conv", [name, "0.weight", "0.bias"], ["c"], "conv", {"pads": [1, 1, 1, 1]}),
             p.node("Relu", ["c"], ["r"], "relu", {}),
             p.node("GlobalAveragePool", ["r"], ["g"], "pool", {}),
             p.node("Flatten", ["g"], ["f"], "flatten", {}),
             p.node("Gemm", ["f", "5.weight", "5.bias"], ["y"], "fc", {"transB": 1})]
    initializers = [p.tensor_chunks(n, np.ascontiguousarray(a, dtype=np.float32)) for n, a in
                    [("0.weight", weight), ("0.bias", bias), ("5.weight", linear.weight.detach().numpy()),
                     ("5.bias", linear.bias.detach().numpy())]]
    return p.model("folded", nodes, initializers, [p.value_info(name, 1, shape)],
                   [p.value_info("y", 1, [shape[0], 5])], 17)


def test_jit_refit_never_reads_a_folded_weight_from_the_tensor_of_its_name(fast, monkeypatch):
    torch = _torch()
    monkeypatch.setattr(kiln.torch, "export", _export_folding_batchnorm_under_the_convs_name)
    net = conv_bn(0)
    x = torch.rand(2, 3, 12, 12)
    jit = kiln.torch.jit(net, **fast)
    assert_close(jit(x).numpy(), eager(net, x).numpy())
    with torch.no_grad():
        net[0].weight.mul_(-1)  # only the conv's weight changes: the folded weight must be exported again
    assert_close(jit(x).numpy(), eager(net, x).numpy())
    assert jit.refits == 1 and jit.recompiles == 0
