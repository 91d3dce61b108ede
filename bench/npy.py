"""Minimal .npy reader/writer on the Python standard library (numpy may be absent).

Handles what kiln's tools/kiln/npy.cpp and bench/peers/npy.mjs handle: format 1.0-3.0,
little-endian, C order. Arrays are (dtype, shape, array.array) triples.
"""

import array
import ast
import math
import struct
import sys

# npy descr (without byte-order char) → array.array typecode.
_TYPECODES = {"f4": "f", "f8": "d", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q",
              "u8": "Q", "b1": "B"}
DTYPE_NAMES = {"f4": "float32", "f8": "float64", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16",
               "i4": "int32", "u4": "uint32", "i8": "int64", "u8": "uint64", "b1": "bool"}
_DESCR_FOR = {v: k for k, v in DTYPE_NAMES.items()}

if sys.byteorder != "little":
    raise ImportError("bench/npy.py assumes a little-endian host")


def write(path, dtype, shape, values):
    """Writes `values` (array.array or iterable) as a C-order .npy of `dtype` ("float32", ...)."""
    descr = _DESCR_FOR[dtype]
    data = values if isinstance(values, array.array) else array.array(_TYPECODES[descr], values)
    assert data.itemsize == int(descr[1]), f"array typecode {data.typecode} does not match {dtype}"
    assert len(data) == math.prod(shape), f"{len(data)} values for shape {shape}"
    shape_text = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(d) for d in shape) + ")"
    order = "|" if descr.endswith("1") else "<"
    header = "{'descr': '%s%s', 'fortran_order': False, 'shape': %s, }" % (order, descr, shape_text)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"  # align the data to 64 bytes
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        data.tofile(f)


def read(path):
    """Returns (dtype name, shape list, array.array) for a .npy file."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    if raw[6] == 1:
        (hlen,), start = struct.unpack_from("<H", raw, 8), 10
    elif raw[6] in (2, 3):
        (hlen,), start = struct.unpack_from("<I", raw, 8), 12
    else:
        raise ValueError(f"{path}: .npy version {raw[6]} is not supported")
    header = ast.literal_eval(raw[start:start + hlen].decode("latin1"))
    descr = header["descr"]
    if descr[0] == ">" or header.get("fortran_order"):
        raise ValueError(f"{path}: big-endian or Fortran-order arrays are not supported")
    code = _TYPECODES[descr[1:]]
    data = array.array(code)
    data.frombytes(raw[start + hlen:])
    shape = list(header["shape"])
    if len(data) != math.prod(shape):
        raise ValueError(f"{path}: {len(data)} values for shape {shape}")
    return DTYPE_NAMES[descr[1:]], shape, data


def compare(actual_path, reference_path):
    """Element-wise errors of `actual` against `reference`.

    Returns dict(max_abs_err, max_rel_err, ref_max_abs, nonfinite, shape_ok). The relative
    error of an element is |a - r| / max(|r|, 1e-6 * max|ref|): the floor keeps elements that
    are zero in the reference from turning rounding noise into an infinite error.
    """
    _, shape_a, a = read(actual_path)
    _, shape_r, r = read(reference_path)
    if shape_a != shape_r:
        return {"shape_ok": False, "detail": f"shape {shape_a} vs reference {shape_r}"}
    ref_max = max((abs(x) for x in r if math.isfinite(x)), default=0.0)
    floor = max(1e-6 * ref_max, 1e-30)
    max_abs = max_rel = 0.0
    nonfinite = 0
    for x, y in zip(a, r):
        d = abs(x - y)
        if not math.isfinite(d):
            if not (x == y):  # equal infinities are fine; NaN or mismatched inf is not
                nonfinite += 1
            continue
        if d > max_abs:
            max_abs = d
        rel = d / max(abs(y), floor)
        if rel > max_rel:
            max_rel = rel
    return {"shape_ok": True, "max_abs_err": max_abs, "max_rel_err": max_rel, "ref_max_abs": ref_max,
            "nonfinite": nonfinite}
