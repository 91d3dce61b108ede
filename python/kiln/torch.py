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
module has at compile time; ``CompiledModule.refit(module)`` (or a dict of
tensors) gives the compiled model new weights in place, and ``jit`` and the
dynamo backend do so by themselves when a parameter changes (another
tensor, or the same one changed in place), without compiling again.

Devices: a model compiled with ``backend="cuda"`` whose whole graph is one
engine (``CompiledModel.device_io_unavailable()`` is None) runs on CUDA
tensors in place: their ``data_ptr()`` is handed to kiln, the outputs are
``torch.empty(..., device=input.device)`` that kiln writes, and the run is
enqueued on ``torch.cuda.current_stream()`` (kiln orders its own stream
after it with events), with no copy through the host and no
synchronisation: as any torch op, the outputs are ready for later work on
that stream. Every other case (host inputs, a cpu-backend model, a model
with a host fallback segment: warned once) copies tensors to the CPU and
the outputs back to the first input's device.

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

from . import _core, _onnx_proto, _torch_export, fx_translate
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


_TORCH_TO_KILN = {
    torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.int16: 5, torch.int32: 6, torch.int64: 7,
    torch.bool: 9, torch.float16: 10, torch.float64: 11, torch.bfloat16: 16,
}
_KILN_TO_TORCH = {code: dtype for dtype, code in _TORCH_TO_KILN.items()}


def _cuda_device(inputs):
    """The CUDA device of ``inputs`` when every one is a CUDA tensor on that
    one device (and of a dtype kiln holds); otherwise None."""
    device = None
    for x in inputs:
        if not isinstance(x, torch.Tensor) or x.device.type != "cuda" or x.dtype not in _TORCH_TO_KILN:
            return None
        if device is None:
            device = x.device
        elif x.device != device:
            return None
    return device


def _run_cuda(model, inputs, device):
    """Runs on CUDA tensors in place, on torch's current stream of ``device``:
    outputs are fresh torch tensors that kiln writes; nothing waits."""
    tensors = [x.detach().contiguous() for x in inputs]  # a no-op for contiguous inputs
    described = [(_TORCH_TO_KILN[x.dtype], tuple(x.shape), x.data_ptr(), device.index) for x in tensors]

    def allocate(code, shape):
        t = torch.empty(shape, dtype=_KILN_TO_TORCH[code], device=device)
        return t.data_ptr(), t

    stream = torch.cuda.current_stream(device).cuda_stream
    # The inputs (and any contiguous copies) may be freed when this returns:
    # torch's caching allocator reuses their memory only for work enqueued
    # later on this stream, which kiln's events order after the run.
    return model.run_device(described, allocate, stream)


def run_torch(model, inputs):
    """Runs a kiln CompiledModel on torch tensors; returns torch tensors."""
    device = _cuda_device(inputs) if inputs else None
    if device is not None:
        why = model.device_io_unavailable()
        if why is None:
            return _run_cuda(model, inputs, device)
        if not getattr(model, "_warned_device_io", False):
            # A cuda model that cannot run on device memory: say why once,
            # since every call now pays two copies through the host.
            model._warned_device_io = True
            if model.report().get("backend") == "cuda":
                warnings.warn("kiln: CUDA tensors are copied through the host for this model: %s" % why,
                              RuntimeWarning)
    device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), None)
    arrays = [_to_numpy(x) for x in inputs]
    return [_to_torch(a, device) for a in model.run(arrays)]


