"""OpenAI's wording for a request field of the wrong JSON type.

OpenAI answers ``{"stream": "yes"}`` with ``Invalid type for 'stream': expected a boolean,
but got a string instead.`` (code ``invalid_type``), and names what it expected the way its
schema has it: ``an integer``, ``a decimal``, ``an array of objects``, ``one of a string or
array of strings``, ``one of 'float' or 'base64'``. :func:`reported` picks the error to
report from pydantic's list (for a union, the member the input was meant for), and
:func:`expected` and :func:`json_kind` word it, from the request model's JSON schema where
the caller has one, else from pydantic's error types alone.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel

Error = dict[str, Any]
"""One entry of ``ValidationError.errors()``."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# pydantic puts union member tags into ``loc`` (("stop", "list[str]")); they are not fields
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
UNION = "zhisuan_union_type"
"""The type of the error :func:`reported` makes of a union none of whose members fits."""
# pydantic's type errors, and the noun for what each expected
_NOUNS = {
    "bool_type": "boolean",
    "int_type": "integer",
    "int_from_float": "integer",
    "float_type": "decimal",
    "string_type": "string",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}
_JSON_NOUNS = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}
_PLURALS = {noun: f"{noun}s" for noun in _JSON_NOUNS.values()}


def is_tag(part: int | str) -> bool:
    """Whether ``part`` of an error's ``loc`` is a union member's tag, not a field."""
    return isinstance(part, str) and (not _IDENT.match(part) or part in _TYPE_TAGS)


def is_type_error(error: Error) -> bool:
    """Whether ``error`` says the input has the wrong JSON type (not a wrong value).

    A literal (an enum of strings) given a string has a wrong value; given anything else,
    the wrong type.
    """
    kind = error.get("type")
    if kind == "literal_error":
        return not isinstance(error.get("input"), str)
    return kind in _NOUNS or kind == UNION


def reported(errors: list[Error]) -> Error:
    """The error to report of ``errors`` (not empty): the first, except in a union.

    pydantic reports every member of a union that failed (``("stop", "str")``,
    ``("stop", "list[str]", 1)``). When some member got past the input's type (its error
    is deeper, or about a value), that member's first error is the one; when none did, the
    union itself has the wrong type, and the error is one of type :data:`UNION` at the
    union's ``loc``, with the members' error types in ``ctx["members"]``.
    """
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    cut = next((i for i, part in enumerate(loc) if is_tag(part)), None)
    if cut is None:
        return first
    prefix = loc[:cut]

    def in_union(error: Error) -> bool:
        where = tuple(error.get("loc", ()))
        return len(where) > cut and where[:cut] == prefix and is_tag(where[cut])

    group = [e for e in errors if in_union(e)]
    fitting = [e for e in group if len(e["loc"]) > cut + 1 or not is_type_error(e)]
    if not fitting:
        members = [e.get("type") for e in group]
        return {**first, "loc": prefix, "type": UNION, "ctx": {"members": members}}
    member = fitting[0]["loc"][cut]
    inner = [
        {**e, "loc": (*prefix, *tuple(e["loc"])[cut + 1 :])}
        for e in group
        if e["loc"][cut] == member
    ]
    return reported(inner)


def json_kind(value: Any) -> str:
    """What ``value`` is in JSON, as OpenAI words it: ``a string``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _article(type(value).__name__)  # not from JSON


def expected(error: Error, model: type[BaseModel] | None) -> str:
    """What the field of a type ``error`` takes, e.g. ``an array of objects``.

    Args:
        error: a type error (:func:`is_type_error`), as :func:`reported` gives it.
        model: the request model, whose schema words it exactly; without it the error's
            own type does (``an array``, without what of).
    """
    if model is not None:
        root = _schema(model)
        node = _node(root, [p for p in error.get("loc", ()) if not is_tag(p)])
        text = None if node is None else _describe(node, root)
        if text is not None:
            return text
    if error.get("type") == UNION:
        nouns = [_NOUNS.get(str(t), "value") for t in error.get("ctx", {}).get("members", [])]
        return _one_of(list(dict.fromkeys(nouns)))
    if error.get("type") == "literal_error":
        return f"one of {error.get('ctx', {}).get('expected', 'the supported values')}"
    return _article(_NOUNS.get(str(error.get("type")), "value"))


@functools.cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _deref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root.get("$defs", {}).get(str(node["$ref"]).rsplit("/", 1)[-1], {})
    return node


def _node(root: dict[str, Any], loc: list[int | str]) -> dict[str, Any] | None:
    """The schema of the value at ``loc`` (fields and indices only), if it has one."""
    node: Any = root
    for part in loc:
        kind = "array" if isinstance(part, int) else "object"
        node = _deref(node, root)
        fits = [_deref(m, root) for m in node.get("anyOf", [node])]
        node = next((m for m in fits if m.get("type") == kind), None)
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = node.get("properties", {}).get(part, node.get("additionalProperties"))
        if not isinstance(node, dict):
            return None
    return _deref(node, root)


def _describe(node: dict[str, Any], root: dict[str, Any]) -> str | None:
    members = [_deref(m, root) for m in node.get("anyOf", [node])]
    nouns = [_noun(m, root) for m in members if m.get("type") != "null"]
    if not nouns or any(n is None for n in nouns):
        return None
    return _one_of([n for n in nouns if n is not None])


def _noun(node: dict[str, Any], root: dict[str, Any]) -> str | None:
    """``string``, ``array of objects``, ``one of 'a' or 'b'``; None for a schema of
    no one type (``Any``, a union)."""
    if "enum" in node:
        return "one of " + _listing([f"'{v}'" for v in node["enum"]])
    if "const" in node:
        return f"'{node['const']}'"
    noun = _JSON_NOUNS.get(str(node.get("type")))
    if noun == "array" and isinstance(node.get("items"), dict):
        items = _deref(node["items"], root)
        item = _JSON_NOUNS.get(str(items.get("type")))
        if item is not None and "enum" not in items:
            return f"array of {_PLURALS[item]}"
    return noun


def _one_of(nouns: list[str]) -> str:
    if len(nouns) == 1:
        return _article(nouns[0])
    return "one of " + _listing([_article(nouns[0]), *nouns[1:]])


def _listing(items: list[str]) -> str:
    """``a``, ``a or b``, ``a, b, or c``."""
    if len(items) <= 2:
        return " or ".join(items)
    return ", ".join(items[:-1]) + ", or " + items[-1]


def _article(noun: str) -> str:
    if noun.startswith(("one of", "'")):
        return noun
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
