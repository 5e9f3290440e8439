"""The mark's one encoding: the frame of the shared-memory mark ring (cpp/include/greenprobe/
mark_ring.hpp), which a gRPC batch carries too (MarkBatch.columns.frames) and the daemon decodes in
C++ (one decoder, one validator, one table of limits).

greenprobe's compiled extension encodes frames in C (``_core.encode_frames``); this is the same
encoding in Python, for a client installed without the extension and for the marks the C encoder
hands back (values it has no type for). It checks no limit: a mark over one is framed as it is (a
field longer than a u16 can say is cut just past the limit) and the daemon refuses it, naming why.

    frame  := u32 size (8-byte aligned, head included), u32 kind (1: a mark), payload, zero padding
    payload:= i64 start_ns, i64 end_ns, u64 thread_id, u16 label_len, u16 n_attrs, u8 ok, 3 zero
              bytes, the label (UTF-8), then per attribute: u16 name_len, u8 type, the name, the value
    value  := none (type 0): nothing; bool (1): u8; int (2): i64; float (3): f64; str (4): u16 len,
              UTF-8. Little-endian.

An attribute value the frame has no type for (an int beyond 64 bits, a list, a dict, any other
object) is sent as its text: JSON for containers, str() otherwise, as the tables store such
values anyway (parquet.attr_column).
"""

from __future__ import annotations

import json
import numbers
import struct

KIND_MARK = 1
NONE, BOOL, INT, FLOAT, STR = range(5)

_HEAD = struct.Struct("<II")
_MARK = struct.Struct("<qqQHHB3x")
_ATTR = struct.Struct("<HB")
_U16_MAX = 0xFFFF
_I64 = (-(1 << 63), (1 << 63) - 1)


def wire_value(v):
    """``v`` as a frame holds it: None, bool, a 64-bit int, float or str; anything else as text."""
    if v is None or isinstance(v, (bool, float, str)):
        return v
    if isinstance(v, numbers.Integral):
        v = int(v)
        return v if _I64[0] <= v <= _I64[1] else str(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return value_text(v)


def value_text(v) -> str:
    """An attribute value as text, the one way greenprobe writes a value it has no type for (the
    frames here, the tables' parquet.attr_column): JSON for containers, str() otherwise."""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, separators=(",", ":"), default=str)
    return str(v)


def _text(s: str) -> bytes:
    """UTF-8, cut past the length a u16 can state (the daemon refuses it at its limit, far below)."""
    b = s.encode("utf-8", "surrogatepass")
    return b[:_U16_MAX]


def frame(record) -> bytes:
    """One mark record (records.Mark, or the C mark's tuple in its order) as a ring frame."""
    label, start, end, tid, attrs, ok = record  # records.Mark's fields, in its order
    label_b = _text(str(label))
    items = list((attrs or {}).items())[:_U16_MAX]
    parts = [_MARK.pack(int(start), int(end), int(tid) & 0xFFFFFFFFFFFFFFFF, len(label_b), len(items),
                        1 if ok else 0), label_b]
    for key, value in items:
        name = _text(str(key))
        value = wire_value(value)
        if value is None:
            parts += [_ATTR.pack(len(name), NONE), name]
        elif isinstance(value, bool):
            parts += [_ATTR.pack(len(name), BOOL), name, bytes((1 if value else 0,))]
        elif isinstance(value, int):
            parts += [_ATTR.pack(len(name), INT), name, struct.pack("<q", value)]
        elif isinstance(value, float):
            parts += [_ATTR.pack(len(name), FLOAT), name, struct.pack("<d", value)]
        else:
            text = _text(value)
            parts += [_ATTR.pack(len(name), STR), name, struct.pack("<H", len(text)), text]
    payload = b"".join(parts)
    size = (8 + len(payload) + 7) & ~7
    return _HEAD.pack(size, KIND_MARK) + payload + bytes(size - 8 - len(payload))


def encode(records: list) -> bytes:
    """Mark records as frames end to end (a gRPC batch's ``frames``): in C where greenprobe's
    extension is here, each record it has no type for (and any without the extension) in Python."""
    try:
        from . import _core
    except ImportError:
        _core = None
    if _core is None:
        return b"".join(frame(r) for r in records)
    data, odd = _core.encode_frames(records)
    return data + b"".join(frame(records[i]) for i in odd) if odd else data
