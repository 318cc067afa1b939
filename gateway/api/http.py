"""Small helpers the views share: body parsing, auth, problem answers, and the route registry
from which `/openapi.json` is generated."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError

from gateway.api.limits import MAX_JSON_DEPTH, RateLimiter, json_depth
from gateway.core import Gateway
from gateway.errors import FieldError, ProblemError
from gateway.services.keys import Caller, KeyChecker

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 256 * 1024
MAX_LIMIT = 200


@dataclass
class RouteDoc:
    path: str
    method: str
    summary: str
    scope: str | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    query: dict[str, str] = field(default_factory=dict)


ROUTES: list[RouteDoc] = []


def api_route(
    bp: Blueprint,
    path: str,
    method: str,
    summary: str,
    scope: str | None,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    query: dict[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view under `path` and describe it for the OpenAPI document."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        prefix = bp.url_prefix or ""
        doc_path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", prefix + path)
        if not any(r.path == doc_path and r.method == method for r in ROUTES):
            ROUTES.append(RouteDoc(doc_path, method, summary, scope, body, response, status, query or {}))

        def guarded(**kwargs: Any) -> Any:
            if scope is not None:
                g.caller = require(scope)
            return view(**kwargs)

        guarded.__name__ = view.__name__
        bp.add_url_rule(path, view.__name__, guarded, methods=[method])
        return view

    return wrap


def gateway() -> Gateway:
    gw: Gateway = current_app.extensions["gateway"]
    return gw


def require(scope: str) -> Caller:
    """Authenticate the bearer key and check it grants `scope`."""
    checker: KeyChecker = current_app.extensions["gateway.keys"]
    caller = checker.authenticate(request.headers.get("Authorization"))
    limiter: RateLimiter = current_app.extensions["gateway.rate_limiter"]
    limiter.take(caller.key_id)
    if not caller.allows(scope):
        raise ProblemError(403, "forbidden", "Forbidden", f"this API key lacks the {scope!r} scope")
    return caller


def caller() -> Caller:
    found: Caller = g.caller
    return found


def parse_body(model: type[M]) -> M:
    """Parse the JSON body into `model`; 400 for bad JSON, 422 with every bad field otherwise."""
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY:
        raise ProblemError(
            413, "payload-too-large", "Payload too large", f"bodies are limited to {MAX_BODY} bytes"
        )
    if raw and request.mimetype != "application/json":
        detail = f"send JSON with Content-Type: application/json (got {request.mimetype or 'none'})"
        raise ProblemError(415, "unsupported-media-type", "Unsupported media type", detail)
    if json_depth(raw) > MAX_JSON_DEPTH:
        detail = f"JSON may nest at most {MAX_JSON_DEPTH} levels deep"
        raise ProblemError(400, "malformed-request", "JSON nested too deeply", detail)
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise problem_from(exc) from None


def problem_from(exc: ValidationError) -> ProblemError:
    """Turn pydantic's errors into a problem with dotted field paths."""
    errors = []
    for err in exc.errors():
        if err["type"] == "json_invalid":
            return ProblemError(
                400,
                "malformed-request",
                "Malformed JSON",
                f"the body is not valid JSON: {err['msg']}",
            )
        parts = [str(p) for p in err["loc"] if not re.search(r"[\[\(]", str(p))]
        parts = [p for p in parts if p not in ("str", "int", "float", "bool", "list", "dict")]
        where = ".".join(parts) if parts else "body"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "is not a known field"
        errors.append(FieldError(where, message))
    first = errors[0]
    return ProblemError(
        422, "validation-error", "The request is invalid", f"{first.field}: {first.message}", errors
    )


def problem_response(problem: ProblemError) -> Response:
    response = jsonify(problem.to_body())
    response.status_code = problem.status
    response.content_type = "application/problem+json"
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def page_args() -> tuple[int, str | None]:
    """`limit` (default 50, at most 200) and `cursor` of a list request."""
    raw = request.args.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ProblemError(
            422,
            "validation-error",
            "The request is invalid",
            f"limit: must be 1 to {MAX_LIMIT}",
            [FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}")],
        )
    return int(raw), request.args.get("cursor") or None


def json_response(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
