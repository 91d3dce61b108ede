"""Writes ONNX models as protobuf bytes, without the ``onnx`` package.

The FX translator (kiln.fx_translate) must run wherever kiln.torch runs,
and Debian's python3-torch does not pull in python3-onnx or protobuf, so
the few ONNX messages kiln emits are encoded here by hand (protobuf wire
format, onnx.proto field numbers). Repeated scalars are written unpacked,
as proto2 (onnx.proto's syntax) does; every protobuf parser reads both.
"""

import struct

import numpy as np

IR_VERSION = 8  # the IR version of opset 17

# TensorProto.DataType
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, BOOL, FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16 = (
    1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16)

_NUMPY_TO_ONNX = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.uint16): UINT16,
    np.dtype(np.int16): INT16,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float64): DOUBLE,
    np.dtype(np.uint32): UINT32,
    np.dtype(np.uint64): UINT64,
}

# AttributeProto.AttributeType
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 1, 2, 3, 4, 6, 7, 8


def onnx_dtype(numpy_dtype):
    """The TensorProto.DataType of a numpy dtype."""
    code = _NUMPY_TO_ONNX.get(np.dtype(numpy_dtype))
    if code is None:
        raise TypeError("dtype %s has no ONNX tensor type kiln writes" % np.dtype(numpy_dtype))
    return code


# ---- Wire format -------------------------------------------------------------


def _varint(value):
    value &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire_type):
    return _varint((field << 3) | wire_type)


def _int(field, value):
    return _key(field, 0) + _varint(int(value))


def _bytes(field, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _key(field, 2) + _varint(len(data)) + data


def _float(field, value):
    return _key(field, 5) + struct.pack("<f", float(value))


# ---- Messages ----------------------------------------------------------------


def _nested(field, chunks):
    """A length-delimited field over a list of chunks, still unjoined: the
    weights are copied once, by model()'s final join."""
    return [_key(field, 2) + _varint(sum(len(c) for c in chunks))] + chunks


def tensor_chunks(name, array):
    """TensorProto with raw little-endian data, as chunks (the data a view
    of the array's memory, not a copy)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    out = b"".join(_int(1, d) for d in array.shape)
    out += _int(2, onnx_dtype(array.dtype))
    out += _bytes(8, name)
    data = memoryview(array.reshape(-1)).cast("B") if array.size else b""
    return [out] + _nested(9, [data])


def tensor(name, array):
    """TensorProto bytes."""
    return b"".join(tensor_chunks(name, array))


def attribute(name, value):
    """AttributeProto from a Python value: int, float, str, list of ints,
    floats or strs, or a numpy array (a tensor)."""
    out = _bytes(1, name)
    if isinstance(value, np.ndarray):
        return out + _bytes(5, tensor("", value)) + _int(20, _ATTR_TENSOR)
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return out + _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, (float, np.floating)):
        return out + _float(2, value) + _int(20, _ATTR_FLOAT)
    if isinstance(value, (str, bytes)):
        return out + _bytes(4, value) + _int(20, _ATTR_STRING)
    values = list(value)
    if all(isinstance(v, (int, np.integer)) for v in values):
        return out + b"".join(_int(8, v) for v in values) + _int(20, _ATTR_INTS)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return out + b"".join(_float(7, v) for v in values) + _int(20, _ATTR_FLOATS)
    if all(isinstance(v, (str, bytes)) for v in values):
        return out + b"".join(_bytes(9, v) for v in values) + _int(20, _ATTR_STRINGS)
    raise TypeError("attribute %s: cannot encode %r" % (name, value))


def node(op_type, inputs, outputs, name, attributes):
    out = b"".join(_bytes(1, i) for i in inputs)
    out += b"".join(_bytes(2, o) for o in outputs)
    out += _bytes(3, name) + _bytes(4, op_type)
    for key in sorted(attributes):
        out += _bytes(5, attribute(key, attributes[key]))
    return out


def value_info(name, elem_type, shape):
    """ValueInfoProto; ``shape`` holds ints, or strs for symbolic dims."""
    dims = b""
    for d in shape:
        dims += _bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d))
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(graph_name, nodes, initializers, inputs, outputs, opset, producer="kiln.fx_translate",
          ir_version=IR_VERSION):
    """ModelProto bytes: ``nodes`` are encoded NodeProtos, ``initializers``
    tensor_chunks() lists, ``inputs``/``outputs`` encoded ValueInfoProtos."""
    graph = [_bytes(1, n) for n in nodes]
    graph.append(_bytes(2, graph_name))
    for chunks in initializers:
        graph += _nested(5, chunks)
    graph += [_bytes(11, v) for v in inputs]
    graph += [_bytes(12, v) for v in outputs]
    opset_id = _bytes(1, "") + _int(2, opset)
    return b"".join([_int(1, ir_version), _bytes(2, producer)] + _nested(7, graph) + [_bytes(8, opset_id)])


# ---- Reading ---------------------------------------------------------------------

_ONNX_TO_NUMPY = {code: dtype for dtype, code in _NUMPY_TO_ONNX.items()}


def _read_varint(data, pos):
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data):
    """(field number, wire type, value) of one message's fields: an int for
    varints and fixed widths, a memoryview for length-delimited ones."""
    data = memoryview(data)
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError("protobuf wire type %d is not one ONNX uses" % wire)
        yield field, wire, value


def _tensor_array(data):
    """(name, numpy array) of a TensorProto with raw_data or float_data; the
    array is None for other storage (external data, typed fields)."""
    name, dims, elem_type, raw, floats = "", [], 0, None, []
    for field, wire, value in _fields(data):
        if field == 1:  # dims: unpacked varints, or packed
            if wire == 0:
                dims.append(value)
            else:
                pos = 0
                while pos < len(value):
                    d, pos = _read_varint(value, pos)
                    dims.append(d)
        elif field == 2:
            elem_type = value
        elif field == 8:
            name = bytes(value).decode("utf-8")
        elif field == 9:
            raw = bytes(value)
        elif field == 4:  # float_data: packed, or one fixed32 each
            if wire == 2:
                floats.extend(np.frombuffer(bytes(value), dtype="<f4").tolist())
            else:
                floats.append(struct.unpack("<f", value.to_bytes(4, "little"))[0])
    dtype = _ONNX_TO_NUMPY.get(elem_type)
    if dtype is None:
        return name, None
    if raw is not None:
        return name, np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)
    if dtype == np.float32 and (floats or int(np.prod(dims)) == 0):
        return name, np.asarray(floats, dtype=np.float32).reshape(dims)
    return name, None


def read_initializers(model_bytes):
    """{name: numpy array} of a ModelProto's graph initializers (those held
    as raw_data or float_data, which is how torch.onnx.export writes them)."""
    result = {}
    for field, _, graph in _fields(model_bytes):
        if field != 7:  # ModelProto.graph
            continue
        for gfield, _, tensor in _fields(graph):
            if gfield == 5:  # GraphProto.initializer
                name, array = _tensor_array(tensor)
                if array is not None:
                    result[name] = array
    return result
