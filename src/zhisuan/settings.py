"""Settings from one pydantic-settings class, built once and passed down.

Every field reads from the environment with the ``ZHISUAN_`` prefix, e.g.
``ZHISUAN_HOME=/srv/zhisuan`` or ``ZHISUAN_DATABASE_URL=postgresql+psycopg://…``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".zhisuan"


class Settings(BaseSettings):
    """Platform settings.

    Attributes:
        home: data directory (SQLite file, imported model metadata, worker logs).
        database_url: SQLAlchemy URL; default ``sqlite:///<home>/zhisuan.db``.
        host: gateway listen address.
        port: gateway listen port.
        auth: ``on``, ``off`` (loopback only) or ``auto`` (on unless bound to loopback).
        admin_key: a bootstrap admin key (``ZHISUAN_ADMIN_KEY``), besides stored ones.
        max_body_bytes: request bodies over this get 413.
        cpu_power_w / gpu_power_w: device power used for energy estimates.
        device_cost_per_hour: price of a device-hour for models without token prices.
        budget_deadline_s: how long a request billed by device time may run when its tenant
            or key has a money budget: it reserves that many seconds of the device at
            admission and is ended when they are up, so no budget is overshot.
        metrics_access: who may read ``/metrics`` with auth on: ``open`` (anyone, for a
            Prometheus scraper without credentials) or ``admin`` (an admin key: the metrics
            name every tenant, with its requests and cost).
        cpu_pinning: ``auto`` (the gateway keeps a core, CPU replicas share the rest, see
            :mod:`zhisuan.cluster.cores`) or ``off``.
        shutdown_timeout_s: on SIGTERM or Ctrl-C, how long requests in flight may go on
            before the gateway ends them (each metered, its client told why); also how long
            a worker replaced or undeployed finishes its requests.
    """

    model_config = SettingsConfigDict(env_prefix="ZHISUAN_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: str = Field(default="auto", pattern="^(auto|on|off)$")
    admin_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    worker_start_timeout_s: float = 120.0
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    cpu_power_w: float = Field(default=65.0, gt=0, description="CPU power for energy estimates")
    gpu_power_w: float = Field(default=300.0, gt=0, description="GPU power without NVML")
    device_cost_per_hour: float = Field(default=0.0, ge=0, description="when not token-priced")
    budget_deadline_s: float = Field(default=300.0, gt=0, description="see the class's doc")
    currency: str = "USD"
    metrics_access: str = Field(default="open", pattern="^(open|admin)$")
    cpu_pinning: str = Field(default="auto", pattern="^(auto|off)$")
    shutdown_timeout_s: int = Field(default=30, ge=0, description="see the class's doc")

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'zhisuan.db'}"
        return self

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def ensure_home(self) -> None:
        """Create the home directory tree if it does not exist."""
        for path in (self.home, self.models_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
