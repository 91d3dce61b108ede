"""FX GraphModule -> ONNX (opset 17), for kiln.

    from kiln.fx_translate import translate
    t = translate(gm, example_inputs)        # walks gm.graph once
    onnx_bytes = t.onnx_bytes(current_inputs) # initializers from the tensors given

``torch.onnx.export`` cannot export the GraphModules dynamo hands a
``torch.compile`` backend (parameters arrive as graph inputs, the ops are
torch-level call_functions), so kiln translates FX graphs itself. Both FX
styles are handled: ``torch.fx.symbolic_trace``'s call_module nodes with
parameters read from the modules, and dynamo's (>= 2.5) inlined modules
whose parameters and buffers are placeholders.

Parameters and buffers become ONNX initializers, never graph inputs: kiln
treats initializers as refittable weights (the engine cache keys them by
shape, not value, and a hit refits them) and its oneDNN layers need
constant weights. A placeholder is a parameter when its example value is
an ``nn.Parameter``, its name or dynamo source says it is a registered
buffer, or the caller lists it; get_attr nodes and call_module weights are
parameters too. ``Translation.onnx_bytes`` reads each parameter's current
tensor, so the same translation serves a refit after a weight change.

Shapes come from running the graph once on the example inputs (or from
the nodes' ``val`` metadata for torch.export graphs, whose symbolic dims
stay dynamic). An op the translator does not know raises
``FxTranslationError`` naming the FX node and its target.
"""

import numpy as np
import torch

from . import _core
from . import _onnx_proto as proto

OPSET = 17


class FxTranslationError(_core.UnsupportedError):
    """An FX node the translator cannot express in ONNX (names node and target)."""


def target_name(target):
    """A readable name of an FX node target."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    if type(target).__name__ in ("OpOverload", "OpOverloadPacket"):
        return str(target)
    return "%s.%s" % (module, name) if module else name


def describe(node):
    return "FX node '%s' (%s %s)" % (node.name, node.op, target_name(node.target))


# ---- Values ------------------------------------------------------------------


class T:
    """A tensor in the ONNX graph: its ONNX name, torch dtype and shape
    (ints, None for a dim only known at run time). ``param`` is set on
    initializers: (source, transform) to read the current weight."""

    __slots__ = ("name", "dtype", "shape", "param")

    def __init__(self, name, dtype, shape, param=None):
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape) if shape is not None else None
        self.param = param

    @property
    def rank(self):
        return len(self.shape)

    def __repr__(self):
        return "T(%s, %s, %s)" % (self.name, self.dtype, self.shape)


class Sym:
    """An int only known at run time (a dynamic dim): an ONNX int64 tensor
    of shape [1]."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


_TORCH_TO_NUMPY = {
    torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16, torch.int64: np.int64,
    torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_,
}


def numpy_dtype(dtype):
    try:
        return np.dtype(_TORCH_TO_NUMPY[dtype])
    except KeyError:
        raise FxTranslationError("dtype %s has no ONNX type kiln handles" % dtype) from None


def onnx_type(dtype):
    return proto.onnx_dtype(numpy_dtype(dtype))


# ---- Parameter sources -------------------------------------------------------


class InputSource:
    """A parameter passed as graph input ``index`` (dynamo, torch.export)."""

    def __init__(self, index):
        self.index = index

    def get(self, gm, args):
        return args[self.index]


class AttrSource:
    """A parameter or buffer of the GraphModule (get_attr, call_module)."""

    def __init__(self, qualname):
        self.qualname = qualname

    def get(self, gm, args):
        return _get_attr(gm, self.qualname)


