"""Load the built-in catalog, merge user YAML over it, and look entries up by name.

User files hold the same top-level keys as the built-in ones (``accelerators:`` and/or
``models:``). An entry whose ``id`` (or alias) matches a built-in entry overrides just the fields
it names; a new ``id`` adds an entry. Files are read from ``<home>/catalog/*.yaml`` and then from
``extra_paths`` in order, so later files win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from zhisuan.catalog._gguf import model_from_gguf
from zhisuan.catalog._gguf_header import is_gguf
from zhisuan.catalog._hfconfig import model_from_hf_config
from zhisuan.catalog._types import MLA, Accelerator, ModelArch, MoE, Price
from zhisuan.errors import InvalidParameter, NotFound, closest

log = logging.getLogger(__name__)

ModelResolver = Callable[[str], Path | None]

_ACC_REQUIRED = ("id", "memory_gb", "memory_bw_tbs", "tdp_w")
_MODEL_REQUIRED = ("id", "layers", "hidden", "heads", "vocab")


def _safe_load(text: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _check(entry: dict[str, Any], required: Sequence[str], origin: str) -> None:
    missing = [k for k in required if entry.get(k) in (None, "")]
    if missing:
        raise InvalidParameter(
            f"catalog entry {entry.get('id', '?')!r} in {origin} lacks {', '.join(missing)}",
            param="catalog",
        )
    for key in ("source", "confidence"):
        if not entry.get(key):
            entry[key] = f"user-supplied ({origin}); no {key} given"


def accelerator_from_dict(entry: dict[str, Any], origin: str = "builtin") -> Accelerator:
    """Build an :class:`Accelerator` from a catalog mapping.

    Args:
        entry: the YAML mapping (see ``data/accelerators.yaml`` for fields).
        origin: file it came from.

    Returns:
        The accelerator.

    Raises:
        InvalidParameter: a required field is missing or has the wrong type.
    """
    entry = dict(entry)
    _check(entry, _ACC_REQUIRED, origin)
    price_raw = entry.get("price") or {}
    try:
        return Accelerator(
            id=str(entry["id"]),
            name=str(entry.get("name", entry["id"])),
            vendor=str(entry.get("vendor", "")),
            kind=str(entry.get("kind", "gpu")),
            memory_gb=float(entry["memory_gb"]),
            memory_bw_tbs=float(entry["memory_bw_tbs"]),
            interconnect_gbs=float(entry.get("interconnect_gbs") or 64.0),
            network_gbs=float(entry.get("network_gbs") or 12.5),
            devices_per_node=int(entry.get("devices_per_node") or 8),
            tdp_w=float(entry["tdp_w"]),
            source=str(entry["source"]),
            confidence=str(entry["confidence"]),
            fp64=_opt_float(entry.get("fp64")),
            fp32=_opt_float(entry.get("fp32")),
            tf32=_opt_float(entry.get("tf32")),
            fp16=_opt_float(entry.get("fp16")),
            bf16=_opt_float(entry.get("bf16")),
            fp8=_opt_float(entry.get("fp8")),
            int8=_opt_float(entry.get("int8")),
            avg_power_w=_opt_float(entry.get("avg_power_w")),
            server_power_w=_opt_float(entry.get("server_power_w")),
            price=Price(
                purchase=_opt_float(price_raw.get("purchase")),
                hourly=_opt_float(price_raw.get("hourly")),
                currency=str(price_raw.get("currency", "USD")).upper(),
                note=str(price_raw.get("note", "indicative")),
            ),
            aliases=tuple(str(a) for a in entry.get("aliases") or ()),
            origin=origin,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(
            f"catalog entry {entry.get('id')!r} in {origin}: {exc}", param="catalog"
        ) from exc


def model_from_dict(entry: dict[str, Any], origin: str = "builtin") -> ModelArch:
    """Build a :class:`ModelArch` from a catalog mapping.

    Args:
        entry: the YAML mapping (see ``data/models.yaml`` for fields).
        origin: file it came from.

    Returns:
        The architecture.

    Raises:
        InvalidParameter: a required field is missing or has the wrong type.
    """
    entry = dict(entry)
    _check(entry, _MODEL_REQUIRED, origin)
    try:
        hidden, heads = int(entry["hidden"]), int(entry["heads"])
        moe_raw, mla_raw = entry.get("moe"), entry.get("mla")
        seq_len = int(entry.get("seq_len") or 2048)
        return ModelArch(
            id=str(entry["id"]),
            name=str(entry.get("name", entry["id"])),
            family=str(entry.get("family", "")),
            layers=int(entry["layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(entry.get("kv_heads") or heads),
            head_dim=int(entry.get("head_dim") or hidden // heads),
            ffn=int(entry.get("ffn") or 4 * hidden),
            vocab=int(entry["vocab"]),
            seq_len=seq_len,
            max_context=int(entry.get("max_context") or seq_len),
            source=str(entry["source"]),
            confidence=str(entry["confidence"]),
            gated_mlp=str(entry.get("mlp", "gated")) == "gated",
            tied_embeddings=bool(entry.get("tied_embeddings", False)),
            learned_pos=str(entry.get("pos", "rope")) == "learned",
            bias=bool(entry.get("bias", False)),
            qkv_bias=bool(entry.get("qkv_bias", False)),
            moe=MoE(**moe_raw) if moe_raw else None,
            mla=MLA(**mla_raw) if mla_raw else None,
            published_params_b=_opt_float(entry.get("published_params_b")),
            published_active_b=_opt_float(entry.get("published_active_b")),
            aliases=tuple(str(a) for a in entry.get("aliases") or ()),
            origin=origin,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(
            f"catalog entry {entry.get('id')!r} in {origin}: {exc}", param="catalog"
        ) from exc


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@lru_cache(maxsize=1)
def _builtin_raw() -> dict[str, list[dict[str, Any]]]:
    data = resources.files("zhisuan.catalog") / "data"
    acc = _safe_load((data / "accelerators.yaml").read_text(encoding="utf-8"))
    mod = _safe_load((data / "models.yaml").read_text(encoding="utf-8"))
    return {"accelerators": list(acc["accelerators"]), "models": list(mod["models"])}


def _user_files(home: Path | None, extra_paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    if home is not None:
        folder = Path(home).expanduser() / "catalog"
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")))
    files.extend(Path(p).expanduser() for p in extra_paths)
    return files


def _merge(
    base: list[dict[str, Any]], extra: list[dict[str, Any]], origin: str
) -> list[dict[str, Any]]:
    index: dict[str, int] = {}
    for i, entry in enumerate(base):
        for key in (entry.get("id", ""), *(entry.get("aliases") or ())):
            index[_norm(str(key))] = i
    for entry in extra:
        if not isinstance(entry, dict) or "id" not in entry:
            raise InvalidParameter(f"catalog file {origin}: every entry needs an id")
        pos = index.get(_norm(str(entry["id"])))
        if pos is None:
            base.append({**entry, "_origin": origin})
            index[_norm(str(entry["id"]))] = len(base) - 1
        else:
            merged = {**base[pos], **entry, "_origin": origin}
            merged["id"] = base[pos]["id"]
            base[pos] = merged
    return base


@dataclass
class Catalog:
    """Accelerators and model architectures, with lookups that suggest close names."""

    accelerators: dict[str, Accelerator] = field(default_factory=dict)
    models: dict[str, ModelArch] = field(default_factory=dict)
    _acc_alias: dict[str, str] = field(default_factory=dict)
    _model_alias: dict[str, str] = field(default_factory=dict)

    def add_accelerator(self, acc: Accelerator) -> None:
        """Register (or replace) an accelerator and its aliases."""
        self.accelerators[acc.id] = acc
        for key in (acc.id, *acc.aliases):
            self._acc_alias[_norm(key)] = acc.id

    def add_model(self, model: ModelArch) -> None:
        """Register (or replace) a model architecture and its aliases."""
        self.models[model.id] = model
        for key in (model.id, *model.aliases):
            self._model_alias[_norm(key)] = model.id

    def accelerator(self, name: str) -> Accelerator:
        """Look an accelerator up by id or alias (case-insensitive).

        Args:
            name: e.g. ``h100``, ``A100-80GB``, ``ascend-910b``.

        Returns:
            The accelerator.

        Raises:
            NotFound: no such device; ``suggestions`` holds the closest ids.
        """
        key = self._acc_alias.get(_norm(name))
        if key is None:
            names = sorted(set(self._acc_alias))
            hits = [self._acc_alias[h] for h in closest(_norm(name), names, n=4)]
            raise NotFound(
                f"unknown device {name!r}",
                suggestions=list(dict.fromkeys(hits)),
                param="device",
                code="device_not_found",
            )
        return self.accelerators[key]

    def model(
        self, name: str, resolver: ModelResolver | None = None, *, paths: bool = True
    ) -> ModelArch:
        """Look a model up by catalog id/alias, a model file's path, or a store name.

        Args:
            name: catalog id (``llama3-70b``), a path to an HF ``config.json``, a model
                directory or a GGUF file, or a model-store name handed to ``resolver``.
            resolver: maps a model-store name to its directory, ``config.json`` or GGUF
                file.
            paths: read files; False takes catalog ids and aliases only (for callers that
                must not read the host's files, such as the planner API).

        Returns:
            The architecture (a file's: see :func:`model_from_path`).

        Raises:
            NotFound: nothing matched; ``suggestions`` holds the closest catalog ids.
            InvalidParameter: a path was given but its shape could not be read (a GGUF
                file of an architecture the catalog does not map, too).
            ImportRefused: a damaged GGUF file.
        """
        key = self._model_alias.get(_norm(name))
        if key is not None:
            return self.models[key]
        path = Path(name).expanduser()
        if paths and (name.endswith(".json") or path.is_dir() or path.is_file()):
            if path.exists():
                return model_from_path(path)
            raise NotFound(f"model config {name!r} does not exist", param="model")
        if paths and resolver is not None:
            resolved = resolver(name)
            if resolved is not None:
                return model_from_path(Path(resolved), name=name)
        names = sorted(set(self._model_alias))
        hits = [self._model_alias[h] for h in closest(_norm(name), names, n=4)]
        where = (
            "not in the catalog, not a config.json or GGUF path" if paths else "not in the catalog"
        )
        raise NotFound(
            f"unknown model {name!r} ({where})",
            suggestions=list(dict.fromkeys(hits)),
            param="model",
            code="model_not_found",
        )


def model_from_path(path: Path, *, name: str | None = None) -> ModelArch:
    """The architecture of a model on disk: a GGUF file (named ``.gguf`` or starting as one
    does) from its metadata, else an HF ``config.json`` or a directory holding one.

    Args:
        path: the file or directory.
        name: id to give the model (default: the GGUF file's stem, the HF directory's name).

    Returns:
        The architecture, with ``origin`` the file.

    Raises:
        InvalidParameter: the shape cannot be read (a missing file, a GGUF architecture
            the catalog does not map, a config without the shape keys).
        ImportRefused: a damaged GGUF file.
    """
    if path.suffix.lower() == ".gguf" or is_gguf(path):
        return model_from_gguf(path, name=name or path.stem)
    return model_from_hf_config(path, name=name)


def load_catalog(home: Path | None = None, extra_paths: Sequence[Path] = ()) -> Catalog:
    """The built-in catalog with user files merged over it.

    Args:
        home: zhisuan home; ``<home>/catalog/*.yaml`` are read when present.
        extra_paths: more YAML files, applied last.

    Returns:
        A :class:`Catalog`.

    Raises:
        InvalidParameter: a user file is missing, unreadable or malformed.
    """
    files = _user_files(home, extra_paths)
    if not files:
        return _builtin_catalog()
    raw = _builtin_raw()
    accs = [dict(e) for e in raw["accelerators"]]
    models = [dict(e) for e in raw["models"]]
    for file in files:
        try:
            data = _safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidParameter(f"cannot read catalog file {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidParameter(f"catalog file {file} must be a mapping")
        accs = _merge(accs, list(data.get("accelerators") or []), str(file))
        models = _merge(models, list(data.get("models") or []), str(file))
    return _build(accs, models)


def _build(accs: list[dict[str, Any]], models: list[dict[str, Any]]) -> Catalog:
    cat = Catalog()
    for entry in accs:
        origin = str(entry.pop("_origin", "builtin"))
        cat.add_accelerator(accelerator_from_dict(entry, origin))
    for entry in models:
        origin = str(entry.pop("_origin", "builtin"))
        cat.add_model(model_from_dict(entry, origin))
    return cat


@lru_cache(maxsize=1)
def _builtin_catalog() -> Catalog:
    raw = _builtin_raw()
    return _build([dict(e) for e in raw["accelerators"]], [dict(e) for e in raw["models"]])
