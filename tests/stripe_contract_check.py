"""Contract check: validate logged Stripe requests against the stripe SDK's parameter types.

The Stripe test peer writes one JSON line per request the code under test made::

    {"method": "POST", "path": "/v1/invoices/in_1/add_lines", "query": "...", "body": "..."}

:func:`request_problems` checks one such request against the pinned stripe-python SDK:

* the route table ``(method, path template) -> params TypedDict`` is derived from the
  SDK's own service modules (parsed with :mod:`ast`, starting at the services that
  ``stripe.StripeClient().v1`` exposes and following their ``_subservices``);
* the form-encoded parameters are decoded back into nested dicts/lists
  (:func:`decode_form`, the inverse of ``stripe._encode._api_encode`` + ``urlencode``)
  and validated recursively against the TypedDict (unknown / missing keys, Literal
  values, integer / boolean / decimal shapes, lists, metadata maps).

Nothing here talks to the network.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

import stripe
import typing_extensions
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from stripe._stripe_object import StripeObject

FormValue: TypeAlias = "str | dict[str, FormValue] | list[FormValue]"
"""A decoded form value: a scalar string, a nested object or a list."""

SDK_VERSION: str = stripe.VERSION
API_VERSION: str = stripe.api_version

_ROOT_SERVICES_MODULE = "stripe._v1_services"
_REQUEST_METHODS = frozenset({"_request", "_request_stream"})
_HTTP_METHODS = frozenset({"get", "post", "delete"})
_INT_RE = re.compile(r"-?[0-9]+")
# What ``str(Decimal)`` / ``str(float)`` produce for ordinary values; exponent notation
# ("1E+1", "1e-07") is deliberately rejected: Stripe documents decimal strings.
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_PLACEHOLDER_RE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_NONE_TYPE = type(None)


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One SDK endpoint: ``method`` is lower case, ``template`` like ``/v1/invoices/{invoice}``."""

    method: str
    template: str
    params: tuple[type, ...]
    """The params TypedDict(s); empty when the SDK method takes no params at all.

    Usually one; more when several SDK methods share the route with different types
    (``DELETE /v1/customers/{customer}/sources/{id}``): any of them may accept a request.
    """
    services: tuple[str, ...]
    """``module.Class.method`` of the SDK service method(s) the route was read from."""

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.strip("/").split("/"))


def _service_source(module_name: str) -> tuple[ast.Module, str]:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise LookupError(f"stripe service module {module_name} not found")
    origin = Path(spec.origin)
    return ast.parse(origin.read_text(encoding="utf-8"), filename=str(origin)), module_name


def _subservices(tree: ast.Module) -> list[tuple[str, str]]:
    """The ``_subservices = {"name": ["module", "Class"], ...}`` table of a service module."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_subservices" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            found: list[tuple[str, str]] = []
            for value in node.value.values:
                pair = ast.literal_eval(value)
                if isinstance(pair, list | tuple) and len(pair) == 2:
                    found.append((str(pair[0]), str(pair[1])))
            return found
    return []


def _imported_names(tree: ast.Module, module_name: str) -> dict[str, str]:
    """Map every name imported anywhere in the module (incl. ``TYPE_CHECKING``) to its module."""
    names: dict[str, str] = {}
    package = module_name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            source = node.module
            if node.level:
                source = importlib.util.resolve_name("." * node.level + source, package)
            for alias in node.names:
                names[alias.asname or alias.name] = source
    return names


def _annotation_name(annotation: ast.expr | None) -> str | None:
    """``"XParams"`` from ``params: "XParams"`` or ``params: Optional["XParams"]``."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.strip()
    if isinstance(annotation, ast.Name):
        return annotation.id
    if isinstance(annotation, ast.Subscript):
        return _annotation_name(annotation.slice)
    return None


