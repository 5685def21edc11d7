"""Read safetensors headers (never the tensors) and check them against the file size.

A safetensors file is ``u64 little-endian N`` + ``N bytes of JSON`` + the tensor data. The JSON
maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` with offsets
relative to the start of the data, plus an optional ``"__metadata__"`` entry. A valid file is
exactly ``8 + N + max(end)`` bytes long (the safetensors loader refuses anything else).
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhisuan.errors import ImportRefused

# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}  # fmt: skip
# safetensors dtype -> the torch name the rest of zhisuan uses.
DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's own limit
_REDOWNLOAD = "the file is damaged or incompletely downloaded; download it again"


@dataclass
class SafetensorsHeader:
    """The tensors of one safetensors file.

    Attributes:
        name: the file's name as shown to the user (relative to the model directory).
        tensors: tensor name -> (dtype, shape).
        param_count: sum of the element counts of all tensors.
        params_by_dtype: element counts per dtype name (``bfloat16`` …).
    """

    name: str
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    param_count: int = 0
    params_by_dtype: Counter[str] = field(default_factory=Counter)


def _invalid(name: str, why: str) -> ImportRefused:
    return ImportRefused(f"{name} is not a valid safetensors file: {why}", hint=_REDOWNLOAD)


def read_header(path: Path, name: str | None = None) -> SafetensorsHeader:
    """Parse the header of a safetensors file and verify it against the file's size.

    Args:
        path: the file.
        name: how to name the file in messages (default: its file name).

    Returns:
        The tensors it declares, with their parameter count.

    Raises:
        ImportRefused: the file is truncated, has trailing bytes, or its header is malformed;
            the message names the file and the expected vs actual size.
    """
    name = name or path.name
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ImportRefused(
                f"{name} is truncated: {size} bytes, too short for a safetensors header "
                "(at least 8 bytes)",
                hint=_REDOWNLOAD,
            )
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise _invalid(name, f"header length {header_len} bytes is implausible")
        if 8 + header_len > size:
            raise ImportRefused(
                f"{name} is truncated: expected at least {8 + header_len} bytes for its "
                f"header, found {size}",
                hint=_REDOWNLOAD,
            )
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(name, f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _invalid(name, "header is not a JSON object")

    out = SafetensorsHeader(name=name)
    data_end = 0
    for tname, spec in header.items():
        if tname == "__metadata__":
            continue
        dtype, shape, begin, end = _tensor_spec(name, tname, spec)
        numel = math.prod(shape)
        itemsize = DTYPE_BYTES.get(dtype)
        if itemsize is not None and end - begin != numel * itemsize:
            raise _invalid(
                name,
                f"tensor {tname!r} ({dtype}, shape {list(shape)}) should take "
                f"{numel * itemsize} bytes, its offsets span {end - begin}",
            )
        out.tensors[tname] = (dtype, shape)
        out.param_count += numel
        out.params_by_dtype[DTYPE_NAMES.get(dtype, dtype.lower())] += numel
        data_end = max(data_end, end)

    expected = 8 + header_len + data_end
    if size < expected:
        raise ImportRefused(
            f"{name} is truncated: expected {expected} bytes, found {size}", hint=_REDOWNLOAD
        )
    if size > expected:
        raise _invalid(name, f"expected {expected} bytes, found {size} ({size - expected} extra)")
    return out


def _tensor_spec(name: str, tname: str, spec: Any) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(spec, dict):
        raise _invalid(name, f"entry {tname!r} is not an object")
    dtype = spec.get("dtype")
    shape = spec.get("shape")
    offsets = spec.get("data_offsets")
    if not isinstance(dtype, str):
        raise _invalid(name, f"tensor {tname!r} has no dtype")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _invalid(name, f"tensor {tname!r} has a malformed shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _invalid(name, f"tensor {tname!r} has malformed data_offsets {offsets!r}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
