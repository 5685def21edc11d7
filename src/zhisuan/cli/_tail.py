"""A log file's last lines, and what is written to it next (``tail -n N -F``): the reading side
of ``zhisuan logs``, over plain files and the ``<model>-<index>.log`` link that
:mod:`zhisuan.cluster._logs` moves to a successor's file when it takes over."""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NoReturn

BLOCK = 64 * 1024
"""Bytes read at a time."""
POLL_S = 0.2
"""Seconds between two looks at a file that has nothing new (and at its link)."""


def last_lines(path: Path, count: int) -> tuple[str, int]:
    """The last ``count`` lines of ``path`` (all of it when it has fewer), and its size then.

    A last line without its newline (one the worker is writing) counts as a line. Bytes that
    are not UTF-8 are replaced (U+FFFD).

    Raises:
        OSError: ``path`` cannot be read.
    """
    with path.open("rb") as file:
        end = file.seek(0, os.SEEK_END)
        data = _tail_bytes(file, end, count)
    return data.decode("utf-8", "replace"), end


def _tail_bytes(file: BinaryIO, end: int, count: int) -> bytes:
    if count == 0:
        return b""
    data, start = b"", end
    while start > 0:
        step = min(BLOCK, start)
        start -= step
        file.seek(start)
        data = file.read(step) + data
        if data.count(b"\n", 0, len(data) - 1) >= count:  # the final newline ends a line
            break
    cut = len(data) - 1
    for _ in range(count):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]


def follow(
    path: Path,
    offset: int,
    link: Path | None,
    write: Callable[[str], None],
    moved: Callable[[Path], None],
    poll_s: float = POLL_S,
) -> NoReturn:
    """Write what ``path`` gets from ``offset`` on, as it comes, until interrupted.

    When ``link`` comes to name another file (a successor took over the replica), the rest of
    the current file is written and then that file, from its start. A link that goes away
    (the replica undeployed) leaves the current file followed; one that comes back is taken.
    A file cut shorter than what was read is read again from its start.

    Args:
        path: the file to follow.
        offset: where to start in it (its size when its end was printed).
        link: the link to watch, if any.
        write: takes each piece of text read (whole lines or not).
        moved: told the new file when the link moved.

    Raises:
        OSError: a file cannot be opened or read.
        KeyboardInterrupt: the way out (Ctrl-C).
    """
    file = path.open("rb")
    try:
        file.seek(offset)
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        while True:
            chunk = file.read(BLOCK)
            if chunk:
                write(decode(chunk))
                continue
            successor = _moved(file, link)
            if successor is not None:
                rest = file.read()  # written since the last read: the old worker's last words
                if rest:
                    write(decode(rest))
                file.close()
                file = successor.open("rb")
                decode = codecs.getincrementaldecoder("utf-8")("replace").decode
                moved(successor)
                continue
            if os.fstat(file.fileno()).st_size < file.tell():
                file.seek(0)  # cut short (truncated): what is there now is new
                continue
            time.sleep(poll_s)
    finally:
        file.close()


def _moved(file: BinaryIO, link: Path | None) -> Path | None:
    """The file ``link`` names now, if not ``file``."""
    if link is None:
        return None
    try:
        now = os.stat(link)
        target = link.resolve(strict=True)
    except OSError:
        return None  # no link (now): the file followed stays the replica's last one
    if os.path.samestat(now, os.fstat(file.fileno())):
        return None
    return target
