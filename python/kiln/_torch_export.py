"""kiln.torch.compile of a ``torch.export.ExportedProgram`` (torch >= 2):
the AOT flow with ``Dim`` ranges.

    ep = torch.export.export(net, (x,), dynamic_shapes={"x": {0: Dim("batch", min=1, max=200)}})
    model = kiln.torch.compile(ep, engine_cache_dir="/tmp/kiln_cache")

The program's graph goes through kiln.fx_translate: its parameters,
buffers and lifted constants (``ep.state_dict``, ``ep.constants``, named by
``ep.graph_signature``) become initializers, its symbolic dims stay dynamic
ONNX dims, and each user input's kiln.Input comes from the program's
``range_constraints`` (min and max) and the example it was exported with
(opt), unless ``inputs=`` gives them. The weights are those of the program.
"""

import torch

from . import _core, fx_translate
from ._core import Input


def is_exported_program(obj):
    return type(obj).__name__ == "ExportedProgram" and hasattr(obj, "graph_signature")


def _kind_name(kind):
    return getattr(kind, "name", str(kind)).upper()


def _range_of(ep, dim):
    """(min, opt, max) of one dim of a user input's example value."""
    if not fx_translate._is_sym(dim):
        return int(dim), int(dim), int(dim)
    expr = dim.node.expr
    ranges = ep.range_constraints.get(expr)
    if ranges is None:
        raise _core.InvalidArgumentError("exported dim %s has no range constraint; pass inputs=[kiln.Input(...)]"
                                         % expr)
    low, high = ranges.lower, ranges.upper
    if not getattr(high, "is_finite", True) or str(high) in ("oo", "int_oo") or int(high) > (1 << 40):
        raise _core.InvalidArgumentError(
            "exported dim %s has no upper bound: export with Dim(..., max=N) or pass inputs=[kiln.Input(...)]"
            % expr)
    low, high = max(int(low), 1), int(high)
    hint = getattr(dim.node, "hint", None)
    opt = int(hint) if hint is not None else low
    return low, min(max(opt, low), high), high


class ExportedModule:
    """A compiled ExportedProgram: call it with the program's user inputs
    (torch tensors); it returns what the program returns."""

    def __init__(self, ep, translation, model, sources=None):
        self.translation = translation
        self.model = model
        self._out_spec = getattr(getattr(ep, "call_spec", None), "out_spec", None)
        self._sources = sources or {}  # state_dict / constants name -> ConstSource

    def refit(self, weights):
        """New weights in place: ``weights`` maps the program's parameter and
        buffer names (``ep.state_dict`` keys) to tensors of their shapes, or
        is another ExportedProgram of the architecture (its state_dict and
        constants). Each initializer read from a named tensor, transform
        applied, is refitted (CompiledModel.refit); returns its stats."""
        if is_exported_program(weights):  # what this program's graph reads of it
            everything = dict(weights.state_dict)
            everything.update(dict(getattr(weights, "constants", {}) or {}))
            weights = {n: t for n, t in everything.items() if n in self._sources}
        kiln_weights = {w["name"] for w in self.model.weights()}
        values, taken = {}, {}
        for name, tensor in weights.items():
            source = self._sources.get(name)
            if source is None:
                raise _core.InvalidArgumentError("the exported program has no parameter or buffer named '%s'" % name)
            params = [t for t in self.translation.builder.params if t.param[0] is source]
            for t in params:
                transform = t.param[1]
                with torch.no_grad():
                    value = tensor.detach()
                    value = (transform(value) if transform is not None else value).to("cpu").contiguous()
                    if t.name not in kiln_weights:  # a structural constant: refit cannot change it
                        old = source.tensor.detach()
                        old = (transform(old) if transform is not None else old).to("cpu")
                        if old.shape != value.shape or not torch.equal(old, value):
                            raise _core.InvalidArgumentError(
                                "'%s' is a structural constant of the compiled model (part of its engine key): "
                                "compile again to change it" % name)
                        continue
                values[t.name] = value
            taken[name] = tensor
        stats = self.model.refit(values)
        for name, tensor in taken.items():  # later translations' reads see the new tensors
            self._sources[name].tensor = tensor
        return stats

    def __call__(self, *inputs):
        from .torch import run_torch

        flat = self.translation.rebuild(run_torch(self.model, inputs))
        flat = list(flat) if isinstance(flat, (tuple, list)) else [flat]
        if self._out_spec is not None:
            from torch.utils import _pytree

            return _pytree.tree_unflatten(flat, self._out_spec)
        return flat[0] if len(flat) == 1 else tuple(flat)

    def engines(self):
        return self.model.engines()

    def report(self):
        return self.model.report()

    @property
    def inputs(self):
        return self.model.inputs

    def save(self, path):
        self.model.save(path)

    def close(self):
        self.model.close()


def compile_exported(ep, inputs=None, **settings):
    """Translates and compiles an ExportedProgram; see the module docstring."""
    _core._validate_names(settings, "compile")
    gm = ep.graph_module
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    specs = list(ep.graph_signature.input_specs)
    if len(specs) != len(placeholders):
        raise _core.InvalidArgumentError("the exported program's signature does not match its graph")
    constants = dict(getattr(ep, "constants", {}) or {})
    state = ep.state_dict
    sources, user, by_name = {}, [], {}
    for i, spec in enumerate(specs):
        kind = _kind_name(spec.kind)
        if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            tensor = state.get(spec.target) if spec.target in state else constants.get(spec.target)
            if not isinstance(tensor, torch.Tensor):
                raise _core.InvalidArgumentError("exported %s %s is not a tensor" % (kind.lower(), spec.target))
            sources[i] = fx_translate.ConstSource(tensor)
            by_name[spec.target] = sources[i]
        elif kind == "USER_INPUT":
            user.append(i)
        else:
            raise _core.UnsupportedError("exported input %s of kind %s is not supported" % (spec.target, kind))
    for spec in ep.graph_signature.output_specs:
        if _kind_name(spec.kind) != "USER_OUTPUT":
            raise _core.UnsupportedError("the exported program mutates %s (%s); kiln runs pure graphs"
                                         % (spec.target, _kind_name(spec.kind)))
    values = fx_translate.meta_values(gm)
    translation = fx_translate.translate(gm, values=values, parameter_indices=set(),
                                         parameter_sources=sources)
    if inputs is None:
        kiln_inputs = []
        for i, t in translation.inputs:
            ranges = [_range_of(ep, d) for d in values[placeholders[i]].shape]
            kiln_inputs.append(Input(min_shape=[r[0] for r in ranges], opt_shape=[r[1] for r in ranges],
                                     max_shape=[r[2] for r in ranges], dtype=t.dtype, name=t.name))
    else:
        given = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(given) != len(translation.inputs):
            raise _core.InvalidArgumentError("inputs= has %d entries; the program has %d tensor inputs"
                                             % (len(given), len(translation.inputs)))
        kiln_inputs = []
        for spec, (_, t) in zip(given, translation.inputs):
            spec = spec if isinstance(spec, Input) else Input.from_tensor(spec)
            kiln_inputs.append(Input(spec.min_shape, spec.opt_shape, spec.max_shape, spec.dtype, t.name))
    model = _core._compile_onnx(translation.onnx_bytes(()), kiln_inputs, settings)
    return ExportedModule(ep, translation, model, by_name)
