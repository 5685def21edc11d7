"""The reading side of ``zhisuan logs`` (:mod:`zhisuan.cli._tail`): a file's last lines across
the blocks it is read in, and following a file as it grows, is cut short, or its link moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhisuan.cli import _tail


class _Enough(Exception):
    """Ends a :func:`_tail.follow` once it wrote what a test waits for."""


@pytest.mark.parametrize("block", [1, 3, 7, _tail.BLOCK])
@pytest.mark.parametrize(
    ("text", "count", "last"),
    [
        ("a\nbb\nccc\n", 2, "bb\nccc\n"),
        ("a\nbb\nccc", 2, "bb\nccc"),  # the last line, still being written, counts
        ("a\nbb\nccc\n", 9, "a\nbb\nccc\n"),  # fewer lines than asked: all of them
        ("a\n\n\nd\n", 3, "\n\nd\n"),  # empty lines count
        ("a\nbb\n", 0, ""),
        ("", 5, ""),
    ],
)
def test_the_last_lines_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, text: str, count: int, last: str
) -> None:
    monkeypatch.setattr(_tail, "BLOCK", block)
    path = tmp_path / "w.log"
    path.write_text(text)
    assert _tail.last_lines(path, count) == (last, len(text))


def test_bytes_that_are_not_utf8_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    path.write_bytes(b"ok\n\xff\xfe caf\xc3\xa9\n")
    assert _tail.last_lines(path, 1) == ("\ufffd\ufffd café\n", 12)


def _follow(path: Path, offset: int, link: Path | None, until: str) -> tuple[str, list[str]]:
    """What following ``path`` from ``offset`` writes until it wrote ``until``, and the files
    it was told the link moved to."""
    written: list[str] = []
    moves: list[str] = []

    def write(text: str) -> None:
        written.append(text)
        if "".join(written).endswith(until):
            raise _Enough

    with pytest.raises(_Enough):
        _tail.follow(path, offset, link, write, lambda p: moves.append(p.name), poll_s=0.001)
    return "".join(written), moves


def test_following_goes_on_from_the_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tail, "BLOCK", 2)  # a character split between two reads comes whole
    path = tmp_path / "w.log"
    path.write_text("printed\nnew café\n")
    assert _follow(path, len("printed\n"), None, "café\n") == ("new café\n", [])


def test_following_a_file_cut_short_starts_it_again(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    path.write_text("a long line printed\n")
    path.write_text("short\n")  # truncated and rewritten since
    assert _follow(path, len("a long line printed\n"), None, "short\n") == ("short\n", [])


def test_following_moves_to_the_file_the_link_names_after_the_old_ones_rest(
    tmp_path: Path,
) -> None:
    old, new, link = tmp_path / "w-0.a.log", tmp_path / "w-0.b.log", tmp_path / "w-0.log"
    old.write_text("printed\nlast words\n")
    new.write_text("the successor's first\n")
    link.symlink_to(new.name)  # moved before the follower looked again
    text, moves = _follow(old, len("printed\n"), link, "first\n")
    assert (text, moves) == ("last words\nthe successor's first\n", [new.name])


def test_a_link_that_went_leaves_the_file_followed(tmp_path: Path) -> None:
    path, link = tmp_path / "w-0.a.log", tmp_path / "w-0.log"  # no link: undeployed
    path.write_text("draining on\n")
    assert _follow(path, 0, link, "on\n") == ("draining on\n", [])
