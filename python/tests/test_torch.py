"""kiln.torch: nn.Modules through torch.onnx.export, torch tensors in and out."""

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import kiln  # noqa: E402
import kiln.torch  # noqa: E402
from conftest import assert_close  # noqa: E402

TORCH_2 = int(torch.__version__.split(".")[0]) >= 2


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()  # random weights, nothing downloaded


def small_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def test_torchvision_resnet18_aot_with_a_dynamic_batch(resnet18, fast):
    model = kiln.compile(resnet18, inputs=[kiln.Input(min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 64, 64),
                                                      max_shape=(4, 3, 64, 64), dtype=torch.float32)], **fast)
    assert isinstance(model, kiln.torch.CompiledModule)
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64)
        y = model(x)
        assert isinstance(y, torch.Tensor) and y.shape == (batch, 1000)
        with torch.no_grad():
            assert_close(y.numpy(), resnet18(x).numpy())
    with pytest.raises(kiln.InvalidArgumentError, match="outside the compiled range"):
        model(torch.rand(8, 3, 64, 64))
    with pytest.raises(kiln.InvalidArgumentError, match="dtype float64"):
        model(torch.rand(1, 3, 64, 64, dtype=torch.float64))


def test_other_weights_hit_the_cache_and_give_their_outputs(fast):
    cache = kiln.RAMEngineCache()
    spec = [kiln.Input(min_shape=(1, 3, 16, 16), opt_shape=(2, 3, 16, 16), max_shape=(4, 3, 16, 16))]
    first = kiln.torch.compile(small_net(1), inputs=spec, custom_engine_cache=cache, **fast)
    net = small_net(2)
    second = kiln.torch.compile(net, inputs=spec, custom_engine_cache=cache, **fast)
    assert [e["status"] for e in first.engines()] == ["miss"]
    assert [e["status"] for e in second.engines()] == ["hit"]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert_close(second(x).numpy(), net(x).numpy())


def test_jit_compiles_per_shape_through_the_cache(fast):
    net = small_net(3)
    jit = kiln.torch.jit(net, **fast)
    x2, x3 = torch.rand(2, 3, 16, 16), torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert_close(jit(x2).numpy(), net(x2).numpy())
        assert jit.engines()[0]["status"] == "miss"
        assert_close(jit(x3).numpy(), net(x3).numpy())  # a new shape: compiles again
        assert jit.engines()[0]["status"] == "miss"
        jit(x2)
        assert jit.engines()[0]["status"] == "miss"  # served by the live engine
        jit.reset()  # as torch._dynamo.reset(): the engine cache stays
        assert_close(jit(x3).numpy(), net(x3).numpy())
        assert jit.engines()[0]["status"] == "hit"
    with pytest.raises(TypeError, match="bogus"):
        kiln.torch.jit(net, bogus=1)


@pytest.mark.skipif(not TORCH_2, reason="torch.compile needs torch >= 2.0")
def test_torch_compile_backend(fast):
    net = small_net(4)
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert_close(compiled(x).numpy(), net(x).numpy())


def test_torch_compile_backend_is_not_registered_before_torch_2():
    assert kiln.torch.DYNAMO_BACKEND_REGISTERED == TORCH_2
