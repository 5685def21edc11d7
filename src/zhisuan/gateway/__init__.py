"""The OpenAI-compatible HTTP gateway: routing, metering, admin API."""

from __future__ import annotations

from zhisuan.gateway.app import create_app

__all__ = ["create_app"]
