"""Device-resident inputs and outputs: CUDA tensors in place, on torch's
current stream, for models compiled with backend "cuda". The CUDA tests
skip without a CUDA device (or a kiln built without the cuda backend); the
host-side ones check the refusals and the host fallback."""

import warnings

import numpy as np
import pytest

import kiln
from conftest import assert_close, ramp

torch = pytest.importorskip("torch")
import kiln.torch  # noqa: E402


def cuda_ready():
    if not torch.cuda.is_available():
        return False
    try:
        kiln.compile(kiln.zoo_model("resnet_tiny", seed=1, batch=1), backend="cuda", optimization_level=0,
                     timing_cache_path="-", cache_built_engines=False, reuse_cached_engines=False)
        return True
    except kiln.Error:
        return False


needs_cuda = pytest.mark.skipif(not cuda_ready(), reason="no CUDA device, or kiln without the cuda backend")

DYNAMIC = [kiln.Input(min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 64, 64), max_shape=(4, 3, 64, 64))]


def cuda_settings(tmp_path):
    return dict(backend="cuda", engine_cache_dir=str(tmp_path / "cache"), optimization_level=0,
                timing_cache_path="-")


# ---- host side ----


def test_a_cpu_model_says_why_it_has_no_device_io_and_keeps_the_host_path(fast):
    model = kiln.compile(kiln.zoo_model("resnet_tiny", seed=1), inputs=DYNAMIC, **fast)
    why = model.device_io_unavailable()
    assert why is not None and "backend 'cpu'" in why
    with pytest.raises(kiln.UnsupportedError, match="backend 'cuda'"):
        model.run_device([(1, (2, 3, 64, 64), 4096, 0)], lambda code, shape: (4096, None))
    x = ramp((2, 3, 64, 64))
    y = model(torch.from_numpy(x))  # torch CPU tensors: today's path
    assert isinstance(y, torch.Tensor) and y.device.type == "cpu"
    assert_close(y.numpy(), model.run([x])[0])


def test_cpu_tensors_never_take_the_device_path():
    assert kiln.torch._cuda_device([torch.zeros(2)]) is None
    assert kiln.torch._cuda_device([np.zeros(2, np.float32)]) is None
    assert kiln.torch._cuda_device([]) is None


# ---- on a GPU ----


@needs_cuda
def test_cuda_tensors_run_in_place_and_equal_the_host_path(tmp_path):
    model = kiln.compile(kiln.zoo_model("resnet_tiny", seed=1), inputs=DYNAMIC, **cuda_settings(tmp_path))
    assert model.device_io_unavailable() is None
    for batch in (2, 3, 1, 3, 3):  # a new shape, the same again (graph capture, replay)
        x = torch.from_numpy(ramp((batch, 3, 64, 64)))
        want = model.run([x.numpy()])[0]
        xd = x.cuda()
        y = model(xd)
        assert isinstance(y, torch.Tensor) and y.device == xd.device and y.dtype == torch.float32
        assert y.shape == want.shape
        torch.cuda.current_stream().synchronize()
        assert_close(y.cpu().numpy(), want, rtol=1e-5)


@needs_cuda
@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_a_half_engine_gives_the_same_values_on_either_path(tmp_path, half):
    # One engine (channels-last half activations, casts at its boundary): a
    # device input must give exactly what the same values from the host give.
    model = kiln.compile(kiln.zoo_model("resnet_tiny", seed=1), inputs=DYNAMIC, enabled_precisions={"fp32", half},
                         **cuda_settings(tmp_path))
    assert model.device_io_unavailable() is None
    for batch in (2, 4, 2):
        x = torch.from_numpy(ramp((batch, 3, 64, 64)))
        want = model.run([x.numpy()])[0]
        y = model(x.cuda())
        torch.cuda.current_stream().synchronize()
        got = y.cpu().numpy()
        assert got.shape == want.shape
        assert np.array_equal(got, want), "max |device - host| = %g" % float(np.max(np.abs(got - want)))


@needs_cuda
def test_the_run_is_ordered_on_torchs_current_stream(tmp_path):
    # Input produced, model run and output consumed on a side stream, with
    # no synchronisation until the end: kiln must wait for the producer and
    # the consumer must wait for kiln.
    model = kiln.compile(kiln.zoo_model("resnet_tiny", seed=1), inputs=DYNAMIC, **cuda_settings(tmp_path))
    x = torch.from_numpy(ramp((4, 3, 64, 64)))
    want = model.run([x.numpy()])[0]
    side = torch.cuda.Stream()
    results = []
    with torch.cuda.stream(side):
        for k in range(4):
            xd = x.to("cuda", non_blocking=True) * (1.0 + k)  # produced on `side`
            y = model(xd)
            results.append((k, (y * 2.0).to("cpu", non_blocking=True)))  # consumed on `side`
    side.synchronize()
    for k, got in results:
        expected = model.run([x.numpy() * (1.0 + k)])[0] * 2.0
        assert_close(got.numpy(), expected, rtol=1e-5)
    assert want.shape == (4, 10)


@needs_cuda
def test_the_torch_bridge_passes_cuda_tensors_through(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        want = net(x).numpy()
    aot = kiln.torch.compile(net, inputs=[x], **cuda_settings(tmp_path))
    assert aot.device_io_unavailable() is None
    y = aot(x.cuda())
    assert y.device.type == "cuda"
    assert_close(y.cpu().numpy(), want, rtol=1e-4)
    jit = kiln.torch.jit(net, **cuda_settings(tmp_path))
    y = jit(x.cuda())
    assert y.device.type == "cuda"
    assert_close(y.cpu().numpy(), want, rtol=1e-4)


@needs_cuda
def test_a_cuda_model_with_a_host_segment_warns_once_and_copies(tmp_path):
    # Attention (a MatMul of two activations) runs on the host fallback.
    specs = [kiln.Input(shape=(1, 16), dtype="int64", name=name) for name in ("input_ids", "attention_mask")]
    model = kiln.compile(kiln.zoo_model("bert_tiny", seed=1, batch=1), inputs=specs, **cuda_settings(tmp_path))
    why = model.device_io_unavailable()
    assert why is not None and "runs on the host" in why
    args = [torch.zeros((1, 16), dtype=torch.int64, device="cuda"), torch.ones((1, 16), dtype=torch.int64,
                                                                               device="cuda")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = model(*args)
        model(*args)
    assert sum("copied through the host" in str(w.message) for w in caught) == 1
    first = first if isinstance(first, torch.Tensor) else first[0]
    assert first.device.type == "cuda"
