"""The admin API of a real ``zhisuan serve --auth on`` answers a mistake with the reason and
the hint that the CLI prints for the same mistake: OpenAI's error body plus ``hint``, as its
OpenAPI schema states; the OpenAI endpoints keep OpenAI's body as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server._serve import Server, start_server

pytestmark = pytest.mark.server

ADMIN = "zs-test-admin-key-hints-0123456789"
OPENAI_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with auth on, a tenant ``acme`` with a key, and nothing deployed."""
    home: Path = tmp_path_factory.mktemp("hints")
    srv = start_server(home, "--auth", "on", env={"ZHISUAN_ADMIN_KEY": ADMIN})
    try:
        srv.wait_ready(timeout=60)
        assert _call(srv, "POST", "/admin/tenants", json={"name": "acme"}).status_code == 201
        assert _call(srv, "POST", "/admin/keys", json={"tenant": "acme"}).status_code == 201
        yield srv
    finally:
        srv.stop()


def _call(srv: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, f"{srv.url}{path}", headers=headers, timeout=30, **kw)


def _cli_says(srv: Server, *args: str) -> tuple[str, str]:
    """The reason and the hint the CLI prints for ``args`` (a mistake: exit 2)."""
    done = srv.cli(*args, check=False)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith("error: ") and hint.startswith("hint: ")
    return error.removeprefix("error: "), hint.removeprefix("hint: ")


def _prefix(srv: Server) -> str:
    return str(_call(srv, "GET", "/admin/keys", params={"tenant": "acme"}).json()[0]["prefix"])


@pytest.mark.parametrize(
    ("method", "path", "body", "cli", "status", "param", "code"),
    [
        ("POST", "/admin/tenants", {"name": "Bad Name"}, ["tenants", "create", "Bad Name"],
         400, "name", "invalid_parameter"),
        ("POST", "/admin/tenants", {"name": "beta", "budget": 1.0000004},
         ["tenants", "create", "beta", "--budget", "1.0000004"], 400, "budget",
         "invalid_parameter"),
        ("PATCH", "/admin/tenants/acme", {"budget": 0}, ["tenants", "set", "acme", "--budget", "0"],
         400, "budget", "invalid_parameter"),
        ("PATCH", "/admin/tenants/acme", {"rpm": 0}, ["tenants", "set", "acme", "--rpm", "0"],
         400, "rpm", "invalid_parameter"),
        ("PATCH", "/admin/tenants/acm", {"rpm": 5}, ["tenants", "set", "acm", "--rpm", "5"],
         404, "tenant", "tenant_not_found"),
        ("POST", "/admin/tenants", {"name": "beta", "weight": 0},
         ["tenants", "create", "beta", "--weight", "0"], 400, "weight", "invalid_parameter"),
        ("PATCH", "/admin/tenants/acme", {"weight": 101},
         ["tenants", "set", "acme", "--weight", "101"], 400, "weight", "invalid_parameter"),
        ("POST", "/admin/keys", {"tenant": "acme", "budget": 0.1234567},
         ["keys", "create", "--tenant", "acme", "--budget", "0.1234567"], 400, "budget",
         "invalid_parameter"),
        ("PATCH", "/admin/keys/{prefix}", {"budget": 2.5e-6},
         ["keys", "set", "{prefix}", "--budget", "0.0000025"], 400, "budget",
         "invalid_parameter"),
    ],
)  # fmt: skip
def test_an_admin_error_carries_the_hint_the_cli_prints(
    gateway: Server,
    method: str,
    path: str,
    body: dict[str, Any],
    cli: list[str],
    status: int,
    param: str,
    code: str,
) -> None:
    prefix = _prefix(gateway)
    message, hint = _cli_says(gateway, *(arg.format(prefix=prefix) for arg in cli))
    answer = _call(gateway, method, path.format(prefix=prefix), json=body)
    assert answer.status_code == status, answer.text
    assert answer.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
            "hint": hint,
        }
    }


def test_a_replica_count_over_the_cap_says_what_to_do(gateway: Server) -> None:
    body = {
        "model": "far",
        "engine": "upstream",
        "replicas": 65,
        "options": {"base_url": "http://127.0.0.1:9/v1"},
    }
    answer = _call(gateway, "POST", "/admin/deployments", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "message": "replicas must be from 1 to 64, not 65",
        "type": "invalid_request_error",
        "param": "replicas",
        "code": "invalid_parameter",
        "hint": "give replicas from 1 to 64, the most one deployment runs; a larger "
        "--max-batch (options.max_batch) serves more requests per replica",
    }
    assert _call(gateway, "GET", "/admin/deployments").json() == []


def test_a_malformed_body_has_a_null_hint_and_is_still_a_400(gateway: Server) -> None:
    answer = _call(gateway, "POST", "/admin/tenants", json={"name": "x", "rpm": "many"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"], error["hint"]) == ("rpm", "invalid_parameter", None)
    assert error["message"].startswith("Invalid value for 'rpm': ")


def test_openai_endpoints_keep_openai_error_bodies(gateway: Server) -> None:
    key = _call(gateway, "POST", "/admin/keys", json={"tenant": "acme"}).json()["key"]
    body = {"model": "not-deployed", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 404
    assert set(answer.json()["error"]) == OPENAI_FIELDS


def test_the_schema_states_the_hint_of_every_admin_error(gateway: Server) -> None:
    schema = _call(gateway, "GET", "/openapi.json").json()
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == OPENAI_FIELDS | {"hint"}
    assert set(detail["required"]) == OPENAI_FIELDS  # left out where a key is refused
    admin = {p: ops for p, ops in schema["paths"].items() if p.startswith("/admin/")}
    assert admin
    for path, ops in admin.items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            for status in ("400", "404", "4XX"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/AdminError", where
            assert "422" not in op["responses"], where  # a malformed body is a 400 here
    answer = _call(gateway, "PATCH", "/admin/tenants/acme", json={"budget": 1.0000004})
    error = answer.json()["error"]
    assert set(detail["required"]) <= set(error) <= set(detail["properties"])
