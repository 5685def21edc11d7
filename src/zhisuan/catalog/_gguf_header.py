"""Read a GGUF file's header (metadata and tensor table) with the ``gguf`` package's reader,
and check that the file is whole.

Here, not in the model store, so that the catalog reads a GGUF file's shape without
importing the store (half a second). The ``gguf`` package (with numpy) is imported inside
the functions only. The reader maps the file and parses its header; it does not read tensor
data. A truncated file can still parse (the table sits at the start), so
:func:`read_whole_gguf` compares the end of every tensor's data with the file size.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhisuan.errors import ImportRefused

GGUF_MAGIC = b"GGUF"
_REDOWNLOAD = "the file is damaged or incompletely downloaded; download it again"


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """One tensor of a GGUF file's table: its type, size, the end of its data in the file,
    and its shape (ggml's order: the fastest-varying dimension first)."""

    name: str
    type_name: str
    n_elements: int
    end: int
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GgufContents:
    """What the ``gguf`` reader finds in a GGUF file's header (no tensor data is read).

    Attributes:
        fields: every metadata key, with its scalar or string value (None for an array:
            token lists are large).
        n_tokens: how many tokens the tokenizer's ``tokenizer.ggml.tokens`` lists, if any.
        tensors: the tensor table.
    """

    fields: dict[str, Any]
    n_tokens: int | None
    tensors: list[GgufTensor]


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts as a GGUF file does."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:  # not a file, or unreadable: not ours to answer
        return False


def read_gguf(path: Path) -> GgufContents:
    """Read the header of the GGUF file ``path`` (its metadata and tensor table).

    Raises:
        Exception: whatever the reader raises on a malformed file (``ValueError``,
            ``IndexError`` …): callers convert it (:func:`read_whole_gguf` says what is
            wrong).
    """
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = {name: _field_value(f) for name, f in reader.fields.items()}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    tensors = [
        GgufTensor(
            t.name,
            t.tensor_type.name,
            int(t.n_elements),
            int(t.data_offset) + int(t.n_bytes),
            tuple(int(d) for d in t.shape),
        )
        for t in reader.tensors
    ]
    n_tokens = len(tokens.data) if tokens is not None else None
    del reader  # unmap the file
    return GgufContents(fields, n_tokens, tensors)


def read_whole_gguf(path: Path) -> GgufContents:
    """:func:`read_gguf`, once the file is known to be a whole GGUF file (its header walked
    with plain reads, so that what is wrong can be said).

    Raises:
        ImportRefused: not a GGUF file, malformed, or truncated (the message gives the
            expected and actual size).
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ImportRefused(
            f"{path.name} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})",
            hint="pass a .gguf file, or an HF-format directory",
        )
    try:
        import gguf  # noqa: F401
    except ImportError as exc:  # pragma: no cover - gguf is a core dependency
        raise ImportRefused(
            "cannot read GGUF files: the gguf package is not installed", hint="pip install gguf"
        ) from exc
    expected = _expected_size(path)
    if size < expected:
        raise ImportRefused(
            f"{path.name} is truncated: expected {expected} bytes, found {size}",
            hint=_REDOWNLOAD,
        )
    try:
        contents = read_gguf(path)
    except Exception as exc:  # the reader raises ValueError, IndexError …; convert here
        raise ImportRefused(
            f"{path.name} is not a valid GGUF file (truncated or malformed: {exc})",
            hint=_REDOWNLOAD,
        ) from exc
    data_end = max((t.end for t in contents.tensors), default=0)
    if size < data_end:  # pragma: no cover - _expected_size already checked this
        raise ImportRefused(
            f"{path.name} is truncated: expected {data_end} bytes, found {size}",
            hint=_REDOWNLOAD,
        )
    return contents


# Bytes of each fixed-size GGUF metadata value type (GGUFValueType ids).
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_ALIGNMENT_KEY = "general.alignment"


def _expected_size(path: Path) -> int:
    """The size a GGUF file must have: the end of its last tensor's data.

    Walks the header (metadata and tensor table) with plain reads, so a truncated file is
    reported with expected and actual sizes rather than as a reader error.

    Raises:
        ImportRefused: the header itself is cut short or malformed.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size = path.stat().st_size
    with path.open("rb") as fh:

        def fits(n: int) -> int:
            """``n``, a length the header gives, if that many bytes are left in the file
            (a huge one would overflow a read or a seek, or exhaust memory)."""
            if n > size - fh.tell():
                raise ImportRefused(
                    f"{path.name} is truncated or malformed: its header ends early at byte "
                    f"{size} (it gives {n} bytes at byte {fh.tell()})",
                    hint=_REDOWNLOAD,
                )
            return n

        def read(n: int) -> bytes:
            return fh.read(fits(n))

        def skip(n: int) -> None:
            fh.seek(fits(n), 1)

        fh.seek(4)
        (version,) = struct.unpack("<I", read(4))
        order = "<" if version < 0x10000 else ">"  # big-endian files read as huge numbers
        n_tensors, n_kv = struct.unpack(order + "QQ", read(16))

        def u32() -> int:
            return int(struct.unpack(order + "I", read(4))[0])

        def u64() -> int:
            return int(struct.unpack(order + "Q", read(8))[0])

        def skip_value(vtype: int) -> int | None:
            if vtype in _SCALAR_BYTES:
                raw = read(_SCALAR_BYTES[vtype])
                return int.from_bytes(raw, "little" if order == "<" else "big")
            if vtype == _STRING:
                skip(u64())
                return None
            if vtype == _ARRAY:
                itype, count = u32(), u64()
                if itype in _SCALAR_BYTES:
                    skip(count * _SCALAR_BYTES[itype])
                else:
                    fits(count)  # every item takes a byte at least
                    for _ in range(count):
                        skip_value(itype)
                return None
            raise ImportRefused(
                f"{path.name} is not a valid GGUF file: unknown value type {vtype}",
                hint=_REDOWNLOAD,
            )

        alignment = 32
        for _ in range(n_kv):
            key = read(u64()).decode("utf-8", "replace")
            value = skip_value(u32())
            if key == _ALIGNMENT_KEY and value:
                alignment = value
        data_end = 0
        for _ in range(n_tensors):
            skip(u64())  # name
            n_dims = u32()
            dims = [u64() for _ in range(fits(8 * n_dims) // 8)]
            ttype, offset = u32(), u64()
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            except (ValueError, KeyError) as exc:
                raise ImportRefused(
                    f"{path.name} has a tensor of unknown type {ttype}",
                    hint="update the gguf package, or check the file",
                ) from exc
            data_end = max(data_end, offset + math.prod(dims) * type_size // block)
        header_end = fh.tell()
    data_start = -(-header_end // alignment) * alignment
    return data_start + data_end if n_tensors else header_end


def _field_value(field: Any) -> Any:
    """A scalar or string field's value; None for arrays (token lists are large)."""
    from gguf import GGUFValueType

    if not field.types or field.types[0] == GGUFValueType.ARRAY:
        return None
    return field.contents()