def _request_call(func: ast.FunctionDef) -> tuple[str, str] | None:
    """(http method, path template) of the ``self._request("post", "/v1/...")`` call."""
    for node in ast.walk(func):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _REQUEST_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
            and len(node.args) >= 2
        ):
            continue
        method_node, path_node = node.args[0], node.args[1]
        if not (isinstance(method_node, ast.Constant) and isinstance(method_node.value, str)):
            continue
        if (
            isinstance(path_node, ast.Call)
            and isinstance(path_node.func, ast.Attribute)
            and path_node.func.attr == "format"
        ):
            path_node = path_node.func.value
        if isinstance(path_node, ast.Constant) and isinstance(path_node.value, str):
            return method_node.value.lower(), path_node.value
    return None


def _service_routes(tree: ast.Module, module_name: str, class_name: str) -> Iterator[Route]:
    imports = _imported_names(tree, module_name)
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for item in node.body:
            if not isinstance(item, ast.FunctionDef) or item.name.startswith("_"):
                continue  # async twins are AsyncFunctionDef: same routes
            call = _request_call(item)
            if call is None:
                continue
            method, template = call
            if method not in _HTTP_METHODS or not template.startswith("/v1/"):
                continue
            all_args = [*item.args.posonlyargs, *item.args.args, *item.args.kwonlyargs]
            params_arg = next((a for a in all_args if a.arg == "params"), None)
            params_cls: tuple[type, ...] = ()
            if params_arg is not None:
                cls_name = _annotation_name(params_arg.annotation)
                if cls_name is None or cls_name not in imports:
                    raise LookupError(
                        f"{module_name}.{class_name}.{item.name}: cannot resolve the params "
                        f"annotation {cls_name!r}"
                    )
                resolved = getattr(importlib.import_module(imports[cls_name]), cls_name)
                if not isinstance(resolved, type):
                    raise LookupError(f"{imports[cls_name]}.{cls_name} is not a class")
                params_cls = (resolved,)
            yield Route(method, template, params_cls, (f"{module_name}.{class_name}.{item.name}",))


@functools.cache
def route_table() -> dict[tuple[str, str], Route]:
    """All ``/v1/`` routes of the services reachable from ``StripeClient().v1``.

    Keyed by ``(lower-case method, path template)``. Derived from the installed SDK's
    source, so it follows whatever stripe-python version is pinned.
    """
    table: dict[tuple[str, str], Route] = {}
    seen: set[tuple[str, str]] = set()
    pending = _subservices(_service_source(_ROOT_SERVICES_MODULE)[0])
    while pending:
        module_name, class_name = pending.pop()
        if (module_name, class_name) in seen:
            continue
        seen.add((module_name, class_name))
        tree, _ = _service_source(module_name)
        pending.extend(_subservices(tree))
        for route in _service_routes(tree, module_name, class_name):
            key = (route.method, route.template)
            existing = table.get(key)
            if existing is not None:
                route = Route(
                    route.method,
                    route.template,
                    (*existing.params, *(p for p in route.params if p not in existing.params)),
                    (*existing.services, *route.services),
                )
            table[key] = route
    return table


