"""The store: a database engine, its session factory, and the repository functions on top.

Every public method runs in its own transaction (``with self.session() as s, s.begin()``):
it commits as a whole or not at all. Returned rows are detached from their session and keep
their loaded values (``expire_on_commit=False``), so callers can read them freely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from zhisuan.errors import NotFound, UserError, closest
from zhisuan.settings import Settings
from zhisuan.store._db import make_engine, upgrade
from zhisuan.store._deploy_checks import check_base_url, check_format, check_replicas, known_engine
from zhisuan.store._share_store import ShareStoreMixin
from zhisuan.store.models import ENGINES, FORMAT_ENGINES, Deployment, Model

log = logging.getLogger(__name__)


class Store(ShareStoreMixin):
    """Durable state of one zhisuan installation.

    Args:
        engine: an engine from :func:`zhisuan.store.make_engine`; its schema must be at head
            (use :meth:`open` or :func:`open_store`, which migrate it).

    Tenants, API keys and usage records: see :class:`ShareStoreMixin`.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session_factory: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Open the database at ``url``, bringing its schema to the newest revision.

        Args:
            url: an SQLAlchemy URL.
            migrate: run Alembic ``upgrade head`` when the database is behind.

        Returns:
            The store.

        Raises:
            UserError: the URL is malformed, or the database cannot be reached.
        """
        try:
            engine = make_engine(url)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise UserError(
                f"invalid database URL {url!r}: {exc}",
                param="database_url",
                hint="set ZHISUAN_DATABASE_URL to sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST/DB",
            ) from exc
        if migrate:
            try:
                upgrade(engine)
            except OperationalError as exc:
                engine.dispose()
                shown = engine.url.render_as_string(hide_password=True)
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise UserError(
                    f"cannot open the database {shown}: {reason}",
                    param="database_url",
                    hint="check ZHISUAN_DATABASE_URL; for the test PostgreSQL run scripts/pg-up.sh",
                ) from exc
        return cls(engine)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session; use ``with store.session() as s, s.begin(): …`` for one transaction."""
        with self.session_factory() as s:
            yield s

    # -- models ---------------------------------------------------------------------------

    def add_model(self, model: Model, *, finalize: Callable[[], None] | None = None) -> Model:
        """Insert a model row.

        Args:
            model: a new, transient :class:`Model`.
            finalize: called after the row is written but before the commit (the model store
                moves the staged files into place here); if it raises, nothing is committed.

        Returns:
            The stored row (with ``id`` and ``created_at`` filled in).

        Raises:
            UserError: a model with this name already exists.
        """
        try:
            with self.session() as s, s.begin():
                if s.scalar(select(Model.id).where(Model.name == model.name)) is not None:
                    raise _name_taken(model.name)
                s.add(model)
                s.flush()
                if finalize is not None:
                    finalize()
        except IntegrityError as exc:  # lost a race with another importer
            raise _name_taken(model.name) from exc
        log.info("stored model %s (%s, %s)", model.name, model.format, model.path)
        return model

    def check_name_free(self, name: str) -> None:
        """Raise unless ``name`` is free for a new model.

        Raises:
            UserError: a model with this name already exists.
        """
        if self.find_model(name) is not None:
            raise _name_taken(name)

    def get_model(self, name: str) -> Model:
        """The model called ``name``.

        Raises:
            NotFound: no such model; ``suggestions`` holds close names.
        """
        with self.session() as s:
            row = s.scalar(select(Model).where(Model.name == name))
            if row is None:
                raise _model_not_found(s, name)
            return row

    def find_model(self, name: str) -> Model | None:
        """The model called ``name``, or None."""
        with self.session() as s:
            return s.scalar(select(Model).where(Model.name == name))

    def list_models(self) -> list[Model]:
        """Every model, ordered by name."""
        with self.session() as s:
            return list(s.scalars(select(Model).order_by(Model.name)))

    def check_removable(self, name: str) -> Model:
        """The model called ``name``, if it exists and is not deployed.

        Raises:
            NotFound: no such model.
            UserError: the model is deployed (undeploy it first).
        """
        with self.session() as s:
            return self._removable(s, name, lock=False)

    def remove_model(self, name: str) -> Model:
        """Delete the row of model ``name`` (the files are the model store's business).

        Returns:
            The deleted row.

        Raises:
            NotFound: no such model.
            UserError: the model is deployed (undeploy it first).
        """
        with self.session() as s, s.begin():
            row = self._removable(s, name, lock=True)
            s.delete(row)
        log.info("removed model row %s", name)
        return row

    def _removable(self, s: Session, name: str, *, lock: bool) -> Model:
        query = select(Model).where(Model.name == name)
        row = s.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise _model_not_found(s, name)
        dep = s.scalar(select(Deployment).where(Deployment.model_name == name))
        if dep is not None:
            raise UserError(
                f"model {name!r} is deployed ({dep.engine} on {dep.device}, "
                f"{dep.replicas} replica(s)) and cannot be removed",
                code="model_in_use",
                hint=f"undeploy it first: `zhisuan undeploy {name}`",
            )
        return row

    # -- deployments ----------------------------------------------------------------------

    def put_deployment(
        self,
        model_name: str,
        *,
        engine: str,
        device: str = "cpu",
        replicas: int = 1,
        options: dict[str, Any] | None = None,
    ) -> Deployment:
        """Add the deployment of ``model_name``, or replace the existing one.

        Args:
            model_name: the served name; must be an imported model unless ``engine`` is
                ``"upstream"``.
            engine: ``"transformers"``, ``"llamacpp"`` or ``"upstream"``.
            device: ``"cpu"``, ``"cuda:0"`` …
            replicas: number of worker processes (1 to :data:`MAX_REPLICAS`).
            options: engine options (JSON-serialisable).

        Returns:
            The stored deployment.

        Raises:
            InvalidParameter: unknown engine, or replicas outside 1 to :data:`MAX_REPLICAS`.
            NotFound: a local engine names a model that is not imported.
        """
        with self.session() as s, s.begin():
            return _write(s, model_name, engine, device, replicas, dict(options or {}))

    def deploy(
        self,
        model_name: str,
        *,
        engine: str | None = None,
        device: str | None = None,
        replicas: int | None = None,
        options: Mapping[str, Any] | None = None,
        check: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Deployment:
        """Deploy ``model_name``, or change its deployment, keeping what is not given.

        A setting left as None keeps its current value (for a new deployment: the engine
        of the model's format, :data:`FORMAT_ENGINES`, ``cpu``, one replica); ``options``
        are merged into the current ones, a None value removing one. ``check(engine,
        options)`` sees the result before it is stored: what it raises changes nothing.

        Raises:
            InvalidParameter: unknown engine, replicas outside 1 to :data:`MAX_REPLICAS`, a
                local engine that does not run the model's format, an upstream without an
                http(s) base_url.
            NotFound: a local engine names a model that is not imported.
        """
        with self.session() as s, s.begin():
            dep = s.scalar(select(Deployment).where(Deployment.model_name == model_name))
            fmt = s.scalar(select(Model.format).where(Model.name == model_name))
            engine = engine or (dep.engine if dep else FORMAT_ENGINES.get(fmt or "", ENGINES[0]))
            known_engine(engine)
            merged = {**(dep.options if dep else {}), **(options or {})}
            merged = {k: v for k, v in merged.items() if v is not None}
            if check is not None:
                check(engine, merged)
            if engine != "upstream" and fmt is not None:
                check_format(model_name, fmt, engine)
            if engine == "upstream":
                check_base_url(merged.get("base_url"))
            device = device if device is not None else dep.device if dep else "cpu"
            replicas = replicas if replicas is not None else dep.replicas if dep else 1
            return _write(s, model_name, engine, device, replicas, merged)

    def get_deployment(self, model_name: str) -> Deployment:
        """The deployment of ``model_name``.

        Raises:
            NotFound: not deployed; ``suggestions`` holds close deployed names.
        """
        with self.session() as s:
            dep = s.scalar(select(Deployment).where(Deployment.model_name == model_name))
            if dep is None:
                raise _deployment_not_found(s, model_name)
            return dep

    def find_deployment(self, model_name: str) -> Deployment | None:
        """The deployment of ``model_name``, or None."""
        with self.session() as s:
            return s.scalar(select(Deployment).where(Deployment.model_name == model_name))

    def list_deployments(self) -> list[Deployment]:
        """Every deployment, ordered by model name."""
        with self.session() as s:
            return list(s.scalars(select(Deployment).order_by(Deployment.model_name)))

    def remove_deployment(self, model_name: str) -> Deployment:
        """Delete the deployment of ``model_name``.

        Returns:
            The deleted deployment.

        Raises:
            NotFound: not deployed.
        """
        with self.session() as s, s.begin():
            dep = s.scalar(select(Deployment).where(Deployment.model_name == model_name))
            if dep is None:
                raise _deployment_not_found(s, model_name)
            s.delete(dep)
        return dep


def _write(
    s: Session, model_name: str, engine: str, device: str, replicas: int, options: dict[str, Any]
) -> Deployment:
    """Store the deployment of ``model_name`` as given, in the transaction of ``s``."""
    known_engine(engine)
    check_replicas(replicas, model_name)
    # A local engine locks the model row, so a concurrent `models rm` cannot slip in between.
    lock = select(Model.id).where(Model.name == model_name).with_for_update()
    if engine != "upstream" and s.scalar(lock) is None:
        raise NotFound(
            f"model {model_name!r} not found; a {engine} deployment needs an imported model",
            suggestions=closest(model_name, list(s.scalars(select(Model.name)))),
            param="model",
            code="model_not_found",
        )
    dep = s.scalar(select(Deployment).where(Deployment.model_name == model_name))
    if dep is None:
        s.add(dep := Deployment(model_name=model_name))
    dep.engine, dep.device, dep.replicas, dep.options = engine, device, replicas, options
    log.info("deployment %s: %s on %s x%d", model_name, engine, device, replicas)
    return dep


def _model_not_found(s: Session, name: str) -> NotFound:
    names = list(s.scalars(select(Model.name)))
    return NotFound(
        f"model {name!r} not found",
        suggestions=closest(name, names),
        param="model",
        code="model_not_found",
    )


def _deployment_not_found(s: Session, name: str) -> NotFound:
    names = list(s.scalars(select(Deployment.model_name).order_by(Deployment.model_name)))
    listed = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    where = f"deployed: {listed} (`zhisuan ps` shows them)" if names else "nothing is deployed"
    found = closest(name, names)
    return NotFound(f"no deployment of {name!r}", suggestions=found, param="model", otherwise=where)


def _name_taken(name: str) -> UserError:
    return UserError(
        f"a model named {name!r} already exists",
        param="name",
        code="model_exists",
        hint="choose another name with --name, or remove the existing one with "
        f"`zhisuan models rm {name}`",
    )


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open the store named by ``settings.database_url`` (migrating it to head).

    Args:
        settings: platform settings.
        migrate: run Alembic ``upgrade head`` when the database is behind.

    Returns:
        The store; close it with :meth:`Store.close` or use it as a context manager.
    """
    return Store.open(settings.database_url, migrate=migrate)