class ConstSource:
    """A tensor fixed at translation time (torch.export's lifted constants)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def get(self, gm, args):
        return self.tensor


# ---- ONNX graph builder ------------------------------------------------------


class Builder:
    """Accumulates ONNX nodes, constants and parameter initializers."""

    def __init__(self):
        self.nodes = []  # encoded NodeProtos
        self.params = []  # initializer Ts, each with .param = (source, transform)
        self._param_names = {}  # (source key, transform key) -> T
        self.examples = {}  # initializer name -> its source tensor at translation time
        self._names = set()
        self._count = 0

    def fresh(self, hint):
        hint = "".join(c if c.isalnum() or c in "_." else "_" for c in str(hint)) or "v"
        name = hint
        while name in self._names:
            self._count += 1
            name = "%s_%d" % (hint, self._count)
        self._names.add(name)
        return name

    def op(self, op_type, inputs, dtype, shape=None, hint=None, outputs=1, **attrs):
        """Appends one node; returns its output T (or a list of them).
        ``inputs`` are T, Sym or None (an omitted optional input)."""
        names = ["" if i is None else i.name for i in inputs]
        outs = [T(self.fresh(hint or op_type), dtype, shape) for _ in range(outputs)]
        self.nodes.append(proto.node(op_type, names, [o.name for o in outs], self.fresh("n_" + op_type),
                                     {k: v for k, v in attrs.items() if v is not None}))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=None):
        """A Constant node (shape tensors, scalars): hashed by value by kiln."""
        array = np.asarray(value, dtype=dtype)
        torch_dtype = torch.from_numpy(np.zeros(0, dtype=array.dtype)).dtype
        return self.op("Constant", [], torch_dtype, array.shape, hint="const", value=array)

    def ints(self, values):
        """An int64 1-D tensor from ints and Syms (a shape operand)."""
        if all(isinstance(v, (int, np.integer)) for v in values):
            return self.const(np.array([int(v) for v in values], dtype=np.int64))
        parts = [v if isinstance(v, Sym) else self.const(np.array([int(v)], dtype=np.int64)) for v in values]
        return self.op("Concat", parts, torch.int64, (len(values),), axis=0)

    def param(self, source, example, transform=None, hint="param"):
        """An initializer read from ``source`` (transform applied) at each
        serialization; the same source and transform give the same T."""
        key = (id(source) if not isinstance(source, (InputSource, AttrSource)) else
               (type(source).__name__, getattr(source, "index", None), getattr(source, "qualname", None)),
               transform.key if transform is not None else None)
        found = self._param_names.get(key)
        if found is not None:
            return found
        value = example if transform is None else transform(example)
        t = T(self.fresh(hint), value.dtype, tuple(value.shape), param=(source, transform))
        self._param_names[key] = t
        self.examples[t.name] = example
        self.params.append(t)
        return t


class Transform:
    """A layout change of a parameter done in torch at serialization (so the
    initializer stays a refittable weight rather than a Transpose node)."""

    def __init__(self, key, fn, inner=None):
        self.key = key if inner is None else (inner.key, key)
        self.fn = fn
        self.inner = inner

    def __call__(self, tensor):
        return self.fn(tensor if self.inner is None else self.inner(tensor))


# ---- Translation -------------------------------------------------------------


class Translation:
    """The result of translate(): ONNX nodes plus how to read the inputs,
    the parameters and the outputs of one FX graph."""

    def __init__(self, gm, builder, inputs, outputs, output_tree, param_indices):
        self.gm = gm
        self.builder = builder
        self.inputs = inputs  # [(placeholder index, T)] fed at run time
        self.outputs = outputs  # [T] ONNX outputs
        self.output_tree = output_tree  # nested tuples/lists of _Out (ONNX output i) and _Value
        self.param_indices = param_indices  # placeholder indices read as initializers

    @property
    def input_indices(self):
        return [i for i, _ in self.inputs]

    def parameters(self, args):
        """[(initializer name, current torch tensor before transform)] for ``args``."""
        return [(t.name, t.param[0].get(self.gm, args)) for t in self.builder.params]

    def initializer_values(self, args=(), names=None):
        """{initializer name: numpy array} from the current parameter tensors,
        transforms applied, as onnx_bytes writes them; only ``names`` when
        given (what CompiledModel.refit takes after a weight change)."""
        values = {}
        for t in self.builder.params:
            if names is not None and t.name not in names:
                continue
            source, transform = t.param
            value = source.get(self.gm, args)
            with torch.no_grad():
                value = value.detach()
                if transform is not None:
                    value = transform(value)
                array = value.to("cpu").contiguous().numpy()
            if tuple(array.shape) != t.shape:
                raise _core.InvalidArgumentError("parameter %s changed shape from %s to %s; compile again"
                                                 % (t.name, t.shape, tuple(array.shape)))
            values[t.name] = array
        return values

    def onnx_bytes(self, args=()):
        """The model, with initializers from the current parameter tensors
        (``args``: the graph's inputs, for parameters passed as inputs)."""
        inits = [proto.tensor_chunks(name, array) for name, array in self.initializer_values(args).items()]
        inputs = [proto.value_info(t.name, onnx_type(t.dtype),
                                   [d if d is not None else "%s_d%d" % (t.name, k) for k, d in enumerate(t.shape)])
                  for _, t in self.inputs]
        outputs = [proto.value_info(t.name, onnx_type(t.dtype),
                                    [d if d is not None else "%s_d%d" % (t.name, k) for k, d in enumerate(t.shape)])
                   for t in self.outputs]
        return proto.model("kiln_fx", self.builder.nodes, inits, inputs, outputs, OPSET)

    def rebuild(self, outputs):
        """The graph's output structure from kiln's output tensors."""

        def build(item):
            if isinstance(item, list):
                return [build(x) for x in item]
            if isinstance(item, tuple):
                return tuple(build(x) for x in item)
            return outputs[item.index] if isinstance(item, _Out) else item.value

        return build(self.output_tree)


# ---- Shapes ------------------------------------------------------------------


def _is_sym(x):
    return type(x).__name__ in ("SymInt", "SymFloat", "SymBool")


def _meta_of(value):
    """(dtype, shape) of an example value (a tensor, FakeTensor or TensorMetadata)."""
    shape = tuple(None if _is_sym(d) else int(d) for d in value.shape)
    return value.dtype, shape


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        result = super().run_node(n)
        self.values[n] = result
        return result


def example_values(gm, args):
    """Every node's value from one eager run of ``gm`` on ``args`` (tensor
    inputs cloned so in-place ops cannot change the caller's tensors)."""
    args = [a.clone() if isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter) else a for a in args]
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(*args)
    return recorder.values