def _specificity(template_segments: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(not _PLACEHOLDER_RE.fullmatch(s) for s in template_segments)


def _matches(template_segments: tuple[str, ...], segments: list[str]) -> bool:
    if len(template_segments) != len(segments):
        return False
    return all(
        (bool(seg) if _PLACEHOLDER_RE.fullmatch(tpl) else tpl == seg)
        for tpl, seg in zip(template_segments, segments, strict=True)
    )


def match_route(method: str, path: str) -> Route | None:
    """The route for a concrete request path, preferring literal segments over ``{x}``.

    ``/v1/customers/search`` matches ``/v1/customers/search`` rather than
    ``/v1/customers/{customer}``: among matching templates the one whose earliest
    differing segment is literal wins.
    """
    wanted = method.lower()
    segments = path.split("?", 1)[0].removeprefix("/").split("/")
    candidates = [
        route
        for (route_method, _), route in route_table().items()
        if route_method == wanted and _matches(route.segments, segments)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda r: _specificity(r.segments))


# --------------------------------------------------------------------------- form decoding


def _split_key(key: str) -> list[str]:
    """``lines[0][tax_amounts][1][amount]`` -> ``["lines", "0", "tax_amounts", "1", "amount"]``."""
    head, bracket, rest = key.partition("[")
    if not head:
        raise ValueError(f"form key {key!r} has no name")
    parts = [head]
    if not bracket:
        return parts
    rest = "[" + rest
    for match in re.finditer(r"\[([^\[\]]*)\]|(.)", rest, flags=re.DOTALL):
        if match.group(2) is not None:
            raise ValueError(f"form key {key!r} is not of the form name[a][b]...")
        parts.append(match.group(1))
    return parts


_Tree: TypeAlias = "dict[str, str | _Tree]"


def _finish(node: str | _Tree) -> FormValue:
    if isinstance(node, str):
        return node
    keys = list(node)
    if keys and all(k.isdigit() and str(int(k)) == k for k in keys):
        indices = sorted(int(k) for k in keys)
        if indices == list(range(len(indices))):
            return [_finish(node[str(i)]) for i in indices]
    return {k: _finish(v) for k, v in node.items()}


def decode_form(text: str) -> dict[str, FormValue]:
    """Decode Stripe's form encoding back into nested dicts and lists.

    Inverse of ``urlencode(list(stripe._encode._api_encode(params)))``: ``a[b]=1``
    becomes ``{"a": {"b": "1"}}``; objects whose keys are exactly ``0..n-1`` become
    lists (``lines[0][amount]=5`` -> ``{"lines": [{"amount": "5"}]}``). A trailing
    ``[]`` appends to a list. Leaves stay strings (``"true"``, ``"20.0"``, ``""``).
    Raises ``ValueError`` on a key given twice or used both as a scalar and an object.
    """
    root: _Tree = {}
    for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        parts = _split_key(key)
        node = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if part == "":
                if not last:
                    raise ValueError(f"form key {key!r}: '[]' is only supported at the end")
                part = str(len(node))
            if last:
                if part in node:
                    raise ValueError(f"form key {key!r} given more than once")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if isinstance(child, str):
                    raise ValueError(f"form key {key!r} nests under a scalar value")
                node = child
    finished = _finish(root)
    assert isinstance(finished, dict)
    return finished


# --------------------------------------------------------------------------- type checking


@functools.cache
def _request_option_keys() -> frozenset[str]:
    return frozenset(RequestOptions.__annotations__)


_HINT_NAMESPACE: dict[str, Any] = {
    "StripeContext": StripeContext,
    "Mapping": Mapping,
    "Any": Any,
    "Optional": typing.Optional,
}


@dataclass(frozen=True)
class _Fields:
    hints: dict[str, Any]
    required: frozenset[str]


@functools.cache
def _fields(cls: type) -> _Fields:
    """Form fields of a params TypedDict: request options are not form fields."""
    hints = typing_extensions.get_type_hints(cls, include_extras=True, localns=_HINT_NAMESPACE)
    options = _request_option_keys() if _is_subclass_of_options(cls) else frozenset()
    fields = {k: _strip_required(v) for k, v in hints.items() if k not in options}
    required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
    return _Fields(fields, frozenset(k for k in required_keys if k in fields))


def _is_subclass_of_options(cls: type) -> bool:
    """Top-level params classes extend ``RequestOptions`` (TypedDicts merge annotations)."""
    annotations: dict[str, Any] = getattr(cls, "__annotations__", {})
    return all(annotations.get(key) is hint for key, hint in RequestOptions.__annotations__.items())


def _strip_required(hint: Any) -> Any:
    while typing_extensions.get_origin(hint) in (
        typing_extensions.NotRequired,
        typing_extensions.Required,
        typing_extensions.ReadOnly,
    ):
        hint = typing_extensions.get_args(hint)[0]
    return hint


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    origin = typing_extensions.get_origin(hint)
    args = typing_extensions.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_describe(a) for a in args if a is not _NONE_TYPE)
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_describe(a) for a in args)}]"
    return str(hint)


