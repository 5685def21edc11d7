"""The log files of a backend's workers: one per worker, never renamed or overwritten while
that worker runs.

Each supervised worker of replica slot ``<model>-<index>`` (the replica's worker, a successor
starting beside it, one started after a rollout or an undeploy) gets a file of its own on its
first start, ``<model>-<index>.<started>.log``, ``<started>`` the UTC time of that start
(``20250131T120000.123456Z``; ``-2``, ``-3``… added to a name already taken). A worker
restarted after a crash appends to the same file. ``<model>-<index>.log`` is a symbolic link to
the file of the slot's serving worker, moved (atomically) when a successor takes over and
removed when the slot is undeployed or scaled away, so it always shows the current worker's
output while the old worker writes on in its own file as it drains.

Of the files whose workers have stopped, the newest :data:`KEEP` of each slot are kept and the
older ones removed; a file whose worker runs is never removed.

Readers (``zhisuan logs``) find a slot's files with :func:`link` and :func:`files`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from pathlib import Path

from zhisuan.cluster.base import ReplicaSpec

logger = logging.getLogger(__name__)

KEEP = 3
"""Files of stopped workers kept per replica slot."""

_STAMP = "%Y%m%dT%H%M%S.%fZ"


def slot(spec: ReplicaSpec) -> str:
    """The name of replica ``spec``'s slot in file names: ``<model>-<index>``."""
    return slot_name(spec.model, spec.index)


def slot_name(model: str, index: int) -> str:
    """The name of replica ``index`` of ``model`` in file names: ``<model>-<index>``."""
    return f"{model.replace('/', '_')}-{index}"


def link(directory: Path, model: str, index: int) -> Path:
    """``<model>-<index>.log`` in ``directory``: the link to the serving worker's file of
    replica ``index`` of ``model`` (a regular file if an older zhisuan wrote it; absent when
    no worker of the slot has served, or the slot was undeployed or scaled away)."""
    return directory / f"{slot_name(model, index)}.log"


def files(directory: Path, model: str, index: int) -> list[Path]:
    """The files of the workers of replica ``index`` of ``model`` in ``directory``, running
    and stopped, newest first (by the UTC start in their names); a regular
    ``<model>-<index>.log`` of an older zhisuan comes last (none if the directory is not
    there)."""
    name = slot_name(model, index)
    found = [path for *_, path in sorted(_stamped(directory, name), reverse=True)]
    legacy = link(directory, model, index)
    if legacy.is_file() and not legacy.is_symlink():
        found.append(legacy)
    return found


def indices(directory: Path, model: str) -> list[int]:
    """The replicas of ``model`` that have a file or a link in ``directory``, in order."""
    pattern = re.compile(
        re.escape(model.replace("/", "_")) + r"-(\d+)(?:\.\d{8}T\d{6}\.\d{6}Z(?:-\d+)?)?\.log"
    )
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            match = pattern.fullmatch(path.name)
            if match is not None:
                found.add(int(match[1]))
    return sorted(found)


def started(path: Path) -> dt.datetime | None:
    """The UTC time a worker first started, from the name of its file (None: not one of a
    worker's files, e.g. an older zhisuan's ``<model>-<index>.log``)."""
    match = re.search(r"\.(\d{8}T\d{6}\.\d{6}Z)(?:-\d+)?\.log$", path.name)
    if match is None:
        return None
    return dt.datetime.strptime(match[1], _STAMP).replace(tzinfo=dt.UTC)


class WorkerLogs:
    """The workers' log files in one directory (see the module's doc)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        """
        Args:
            directory: where the files go (created on the first :meth:`new`).
            keep: files of stopped workers kept per slot.
        """
        self.directory = directory
        self._keep = keep
        self._in_use: set[Path] = set()

    def new(self, spec: ReplicaSpec) -> Path:
        """Create a file of its own for a worker of ``spec`` that starts now (removing the
        slot's oldest files of stopped workers beyond :data:`KEEP`); it is in use until
        :meth:`done`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = _create(self.directory, slot(spec))
        self._in_use.add(path)
        self.prune(spec)
        return path

    def done(self, spec: ReplicaSpec, path: Path) -> None:
        """The worker writing ``path`` has stopped for good: its file becomes an old one."""
        self._in_use.discard(path)
        self.prune(spec)

    def serving(self, spec: ReplicaSpec, path: Path) -> None:
        """Point ``<model>-<index>.log`` at ``path``, the file of the slot's serving worker.

        A regular file in its place (written by an older zhisuan) is kept as an old file. A
        link that cannot be made is logged, never raised: the workers run on without it.
        """
        link = self.directory / f"{slot(spec)}.log"
        tmp = self.directory / f".{slot(spec)}.log.{os.getpid()}.tmp"
        try:
            if link.is_file() and not link.is_symlink():
                link.replace(_create(self.directory, slot(spec)))
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(path.name)  # relative: the directory may move
            tmp.replace(link)
        except OSError as exc:
            logger.warning("replica %s: %s does not link to %s: %s", spec.key, link, path, exc)

    def unserved(self, spec: ReplicaSpec, path: Path) -> None:
        """The slot's serving worker, which writes ``path``, left it and none takes over
        (undeployed or scaled away): ``<model>-<index>.log`` goes."""
        link = self.directory / f"{slot(spec)}.log"
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link) == path.name:
                link.unlink()

    def prune(self, spec: ReplicaSpec) -> None:
        """Remove the slot's files of stopped workers but the newest :data:`KEEP`."""
        old = [f for f in _stamped(self.directory, slot(spec)) if f[2] not in self._in_use]
        for *_, path in sorted(old)[: max(len(old) - self._keep, 0)]:
            with contextlib.suppress(OSError):
                path.unlink()


def _stamped(directory: Path, name: str) -> list[tuple[str, int, Path]]:
    """The files of slot ``name`` in ``directory``, each with its start and its number among
    files of the same start (``-2``…), in no order."""
    pattern = re.compile(re.escape(name) + r"\.(\d{8}T\d{6}\.\d{6}Z)(?:-(\d+))?\.log")
    found: list[tuple[str, int, Path]] = []
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            match = pattern.fullmatch(path.name)
            if match is not None:
                found.append((match[1], int(match[2] or 1), path))
    return found


def _create(directory: Path, name: str) -> Path:
    """Create ``<name>.<now>.log``, empty, under a name no file had (never one that exists)."""
    stem = f"{name}.{dt.datetime.now(dt.UTC).strftime(_STAMP)}"
    for n in range(1, 1000):
        path = directory / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            path.open("xb").close()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free log file name for {stem} in {directory}")
