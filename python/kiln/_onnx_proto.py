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