def _shape(value: FormValue) -> str:
    if isinstance(value, str):
        return "a scalar"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_mapping_hint(hint: Any) -> bool:
    origin = typing_extensions.get_origin(hint) or hint
    return isinstance(origin, type) and (
        issubclass(origin, StripeObject) or origin in (dict, Mapping)
    )


def _hint_shape(hint: Any) -> str:
    """Which decoded shape a (non-union) hint accepts: scalar, list, object or any."""
    if hint is Any or hint is object:
        return "any"
    origin = typing_extensions.get_origin(hint)
    if origin is list or origin is tuple:
        return "a list"
    if typing_extensions.is_typeddict(hint) or _is_mapping_hint(hint):
        return "an object"
    return "a scalar"


def _scalar_problem(value: str, hint: Any) -> str | None:
    """``None`` when the string form value is acceptable for the scalar ``hint``."""
    origin = typing_extensions.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing_extensions.get_args(hint)
        encoded = {str(a).lower() if isinstance(a, bool) else str(a) for a in allowed}
        return None if value in encoded else f"{value!r} is not one of {_describe(hint)}"
    if hint is bool:
        return None if value in ("true", "false") else f"{value!r} is not a boolean (true/false)"
    if hint is int:
        return None if _INT_RE.fullmatch(value) else f"{value!r} is not an integer"
    if hint is Decimal or hint is float:
        return None if _DECIMAL_RE.fullmatch(value) else f"{value!r} is not a decimal number"
    if hint is str:
        return None
    return f"unsupported parameter type {_describe(hint)}"


def _fits(value: FormValue, hint: Any) -> bool:
    """Whether the decoded shape of ``value`` can be an instance of the non-union ``hint``."""
    expected = _hint_shape(hint)
    if expected in ("any", _shape(value)):
        return True
    # metadata[0]=x decodes to a list, but a free-form map may have keys "0", "1", ...
    return expected == "an object" and isinstance(value, list) and _is_mapping_hint(hint)


def _union_members(hint: Any) -> list[Any]:
    """The members of a union (without ``None``), closing the SDK's open enums.

    The SDK types enums as ``Literal['a', 'b']|str`` so that newer API values still
    type-check. Against the pinned API version a value outside the Literal is a contract
    break, so a plain ``str`` next to a non-empty Literal is dropped.
    """
    members = _flat_union(hint)
    open_enum = any(
        typing_extensions.get_origin(m) is typing.Literal
        and any(a != "" for a in typing_extensions.get_args(m))
        for m in members
    )
    return [m for m in members if not (open_enum and m is str)] if open_enum else members


def _flat_union(hint: Any) -> list[Any]:
    if typing_extensions.get_origin(hint) in (typing.Union, types.UnionType):
        return [
            member
            for arg in typing_extensions.get_args(hint)
            if arg is not _NONE_TYPE
            for member in _flat_union(arg)
        ]
    return [hint]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: FormValue, hint: Any, path: str) -> list[str]:
    """Problems (``"<param path>: <what>"`` or unknown/missing notes) of one value."""
    members = _union_members(hint)
    if len(members) > 1:
        fitting = [m for m in members if _fits(value, m)]
        if not fitting:
            return [f"{path}: expected {_describe(hint)}, got {_shape(value)}"]
        if isinstance(value, str):
            if any(not _check(value, m, path) for m in fitting):
                return []
            return [f"{path}: {value!r} is not {_describe(hint)}"]
        if len(fitting) == 1:
            return _check(value, fitting[0], path)
        results = [_check(value, m, path) for m in fitting]
        if any(not r for r in results):
            return []
        return min(results, key=len)

    hint = members[0]
    expected = _hint_shape(hint)
    if expected == "any":
        return []
    if not _fits(value, hint):
        return [f"{path}: expected {_describe(hint)}, got {_shape(value)}"]

    if isinstance(value, str):
        problem = _scalar_problem(value, hint)
        return [] if problem is None else [f"{path}: {problem}"]

    if isinstance(value, list):
        if expected == "a list":
            (item_hint, *_) = typing_extensions.get_args(hint) or (Any,)
            return [
                p for i, item in enumerate(value) for p in _check(item, item_hint, f"{path}[{i}]")
            ]
        # metadata[0]=x decodes to a list: it is a map with keys "0", "1", ...
        value = {str(i): item for i, item in enumerate(value)}

    if typing_extensions.is_typeddict(hint):
        return _check_object(value, hint, path)
    # Dict[str, X] / Mapping / UntypedStripeObject[X]: any keys, values of type X
    args = typing_extensions.get_args(hint)
    value_hint = args[-1] if args else Any
    return [p for key, item in value.items() for p in _check(item, value_hint, _join(path, key))]