class _ExportedWeights:
    """What an export of a module gave the compiled model, to refit it from
    the module's later weights: the model's weight names, whether every one
    is a parameter or buffer of the module under its own name and with its
    value (torch.onnx.export transforms some: a BatchNorm fused into its conv
    becomes ``onnx::Conv_N`` in the legacy exporter, and may keep the conv's
    name in the dynamo exporter), and the bytes of the other initializers, structural
    constants that a refit cannot change."""

    def __init__(self, model, onnx_bytes, module):
        self.weight_names = {w["name"] for w in model.weights()}
        initializers = _onnx_proto.read_initializers(onnx_bytes)
        state = module.state_dict(keep_vars=True)
        # A name is not enough: an exporter's optimizer may fold a BatchNorm
        # into its conv and keep the conv's name for the folded weight. Only
        # a weight whose exported value is the tensor's own is read directly.
        self.direct = all(n in state and n in initializers and np.array_equal(initializers[n], _to_numpy(state[n]))
                          for n in self.weight_names)
        self.structural = {n: a.tobytes() for n, a in initializers.items() if n not in self.weight_names}

    def refit_values(self, onnx_bytes):
        """The weights of a new export of the module, or None when it changed
        a structural constant (or the graph): then only a compile helps."""
        initializers = _onnx_proto.read_initializers(onnx_bytes)
        structural = {n: a.tobytes() for n, a in initializers.items() if n not in self.weight_names}
        if structural != self.structural or not self.weight_names <= set(initializers):
            return None
        return {n: initializers[n] for n in self.weight_names}


def _state_versions(module):
    """What identifies a module's current weights: each parameter's and
    buffer's storage and in-place version counter."""
    return {n: (t.data_ptr(), t._version) for n, t in module.state_dict(keep_vars=True).items()}


def _refit_from_module(model, module, specs, exported, changed=None):
    """Refits ``model`` (compiled from an export of ``module`` with ``specs``)
    with the module's current weights. With ``changed`` (names of the
    parameters and buffers that changed) and weights that are all the
    module's own tensors, straight from them; otherwise from a new export.
    Returns the refit's stats, or None when a structural constant changed."""
    if changed is not None and exported.direct and changed <= exported.weight_names:
        state = module.state_dict(keep_vars=True)
        return model.refit({n: state[n] for n in changed})
    values = exported.refit_values(export(module, specs))
    return None if values is None else model.refit(values)


