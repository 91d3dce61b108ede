"""A bf16-emulating copy of an ONNX model, and the corpus case's second look at a bf16 row.

A bf16 engine rounds its weights and the activations it stores to bf16 (8 significant bits)
and computes in fp32. How far that rounding moves a model's outputs depends on the model, not
only on kiln: on the corpus's random-weight networks a perturbation of one bf16 rounding of the
input alone moves fcn_resnet50's output by 4.5% of its range (docs/performance.md, "bf16
accuracy"). So a bf16 row over the fixed bound (common.TOLERANCES["bf16"], of max|ORT|) is
looked at again against what bf16 rounding itself does to this model: `emulate_bf16` writes
the model with its Conv/Gemm/MatMul weights rounded to bf16 (round to nearest even) and a Cast
to bf16 and back after the graph's float inputs and after every float op that computes (not
the ones that only move data), kiln's fp32 reference backend runs it, and the row passes as
rounding-bound when kiln's error is at most EMULATION_FACTOR times the emulation's, both
against the same ONNX Runtime outputs. Two computations with the same rounding differ from
the exact result by about the same amount, not by the same values; a kernel fault (a wrong
weight layout, an accumulation in bf16) leaves the emulation far behind.

No `onnx` package is needed: the few fields touched are read and written in protobuf's wire
format (onnx.proto field numbers), every other byte of the model is copied as it was.
"""

import os
import struct

import numpy as np

EMULATION_FACTOR = 2.0

# Ops whose output kiln's bf16 engines may store in bf16: everything that computes on float
# activations. Data movement (Reshape, Transpose, Slice, ...) is left alone: rounding is
# idempotent, so a moved value that was rounded stays rounded.
COMPUTE_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu",
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Clip", "Softmax", "MaxPool", "AveragePool",
    "GlobalAveragePool", "ReduceMean", "BatchNormalization", "LayerNormalization", "InstanceNormalization",
    "Resize", "Upsample", "Concat", "Sqrt", "Pow", "Exp", "Neg",
}
# Ops whose output has the type of their first input (a float activation stays one).
FIRST_INPUT_TYPED = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split",
                     "Identity", "Pad", "Expand", "Tile", "Dropout", "SpaceToDepth", "DepthToSpace"}
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

FLOAT, BFLOAT16 = 1, 16
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


# ---------------------------------------------------------------------------- wire format

def _read_varint(data, pos):
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(data):
    """A message's fields in order: (number, wire type, value); value is an int for varints,
    a memoryview for length-delimited and fixed-size fields."""
    data = memoryview(data)
    out, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == _I64:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == _I32:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def encode(entries):
    """The inverse of fields()."""
    chunks = []
    for number, wire, value in entries:
        chunks.append(_varint(number << 3 | wire))
        if wire == _VARINT:
            chunks.append(_varint(value))
        elif wire == _LEN:
            chunks.append(_varint(len(value)))
            chunks.append(bytes(value))
        else:
            chunks.append(bytes(value))
    return b"".join(chunks)


def _strings(entries, number):
    return [bytes(v).decode() for n, w, v in entries if n == number and w == _LEN]


def _string_field(number, text):
    return (number, _LEN, text.encode())


# ---------------------------------------------------------------------------- the rewrite

def round_to_bf16(values):
    """float32 values rounded to the nearest bf16 (ties to even), as float32. NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(values), values, out).astype(np.float32)


def _node(op_type, inputs, outputs, name, to):
    entries = [(1, _LEN, i.encode()) for i in inputs] + [(2, _LEN, o.encode()) for o in outputs]
    entries += [_string_field(3, name), _string_field(4, op_type)]
    attribute = encode([_string_field(1, "to"), (3, _VARINT, to), (20, _VARINT, 2)])  # AttributeProto INT
    entries.append((5, _LEN, attribute))
    return encode(entries)


def _cast_pair(source, target):
    """Cast `source` to bf16 and back into `target`."""
    mid = f"{target}__kiln_bf16"
    return [_node("Cast", [source], [mid], f"{mid}/to_bf16", BFLOAT16),
            _node("Cast", [mid], [target], f"{mid}/to_float", FLOAT)]


def _rounded_tensor(entries):
    """A FLOAT TensorProto's fields with its values rounded to bf16; None when not FLOAT or its
    values are stored elsewhere (external data)."""
    dtype = next((v for n, w, v in entries if n == 2 and w == _VARINT), None)
    if dtype != FLOAT or any(n == 13 for n, _, _ in entries):
        return None
    out = []
    for n, w, v in entries:
        if n == 9 and w == _LEN:  # raw_data
            out.append((n, w, round_to_bf16(np.frombuffer(v, dtype="<f4")).astype("<f4").tobytes()))
        elif n == 4 and w == _LEN:  # packed float_data
            out.append((n, w, round_to_bf16(np.frombuffer(v, dtype="<f4")).astype("<f4").tobytes()))
        elif n == 4 and w == _I32:  # unpacked float_data
            value = round_to_bf16(np.array(struct.unpack("<f", v), dtype=np.float32))
            out.append((n, w, value.astype("<f4").tobytes()))
        else:
            out.append((n, w, v))
    return out


def _float_inputs(graph_entries, initializer_names):
    """Names of the graph's float inputs that are not initializers."""
    names = []
    for n, w, v in graph_entries:
        if n != 11 or w != _LEN:
            continue
        info = fields(v)
        name = _strings(info, 1)[0]
        elem = None
        for tn, tw, tv in info:
            if tn == 2 and tw == _LEN:  # TypeProto
                for sn, sw, sv in fields(tv):
                    if sn == 1 and sw == _LEN:  # tensor_type
                        elem = next((x for en, ew, x in fields(sv) if en == 1 and ew == _VARINT), None)
        if elem == FLOAT and name not in initializer_names:
            names.append(name)
    return names