def _check_object(value: Mapping[str, FormValue], cls: type, path: str) -> list[str]:
    fields = _fields(cls)
    problems: list[str] = []
    for key, item in value.items():
        where = _join(path, key)
        if key not in fields.hints:
            problems.append(f"unknown parameter {where}")
        else:
            problems.extend(_check(item, fields.hints[key], where))
    problems.extend(
        f"missing required parameter {_join(path, key)}"
        for key in sorted(fields.required)
        if key not in value
    )
    return problems


def request_problems(method: str, path: str, query: str = "", body: str = "") -> list[str]:
    """Everything wrong with one request, measured against the pinned SDK. Empty if fine.

    Each problem reads ``"<METHOD> <path template>: <what>"``, e.g.
    ``"POST /v1/invoices: unknown parameter days_until_duee"`` or
    ``"POST /v1/invoices/{invoice}/add_lines: lines[0].amount: '5.5' is not an integer"``.
    """
    verb = method.upper()
    route = match_route(verb, path)
    if route is None:
        return [
            f"{verb} {path}: no such endpoint in stripe-python {SDK_VERSION} (API {API_VERSION})"
        ]
    where = f"{verb} {route.template}"
    problems: list[str] = []
    params: dict[str, FormValue] = {}
    for part_name, text in (("query", query), ("body", body)):
        if not text:
            continue
        try:
            decoded = decode_form(text)
        except ValueError as exc:
            problems.append(f"{where}: malformed {part_name}: {exc}")
            continue
        for key, value in decoded.items():
            if key in params:
                problems.append(f"{where}: parameter {key} sent in both query and body")
            params[key] = value
    if verb == "POST" and query:
        problems.append(f"{where}: parameters in the query string of a POST (the SDK sends a body)")
    if verb != "POST" and body:
        problems.append(f"{where}: a request body on {verb} (the SDK sends the query string)")

    form_fields = {key for cls in route.params for key in _fields(cls).hints}
    for key in sorted((_request_option_keys() - form_fields) & params.keys()):
        problems.append(
            f"{where}: {key} is a request option (sent as a header), not a form parameter"
        )
        del params[key]

    if not route.params:
        problems.extend(f"{where}: unknown parameter {key} (endpoint takes none)" for key in params)
        return problems
    # Several params types for one route: the request is fine if any of them accepts it.
    candidates = [_check_object(params, cls, "") for cls in route.params]
    problems.extend(f"{where}: {p}" for p in min(candidates, key=len))
    return problems


# --------------------------------------------------------------------------- log files


def log_problems(log_path: Path, *, limit: int = 50) -> list[str]:
    """Problems of every request in a JSON-lines request log, deduplicated, at most ``limit``.

    If more than ``limit`` distinct problems exist, the last entry says how many were cut.
    """
    seen: dict[str, None] = {}
    with log_path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                method, path = str(entry["method"]), str(entry["path"])
                query, body = str(entry.get("query") or ""), str(entry.get("body") or "")
            except (ValueError, KeyError, TypeError) as exc:
                seen.setdefault(f"{log_path.name}:{number}: unreadable log line: {exc}", None)
                continue
            for problem in request_problems(method, path, query, body):
                seen.setdefault(problem, None)
    problems = list(seen)
    if len(problems) > limit:
        return [*problems[:limit], f"... and {len(problems) - limit} more problems"]
    return problems