class CompiledModule(_core.CompiledModel):
    """A kiln CompiledModel compiled from an nn.Module: torch tensors in and out."""

    def __call__(self, *inputs):
        outputs = run_torch(self, inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def refit(self, weights):
        """New weights in place (CompiledModel.refit): ``weights`` is a dict
        of initializer names to tensors, or an ``nn.Module`` of the compiled
        architecture (the compiled one after ``load_state_dict``, or
        another), whose weights are exported and refitted. Raises
        InvalidArgumentError when the module differs in a structural
        constant or its graph: compile it instead."""
        if not isinstance(weights, torch.nn.Module):
            return super().refit(weights)
        exported = getattr(self, "_exported", None)
        if exported is None:
            raise _core.InvalidArgumentError("refit from a module needs a model compiled by kiln.torch.compile")
        try:
            stats = _refit_from_module(self, weights, self._specs, exported)
        except _core.Error:
            raise
        except Exception as e:  # noqa: B902 - torch's export of a module that does not fit the inputs
            raise _core.InvalidArgumentError("cannot export the module with the compiled inputs: %s: %s"
                                             % (type(e).__name__, e)) from e
        if stats is None:
            raise _core.InvalidArgumentError("the module's export differs from the compiled one beyond weight "
                                             "values (a structural constant or the graph): compile it instead")
        return stats


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
    onnx_bytes = export(module, specs)
    model = _core._compile_onnx(onnx_bytes, specs, settings)
    model.__class__ = CompiledModule
    model._specs = specs
    model._exported = _ExportedWeights(model, onnx_bytes, module)
    return model


class JitModule:
    """Compiles on the first call, and again for each new input signature
    (shapes and dtypes), always through the engine cache: a signature seen
    before, in this process or another, is a load and refit, not a build.
    When the module's parameters or buffers change (another tensor, or the
    same one changed in place: ``load_state_dict``, an optimizer step), the
    next call refits the compiled model in place (``refits`` counts them),
    from the tensors themselves where the export kept every weight as is,
    else from a new export; only a changed structural constant compiles
    again (``recompiles``). ``reset()`` drops the compiled models as
    ``torch._dynamo.reset()`` does; the engine cache stays. Calls may come
    from several threads."""

    def __init__(self, module, **settings):
        _core._validate_names(settings, "jit")
        self.module = module
        self.settings = settings
        self._models = {}  # signature -> _JitEntry
        self._lock = threading.Lock()
        self.last_model = None
        self.refits = 0
        self.recompiles = 0

    def _compile(self, specs):
        onnx_bytes = export(self.module, specs)
        model = _core._compile_onnx(onnx_bytes, specs, self.settings)
        model.__class__ = CompiledModule
        model._specs = specs
        model._exported = _ExportedWeights(model, onnx_bytes, self.module)
        return model

    def _model_for(self, inputs):
        signature = tuple((tuple(x.shape), str(x.dtype)) for x in inputs)
        with self._lock:
            versions = _state_versions(self.module)
            entry = self._models.get(signature)
            if entry is None:
                specs = [Input(shape=tuple(x.shape), dtype=x.dtype, name="input_%d" % i) for i, x in enumerate(inputs)]
                entry = _JitEntry(self._compile(specs), versions)
                self._models[signature] = entry
            elif versions != entry.versions:
                changed = {n for n in set(versions) | set(entry.versions) if versions.get(n) != entry.versions.get(n)}
                model = entry.model
                try:
                    stats = _refit_from_module(model, self.module, model._specs, model._exported, changed)
                except _core.Error:
                    stats = None
                if stats is None:  # a structural constant changed: only a compile helps
                    entry.model = self._compile(model._specs)
                    self.recompiles += 1
                else:
                    self.refits += 1
                entry.versions = versions
            self.last_model = entry.model
            return entry.model

    def __call__(self, *inputs):
        return self._model_for(inputs)(*inputs)

    def engines(self):
        """The engines of the model that served the last call."""
        return self.last_model.engines() if self.last_model else []

    def reset(self):
        with self._lock:
            for entry in self._models.values():
                entry.model.close()
            self._models.clear()
            self.last_model = None


class _JitEntry:
    __slots__ = ("model", "versions")

    def __init__(self, model, versions):
        self.model = model
        self.versions = versions


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
    ``weight.mul_``), the changed initializers are refitted into the
    compiled model in place (CompiledModel.refit: no import, lowering or
    cache lookup), so results are never stale; ``refits`` counts weight
    changes, ``recompiles`` those that needed a compile (a changed
    parameter that kiln holds as a structural constant, such as a
    one-element tensor). If translation or compile fails, the graph runs eagerly from then
    on, after one ``RuntimeWarning`` naming the reason.
    """

    def __init__(self, gm, example_inputs=(), parameter_indices=None, **settings):
        _core._validate_names(settings, "torch.compile(backend='kiln') options")
        self.gm = gm
        self.settings = settings
        self.parameter_indices = (set(parameter_indices) if parameter_indices is not None else
                                  fx_translate.parameter_placeholders(gm, list(example_inputs)))
        self.fallback_reason = None
        self.refits = 0  # weight changes handled (in place, or by a compile)
        self.recompiles = 0  # of those, the ones that needed a compile
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
            entry.weight_names = {w["name"] for w in entry.model.weights()}
            entry.versions = self._versions(entry, args)
            self._entries[signature] = entry
        else:
            versions = self._versions(entry, args)
            if versions != entry.versions:
                self._update_weights(entry, args, versions)
        self.last_model = entry.model
        return entry

    def _update_weights(self, entry, args, versions):
        """The changed initializers refitted in place; a compile when one of
        them is not a kiln weight (a structural constant) or the refit fails."""
        changed = {t.name for t, old, new in zip(entry.translation.builder.params, entry.versions, versions)
                   if old != new}
        if changed <= entry.weight_names:
            try:
                entry.model.refit(entry.translation.initializer_values(args, changed))
            except _core.Error:
                pass  # compiled again below, which reports what is wrong if anything is
            else:
                entry.versions = versions
                self.refits += 1
                return
        model = self._compile(entry.translation, args)  # same graph: an engine cache hit + refit
        # the old model is not closed: a call on another thread may still hold it; it goes with its last user
        entry.model, entry.versions = model, versions
        entry.weight_names = {w["name"] for w in model.weights()}
        self.refits += 1
        self.recompiles += 1

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
    __slots__ = ("translation", "model", "versions", "weight_names")

    def __init__(self, translation, model, versions):
        self.translation = translation
        self.model = model
        self.versions = versions
        self.weight_names = set()


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
