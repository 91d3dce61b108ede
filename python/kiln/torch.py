"""kiln for PyTorch: compile an ``nn.Module`` through ``torch.onnx.export``.

    import kiln.torch
    model = kiln.torch.compile(resnet, inputs=[kiln.Input(min_shape=(1, 3, 224, 224),
                                                          opt_shape=(100, 3, 224, 224),
                                                          max_shape=(200, 3, 224, 224))],
                               engine_cache_dir="/tmp/kiln_cache")
    y = model(torch.rand(100, 3, 224, 224))      # torch tensors in and out

    jit = kiln.torch.jit(resnet, engine_cache_dir="/tmp/kiln_cache")
    y = jit(x)             # compiles for x's shapes on the first call
    y = jit(other_batch)   # a new shape compiles again, through the engine cache

The module is exported in memory (opset 17; the dims whose min and max
differ become dynamic axes) and compiled from the ONNX bytes; nothing is
written to disk but the engine cache. The export captures the weights the
module has at compile time. kiln runs on the CPU: tensors on another device
are copied to the CPU and the outputs back to the first input's device.

On torch >= 2.0, importing this module registers ``torch.compile(model,
backend="kiln", options={...settings})``; ``import kiln`` does so too when
torch is already imported, and the package declares it as a
``torch_dynamo_backends`` entry point for torch to find by name. That
backend does not go through torch.onnx.export (which cannot export dynamo's
graphs): each FX graph is translated by kiln.fx_translate and run by an
FxModule. ``compile`` of a ``torch.export.ExportedProgram`` uses the same
translator (kiln._torch_export).
"""

import io
import threading
import warnings

import numpy as np
import torch

from . import _core, _torch_export, fx_translate
from ._core import Input

OPSET = 17


def _as_inputs(inputs):
    if inputs is None:
        raise TypeError("kiln.torch.compile: inputs= is required (kiln.Input or example tensors, one per input)")
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    specs = []
    for i, x in enumerate(inputs):
        spec = x if isinstance(x, Input) else Input.from_tensor(x)
        specs.append(Input(spec.min_shape, spec.opt_shape, spec.max_shape, spec.dtype, spec.name or "input_%d" % i))
    return specs


def _torch_dtype(name):
    return getattr(torch, name if name != "bool" else "bool")


def export(module, inputs, output_count=None):
    """ONNX bytes of ``module`` for ``inputs`` (kiln.Input), exported with
    example tensors of each input's opt shape; dims whose min and max differ
    are dynamic axes."""
    names = [spec.name for spec in inputs]
    examples = tuple(torch.zeros(spec.opt_shape, dtype=_torch_dtype(spec.dtype)) for spec in inputs)
    dynamic_axes = {}
    for spec in inputs:
        axes = {d: "%s_dim%d" % (spec.name, d) for d in range(len(spec.min_shape))
                if spec.min_shape[d] != spec.max_shape[d]}
        if axes:
            dynamic_axes[spec.name] = axes
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, examples, buffer, opset_version=OPSET, input_names=names,
                          dynamic_axes=dynamic_axes or None, do_constant_folding=True)
    return buffer.getvalue()


def _to_numpy(x):
    if not isinstance(x, torch.Tensor):
        return np.asarray(x)
    x = x.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    if x.dtype == torch.bfloat16:
        raise _core.InvalidArgumentError("bfloat16 tensors are not accepted as inputs by the Python package yet")
    return x.contiguous().numpy()  # zero copy for a contiguous CPU tensor


def _to_torch(array, device):
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    t = torch.from_numpy(array)  # shares the kiln-owned memory
    return t if device is None or device.type == "cpu" else t.to(device)


def run_torch(model, inputs):
    """Runs a kiln CompiledModel on torch tensors; returns torch tensors."""
    device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), None)
    arrays = [_to_numpy(x) for x in inputs]
    return [_to_torch(a, device) for a in model.run(arrays)]