def meta_values(gm):
    """Every node's value from its metadata (torch.export, dynamo)."""
    values = {}
    for n in gm.graph.nodes:
        for key in ("val", "example_value", "tensor_meta"):
            if key in n.meta:
                values[n] = n.meta[key]
                break
    return values


# ---- Parameters ----------------------------------------------------------------


def _is_buffer_placeholder(node):
    """dynamo names a lifted buffer L_self_modules_bn_buffers_running_mean_
    and records its source (L['self']._modules['bn']._buffers['running_mean'])."""
    if "_buffers_" in node.name:
        return True
    grapharg = node.meta.get("grapharg")
    source = getattr(grapharg, "source", None)
    name = getattr(source, "name", "")
    name = name() if callable(name) else str(name)  # a method before torch 2.6, a property since
    return "_buffers[" in name or "_parameters[" in name


def parameter_placeholders(gm, example_inputs):
    """Indices of the placeholders that hold parameters or buffers."""
    found = set()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        example = example_inputs[i] if i < len(example_inputs) else None
        if isinstance(example, torch.nn.Parameter) or isinstance(node.meta.get("example_value"), torch.nn.Parameter):
            found.add(i)
        elif isinstance(example, torch.Tensor) and _is_buffer_placeholder(node):
            found.add(i)
    return found


# ---- The walk ----------------------------------------------------------------


class Context:
    """What an op handler sees: the builder, the node and its example value."""

    def __init__(self, builder, gm, node, example):
        self.b = builder
        self.gm = gm
        self.node = node
        self.example = example

    def fail(self, why):
        raise FxTranslationError("%s: %s" % (describe(self.node), why))

    def out_meta(self):
        """(dtype, shape) of this node's tensor value."""
        value = self.example
        if isinstance(value, (tuple, list)):
            value = value[0]
        if value is None or not hasattr(value, "dtype"):
            self.fail("no example value with a dtype")
        return _meta_of(value)


