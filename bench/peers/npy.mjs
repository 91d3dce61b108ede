// Minimal .npy (format 1.0-3.0) reader/writer for the peer runners: little-endian,
// C order, the dtypes kiln's own npy.cpp handles. No dependency, so the peers read
// exactly the bytes the harness wrote for kiln.
import { readFileSync, writeFileSync } from 'node:fs';

// npy descr (without the byte-order char) → [ONNX Runtime tensor type, TypedArray].
const DTYPES = {
  f4: ['float32', Float32Array],
  f8: ['float64', Float64Array],
  i1: ['int8', Int8Array],
  u1: ['uint8', Uint8Array],
  i2: ['int16', Int16Array],
  u2: ['uint16', Uint16Array],
  i4: ['int32', Int32Array],
  u4: ['uint32', Uint32Array],
  i8: ['int64', BigInt64Array],
  u8: ['uint64', BigUint64Array],
  b1: ['bool', Uint8Array],
};

export function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  let headerLen, offset;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    offset = 10;
  } else if (major === 2 || major === 3) {
    headerLen = buf.readUInt32LE(8);
    offset = 12;
  } else {
    throw new Error(`${path}: .npy version ${major} is not supported`);
  }
  const header = buf.toString('latin1', offset, offset + headerLen);
  const descr = /'descr'\s*:\s*'([<>|=])(\w\d)'/.exec(header);
  if (!descr) throw new Error(`${path}: header has no descr`);
  if (descr[1] === '>') throw new Error(`${path}: big-endian arrays are not supported`);
  if (/'fortran_order'\s*:\s*True/.test(header)) throw new Error(`${path}: Fortran order is not supported`);
  const entry = DTYPES[descr[2]];
  if (!entry) throw new Error(`${path}: unsupported dtype '${descr[2]}'`);
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!shapeText) throw new Error(`${path}: header has no shape`);
  const shape = shapeText[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const [type, Ctor] = entry;
  const dataStart = offset + headerLen;
  const count = shape.reduce((a, b) => a * b, 1);
  // Copy into a fresh, aligned ArrayBuffer: typed arrays need element alignment.
  const bytes = new Uint8Array(count * Ctor.BYTES_PER_ELEMENT);
  if (dataStart + bytes.length > buf.length) throw new Error(`${path}: file is shorter than its header says`);
  bytes.set(buf.subarray(dataStart, dataStart + bytes.length));
  const data = type === 'bool' ? bytes : new Ctor(bytes.buffer);
  return { type, shape, data };
}

const DESCR_FOR = Object.fromEntries(Object.entries(DTYPES).map(([d, [t]]) => [t, d]));

export function writeNpy(path, type, shape, data) {
  const d = DESCR_FOR[type];
  if (!d) throw new Error(`cannot write tensors of type ${type} as .npy`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${d.endsWith('1') ? '|' : '<'}${d}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad so that magic + version + length + header is a multiple of 64, ending in '\n'.
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const bytes = type === 'bool' ? Uint8Array.from(data, (x) => (x ? 1 : 0)) : data;
  const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  writeFileSync(path, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}
