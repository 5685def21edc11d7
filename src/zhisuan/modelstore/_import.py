"""Import and removal of model artifacts: all or nothing.

An import inspects the source, copies it into a hidden staging directory under
``models_dir`` while hashing the weight files (one read of each byte), then, inside the
database transaction that inserts the row, renames the staging directory to
``models_dir/<name>``. Any failure (a refused input, a name clash, a full disk, Ctrl-C)
removes what was staged and leaves the database and ``models_dir`` as they were.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zhisuan.errors import ImportRefused, InvalidParameter
from zhisuan.modelstore._gguf import GGUF_MAGIC, inspect_gguf
from zhisuan.modelstore._hf import inspect_hf_dir
from zhisuan.modelstore._types import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX, ModelInfo
from zhisuan.settings import Settings
from zhisuan.store import LICENCES, MODEL_TASKS, Model, Store

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes per read while hashing/copying
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")
STAGING_PREFIX = ".staging-"
REMOVING_PREFIX = ".removing-"

# progress(file being read, bytes done so far, bytes in all)
ProgressCallback = Callable[[str, int, int], None]


def validate_name(name: str) -> str:
    """Check a model name: lowercase letters, digits and ``-_.:``, at most 64 characters.

    Raises:
        InvalidParameter: the name does not fit.
    """
    if not NAME_RE.fullmatch(name):
        raise InvalidParameter(
            f"invalid model name {name!r}",
            param="name",
            hint="use lowercase letters, digits and -_.: (starting with a letter or digit), "
            "at most 64 characters",
        )
    return name


def default_name(path: Path) -> str:
    """The name a model gets without ``--name``: the directory name or the GGUF file stem,
    lowercased, other characters replaced by ``-``.

    Raises:
        InvalidParameter: nothing usable is left of the name.
    """
    path = path.expanduser().resolve()
    stem = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^a-z0-9._:-]+", "-", stem.lower()).lstrip("._:-")[:64]
    return validate_name(name)


def inspect_path(path: Path, *, allow_pickle: bool = False) -> ModelInfo:
    """Inspect an HF-format directory or a GGUF file without loading or running it.

    Args:
        path: the directory or file.
        allow_pickle: accept pickle weights (HF directories only).

    Returns:
        The model's facts.

    Raises:
        ImportRefused: the path is missing, of an unsupported kind, or refused by the
            inspector (see :func:`inspect_hf_dir` and :func:`inspect_gguf`).
    """
    path = path.expanduser()
    if not path.exists():
        raise ImportRefused(f"{path} does not exist", param="path", hint="check the path")
    if path.is_dir():
        return inspect_hf_dir(path, allow_pickle=allow_pickle)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if path.suffix == ".gguf" or magic == GGUF_MAGIC:
        return inspect_gguf(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        hint = "pass the directory holding it together with config.json and the tokenizer"
    elif path.suffix in PICKLE_SUFFIXES:
        hint = "pass the HF-format directory holding it (pickle needs --allow-pickle)"
    else:
        hint = "pass an HF-format directory (config.json, *.safetensors) or a .gguf file"
    raise ImportRefused(f"cannot import {path}: not a directory or a GGUF file", hint=hint)


def import_model(
    store: Store,
    settings: Settings,
    path: Path,
    *,
    name: str | None = None,
    licence: str = "research",
    task: str | None = None,
    allow_pickle: bool = False,
    link: bool = False,
    progress: ProgressCallback | None = None,
) -> Model:
    """Import a model into the store, all or nothing.

    Args:
        store: the store to record it in.
        settings: gives ``models_dir``, where copies go.
        path: an HF-format directory or a GGUF file.
        name: the served name (default: from the path, see :func:`default_name`).
        licence: ``"research"`` or ``"commercial"``.
        task: ``"chat"`` or ``"embedding"`` to override detection.
        allow_pickle: accept pickle weights (read with ``torch.load(weights_only=True)``).
        link: record the original location instead of copying (the files must stay there).
        progress: called as ``progress(file, bytes_done, bytes_total)`` while reading.

    Returns:
        The stored row.

    Raises:
        ImportRefused: the input is refused (see :func:`inspect_path`), or the destination
            directory exists without a row.
        InvalidParameter: a bad name, licence or task.
        UserError: the name is taken.
    """
    if licence not in LICENCES:
        raise InvalidParameter(
            f"unknown licence tier {licence!r}", param="licence", hint="use research or commercial"
        )
    if task is not None and task not in MODEL_TASKS:
        raise InvalidParameter(
            f"unknown task {task!r}", param="task", hint=f"use one of: {', '.join(MODEL_TASKS)}"
        )
    path = path.expanduser()
    name = validate_name(name) if name is not None else default_name(path)
    store.check_name_free(name)  # fail before reading gigabytes
    info = inspect_path(path, allow_pickle=allow_pickle)
    dest = settings.models_dir / name
    if not link and (dest.exists() or dest.is_symlink()):
        raise ImportRefused(
            f"{dest} already exists but no model {name!r} is recorded",
            param="name",
            hint="move or delete that directory, or choose another --name",
        )
    row = Model(
        name=name,
        format=info.format,
        task=task or info.task,
        source_path=str(info.root),
        linked=link,
        architecture=info.architecture,
        param_count=info.param_count,
        num_layers=info.num_layers,
        hidden_size=info.hidden_size,
        num_heads=info.num_heads,
        num_kv_heads=info.num_kv_heads,
        context_length=info.context_length,
        dtype=info.dtype,
        bytes_on_disk=info.bytes_on_disk,
        licence=licence,
    )
    if link:
        row.path = str(info.root)
        row.files = _hash_in_place(info, progress)
        return store.add_model(row)

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    staging = settings.models_dir / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    moved = False

    def finalize() -> None:
        nonlocal moved
        os.rename(staging, dest)  # atomic; fails if dest appeared meanwhile
        moved = True

    try:
        staging.mkdir()
        row.files = _copy_and_hash(info, staging, progress)
        row.path = str(dest if info.format == "hf" else dest / info.files[0])
        stored = store.add_model(row, finalize=finalize)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if moved:  # renamed, then the commit failed
            shutil.rmtree(dest, ignore_errors=True)
        raise
    log.info("imported %s from %s into %s", name, info.root, dest)
    return stored


def remove_model(store: Store, settings: Settings, name: str) -> Model:
    """Remove a model: its row, and its files when they were copied (never linked originals).

    Args:
        store: the store.
        settings: gives ``models_dir``.
        name: the model's name.

    Returns:
        The removed row.

    Raises:
        NotFound: no such model (with close names).
        UserError: the model is deployed.
    """
    row = store.check_removable(name)  # refuse before touching any file
    target = settings.models_dir / name
    trash: Path | None = None
    if not row.linked and _inside(Path(row.path), settings.models_dir) and target.exists():
        # Move the files aside first, so a failed delete of the row can put them back.
        trash = settings.models_dir / f"{REMOVING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, trash)
    try:
        removed = store.remove_model(name)
    except BaseException:
        if trash is not None:
            os.rename(trash, target)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    log.info("removed model %s%s", name, " (files deleted)" if trash else "")
    return removed


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _copy_and_hash(
    info: ModelInfo, staging: Path, progress: ProgressCallback | None
) -> list[dict[str, Any]]:
    total = info.bytes_on_disk
    done = 0
    weights = set(info.weight_files)
    records: list[dict[str, Any]] = []
    for rel in info.files:
        src = info.base_dir / rel
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with src.open("rb") as fin, dst.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(rel, done, total)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, dst)
        if rel in weights:
            records.append({"name": rel, "bytes": size, "sha256": digest.hexdigest()})
    return records


def _hash_in_place(info: ModelInfo, progress: ProgressCallback | None) -> list[dict[str, Any]]:
    total = sum((info.base_dir / rel).stat().st_size for rel in info.weight_files)
    done = 0
    records: list[dict[str, Any]] = []
    for rel in info.weight_files:
        digest = hashlib.sha256()
        size = 0
        with (info.base_dir / rel).open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(rel, done, total)
        records.append({"name": rel, "bytes": size, "sha256": digest.hexdigest()})
    return records