def translate(gm, example_inputs=None, parameter_indices=None, values=None, input_names=None,
              parameter_sources=None):
    """Translates ``gm`` (a torch.fx.GraphModule) into a Translation.

    ``example_inputs``: one value per placeholder (tensors, ints); shapes
    and dtypes come from running ``gm`` on them. ``values`` instead gives
    each node's example value (torch.export's metadata). Placeholders in
    ``parameter_indices`` (default: parameter_placeholders()) become
    initializers; the other tensor placeholders are the ONNX inputs, named
    ``input_names`` or after the placeholders. ``parameter_sources`` maps
    placeholder indices to where their tensors live when they are not
    graph inputs at run time (torch.export's state dict)."""
    from . import _fx_ops

    example_inputs = list(example_inputs or [])
    if values is None:
        values = example_values(gm, example_inputs)
    if parameter_indices is None:
        parameter_indices = parameter_placeholders(gm, example_inputs)
    b = Builder()
    env = {}
    inputs = []
    placeholder_index = 0
    output_tree = None
    for node in gm.graph.nodes:
        example = values.get(node)
        if node.op == "placeholder":
            i = placeholder_index
            placeholder_index += 1
            if example is None and i < len(example_inputs):
                example = example_inputs[i]
            if parameter_sources and i in parameter_sources:
                source = parameter_sources[i]
                env[node] = b.param(source, source.get(gm, ()), hint=node.name)
            elif i in parameter_indices:
                env[node] = b.param(InputSource(i), example, hint=node.name)
            elif isinstance(example, torch.Tensor) or hasattr(example, "shape") and hasattr(example, "dtype"):
                dtype, shape = _meta_of(example)
                name = input_names[len(inputs)] if input_names and len(inputs) < len(input_names) else node.name
                t = T(b.fresh(name), dtype, shape)
                inputs.append((i, t))
                env[node] = t
            elif _is_sym(example):
                # A dynamic int input of a dynamo graph: the example run made
                # every shape concrete, so the compiled graph is specialized to it.
                env[node] = int(example)
            else:
                env[node] = example  # ints, floats, None: constants of this signature
            continue
        if node.op == "output":
            output_tree, outs = _outputs(b, node, env, {t.name for _, t in inputs})
            break
        ctx = Context(b, gm, node, example)
        args = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "get_attr":
            value = _get_attr(gm, node.target)
            env[node] = b.param(AttrSource(node.target), value, hint=node.target) if isinstance(
                value, torch.Tensor) else value
            continue
        result = _fx_ops.run(ctx, args, kwargs)
        if isinstance(result, T) and result.param is None and example is not None and hasattr(example, "shape"):
            result.dtype, result.shape = _meta_of(example)  # the truth, over what a handler inferred
        env[node] = result
        if _fx_ops.is_inplace(node) and node.args and isinstance(node.args[0], torch.fx.Node):
            env[node.args[0]] = result  # later readers of the mutated tensor see the new value
    return Translation(gm, b, inputs, outs, output_tree, set(parameter_indices) | set(parameter_sources or ()))


def unsupported_nodes(gm):
    """Descriptions of the call nodes no handler takes (empty when the
    translator knows every op; arguments are checked only when translating)."""
    from . import _fx_ops

    return ["%s: %s" % (describe(n), _fx_ops.unsupported_reason(gm, n)) for n in gm.graph.nodes
            if n.op in ("call_function", "call_method", "call_module") and _fx_ops.handler_for(gm, n) is None]


def _get_attr(gm, qualname):
    obj = gm
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Out:
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class _Value:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _outputs(b, node, env, graph_inputs):
    """The output node's structure, with each tensor as ("out", i)."""
    outs = []
    seen = set()

    def leaf(value):
        if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
            items = [leaf(v) for v in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, T):
            if value.name in seen or value.param is not None or value.name in graph_inputs:
                # each ONNX output must be its own node output, not an input or initializer
                value = b.op("Identity", [value], value.dtype, value.shape, hint="out")
            seen.add(value.name)
            outs.append(value)
            return _Out(len(outs) - 1)
        if isinstance(value, Sym):
            raise FxTranslationError("%s: a graph output is a dynamic int" % describe(node))
        return _Value(value)

    return leaf(torch.fx.node.map_arg(node.args[0], lambda n: env[n])), outs