class CompiledModule(_core.CompiledModel):
    """A kiln CompiledModel compiled from an nn.Module: torch tensors in and out."""

    def __call__(self, *inputs):
        outputs = run_torch(self, inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def compile(module, inputs=None, **settings):
    """Exports ``module`` and compiles it with kiln (the tutorial's AOT
    flow): ``inputs`` is one kiln.Input (min/opt/max shapes) or example
    tensor per forward argument; settings as kiln.compile. A
    ``torch.export.ExportedProgram`` is translated from its graph instead,
    its Dim ranges giving the input ranges (kiln._torch_export)."""
    _core._validate_names(settings, "compile")
    if _torch_export.is_exported_program(module):
        return _torch_export.compile_exported(module, inputs, **settings)
    specs = _as_inputs(inputs)
    model = _core._compile_onnx(export(module, specs), specs, settings)
    model.__class__ = CompiledModule
    return model


class JitModule:
    """Compiles on the first call, and again for each new input signature
    (shapes and dtypes), always through the engine cache: a signature seen
    before, in this process or another, is a load and refit, not a build.
    ``reset()`` drops the compiled models as ``torch._dynamo.reset()`` does;
    the engine cache stays. Calls may come from several threads."""

    def __init__(self, module, **settings):
        _core._validate_names(settings, "jit")
        self.module = module
        self.settings = settings
        self._models = {}
        self._lock = threading.Lock()
        self.last_model = None

    def _model_for(self, inputs):
        signature = tuple((tuple(x.shape), str(x.dtype)) for x in inputs)
        with self._lock:
            model = self._models.get(signature)
            if model is None:
                specs = [Input(shape=tuple(x.shape), dtype=x.dtype, name="input_%d" % i) for i, x in enumerate(inputs)]
                model = _core._compile_onnx(export(self.module, specs), specs, self.settings)
                model.__class__ = CompiledModule
                self._models[signature] = model
            self.last_model = model
            return model

    def __call__(self, *inputs):
        return self._model_for(inputs)(*inputs)

    def engines(self):
        """The engines of the model that served the last call."""
        return self.last_model.engines() if self.last_model else []

    def reset(self):
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()
            self.last_model = None


def jit(module, **settings):
    """A JitModule over ``module``; settings as kiln.compile."""
    return JitModule(module, **settings)


class FxModule:
    """A torch.fx GraphModule run by kiln: what ``torch.compile(backend="kiln")``
    hands dynamo for each graph it captures.

    The graph is translated to ONNX by kiln.fx_translate (parameters and
    buffers become initializers) and compiled for the exact input shapes of
    the first call, again for each new signature, always through the engine
    cache. Each call feeds only the non-parameter inputs. When the parameter
    tensors of a call differ from those the model was compiled with (another
    tensor, or the same tensor changed in place: ``load_state_dict``,
    ``weight.mul_``), the model is compiled again with the new weights, which
    the engine cache serves as a hit and a refit, so results are never
    stale. If translation or compile fails, the graph runs eagerly from then
    on, after one ``RuntimeWarning`` naming the reason.
    """

    def __init__(self, gm, example_inputs=(), parameter_indices=None, **settings):
        _core._validate_names(settings, "torch.compile(backend='kiln') options")
        self.gm = gm
        self.settings = settings
        self.parameter_indices = (set(parameter_indices) if parameter_indices is not None else
                                  fx_translate.parameter_placeholders(gm, list(example_inputs)))
        self.fallback_reason = None
        self.refits = 0  # recompiles after a weight change
        self.last_model = None
        self._entries = {}  # input signature -> _FxEntry
        self._lock = threading.Lock()

    def _signature(self, args):
        parts = []
        for a in args:
            if isinstance(a, torch.Tensor):
                parts.append((tuple(a.shape), a.dtype))
            elif isinstance(a, (int, float, bool, str, type(None))):
                parts.append(("value", type(a).__name__, a))
            else:
                parts.append(("object", repr(a)))
        return tuple(parts)

    @staticmethod
    def _versions(entry, args):
        """What identifies the current weights: each parameter's storage and
        its in-place version counter."""
        return tuple((t.data_ptr(), t._version) for _, t in entry.translation.parameters(args))

    def _compile(self, translation, args):
        specs = [Input(shape=t.shape, dtype=t.dtype, name=t.name) for _, t in translation.inputs]
        return _core._compile_onnx(translation.onnx_bytes(args), specs, self.settings)

    def _entry_for(self, args):
        signature = self._signature(args)
        entry = self._entries.get(signature)
        if entry is None:
            if not self._entries:  # the real values passed: a Parameter the examples hid is one too
                self.parameter_indices |= {i for i, a in enumerate(args) if isinstance(a, torch.nn.Parameter)}
            translation = fx_translate.translate(self.gm, args, self.parameter_indices)
            entry = _FxEntry(translation, None, None)
            entry.model = self._compile(translation, args)
            entry.versions = self._versions(entry, args)
            self._entries[signature] = entry
        else:
            versions = self._versions(entry, args)
            if versions != entry.versions:
                model = self._compile(entry.translation, args)  # same graph: an engine cache hit + refit
                # the old model is not closed: a call on another thread may still hold it; it goes with its last user
                entry.model, entry.versions = model, versions
                self.refits += 1
        self.last_model = entry.model
        return entry

    def _fall_back(self, error):
        self.fallback_reason = "%s: %s" % (type(error).__name__, error)
        warnings.warn("kiln: running this graph eagerly (torch.compile backend 'kiln' could not compile it): %s"
                      % self.fallback_reason, RuntimeWarning, stacklevel=3)

    def __call__(self, *args):
        if self.fallback_reason is None:
            try:
                with self._lock:
                    entry = self._entry_for(args)
            except Exception as e:  # noqa: B902 - any failure to compile runs the graph eagerly
                self._fall_back(e)
            else:
                inputs = [args[i] for i in entry.translation.input_indices]
                return entry.translation.rebuild(run_torch(entry.model, inputs))
        return self.gm.forward(*args)

    def engines(self):
        """The engines of the model that served the last call."""
        return self.last_model.engines() if self.last_model else []


class _FxEntry:
    __slots__ = ("translation", "model", "versions")

    def __init__(self, translation, model, versions):
        self.translation = translation
        self.model = model
        self.versions = versions


def dynamo_backend(gm, example_inputs, options=None):
    """``torch.compile(model, backend="kiln", options={...settings})``: each
    graph dynamo captures runs through an FxModule. A graph with an op the
    translator does not know runs eagerly (``gm.forward``) after a warning."""
    options = dict(options or {})
    _core._validate_names(options, "torch.compile(backend='kiln') options")
    unsupported = fx_translate.unsupported_nodes(gm)
    if unsupported:
        warnings.warn("kiln: running this graph eagerly (torch.compile backend 'kiln' could not compile it): "
                      + "; ".join(unsupported), RuntimeWarning, stacklevel=2)
        return gm.forward
    return FxModule(gm, example_inputs, **options)


def _register_dynamo_backend():
    major = int(torch.__version__.split(".")[0])
    if major < 2:
        return False  # torch.compile does not exist before 2.0
    from torch._dynamo import list_backends, register_backend

    if "kiln" not in list_backends(exclude_tags=()):
        register_backend(name="kiln")(dynamo_backend)
    return True


DYNAMO_BACKEND_REGISTERED = _register_dynamo_backend()