def emulate_bf16(model_bytes):
    """The model's bytes with bf16 rounding made explicit (module docstring). Returns
    (bytes, stats): stats counts the rounded weights and the rounding points."""
    model = fields(model_bytes)
    graph_index = next(i for i, (n, w, _) in enumerate(model) if n == 7 and w == _LEN)
    graph = fields(model[graph_index][2])
    nodes = [fields(v) for n, w, v in graph if n == 1 and w == _LEN]
    initializers = {}
    for i, (n, w, v) in enumerate(graph):
        if n == 5 and w == _LEN:
            initializers[_strings(fields(v), 8)[0]] = i
    weights = set()
    for node in nodes:
        op = _strings(node, 4)[0]
        inputs = _strings(node, 1)
        if op in WEIGHTED_OPS and len(inputs) > 1 and inputs[1] in initializers:
            weights.add(inputs[1])

    floats = set(_float_inputs(graph, set(initializers)))
    renamed = {name: f"{name}__kiln_rounded" for name in floats}
    new_nodes = []
    for name in floats:
        new_nodes += _cast_pair(name, renamed[name])
    points = len(floats)
    for node in nodes:
        op = _strings(node, 4)[0]
        inputs = _strings(node, 1)
        outputs = _strings(node, 2)
        float_in = any(i in floats for i in inputs)
        rewritten = []
        for n, w, v in node:
            if n == 1 and w == _LEN and bytes(v).decode() in renamed:
                rewritten.append((1, _LEN, renamed[bytes(v).decode()].encode()))
            else:
                rewritten.append((n, w, v))
        produces_float = op in COMPUTE_OPS and (float_in or op in WEIGHTED_OPS)
        if op in FIRST_INPUT_TYPED and inputs and inputs[0] in floats:
            floats.update(o for o in outputs[:1] if o)
        if not produces_float or not outputs or not outputs[0]:
            new_nodes.append(encode(rewritten))
            continue
        out = outputs[0]
        raw = f"{out}__kiln_fp32"
        first = True
        final = []
        for n, w, v in rewritten:
            if n == 2 and w == _LEN and first:
                final.append((2, _LEN, raw.encode()))
                first = False
            else:
                final.append((n, w, v))
        new_nodes.append(encode(final))
        new_nodes += _cast_pair(raw, out)
        floats.add(out)
        points += 1

    new_graph = []
    emitted_nodes = False
    for i, (n, w, v) in enumerate(graph):
        if n == 1 and w == _LEN:
            if not emitted_nodes:
                new_graph += [(1, _LEN, b) for b in new_nodes]
                emitted_nodes = True
            continue
        if n == 5 and w == _LEN and i in {initializers[name] for name in weights}:
            rounded = _rounded_tensor(fields(v))
            new_graph.append((n, w, encode(rounded)) if rounded is not None else (n, w, v))
            continue
        new_graph.append((n, w, v))
    model[graph_index] = (7, _LEN, encode(new_graph))
    return encode(model), {"weights": len(weights), "rounding_points": points}


def write_emulation(path, out_path):
    with open(path, "rb") as f:
        data, stats = emulate_bf16(f.read())
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_path)
    return stats


# ---------------------------------------------------------------------------- the judgement

def judge_against_emulation(rec, emulation):
    """Re-judges a FAILED bf16 row of the corpus case: `emulation` is the emulated model's
    cross-check against the same ONNX Runtime outputs (common.cross_check), or {"error": ...}.
    The row passes when its error is within EMULATION_FACTOR of the emulation's."""
    err = rec["max_abs_err"] / rec["ref_max_abs"] if rec["ref_max_abs"] else float("inf")
    reason = rec.get("reason") or f"err {err:.3g} > {rec.get('tolerance', 0):g}"
    if "error" in emulation:
        rec["bf16_emulation"] = {"error": emulation["error"]}
        rec["reason"] = f"{reason}; the bf16 emulation could not be checked: {emulation['error']}"
        return
    emul = emulation["max_abs_err"] / emulation["ref_max_abs"] if emulation["ref_max_abs"] else float("inf")
    rec["bf16_emulation"] = {"err": emul, "factor": EMULATION_FACTOR}
    if err <= EMULATION_FACTOR * emul:
        rec["status"] = "ok"
        rec["reason"] = (f"rounding-bound: err {err:.3g} is over {rec.get('tolerance', 0):g} but within "
                         f"{EMULATION_FACTOR:g} x the bf16 emulation's {emul:.3g} (the model amplifies bf16 "
                         "rounding)")
    else:
        rec["reason"] = f"{reason}; and over {EMULATION_FACTOR:g} x the bf16 emulation's err {emul:.3g}"


def share_verdict(rec, records):
    """The latency row `rec` was judged again: its throughput row (the same model, batch, system,
    precision and threads, made from the same runs before the verdict) takes its status."""
    keys = ("model", "batch", "system", "precision", "threads")
    for other in records:
        if other is not rec and other.get("metric") == "throughput" and all(
                other.get(k) == rec.get(k) for k in keys):
            other["status"] = rec["status"]
