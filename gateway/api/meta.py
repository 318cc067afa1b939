"""`/healthz`, `/readyz` and `/openapi.json` (no auth)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import health
from gateway.api.http import ROUTES, json_response
from gateway.schemas import Problem

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """200 when this process can do its job; else 503 problem+json naming each failed check."""
    report = health.readiness(current_app.extensions["gateway"])
    if report.ready:
        return json_response({"status": "ready", "checks": report.checks})
    body = {
        "type": "not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": "; ".join(report.reasons),
        "checks": report.checks,
    }
    response = json_response(body, 503)
    response.content_type = "application/problem+json"
    response.headers["Retry-After"] = "5"
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return json_response(openapi_document())


def openapi_document() -> dict[str, Any]:
    """Build the OpenAPI 3.1 document from the registered routes and their pydantic models."""
    models: set[type[BaseModel]] = {Problem}
    for route in ROUTES:
        models.update(m for m in (route.body, route.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, schema = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    ref = {m: refs[(m, "validation")] for m in ordered}
    problem = {"application/problem+json": {"schema": ref[Problem]}}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if route.scope:
            op["security"] = [{"bearer": [route.scope]}]
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _path_params(route.path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in route.query.items()
        ]
        if route.method == "POST" and route.path == "/v1/messages":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            )
        if params:
            op["parameters"] = params
        if route.body:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[route.body]}},
            }
        success: dict[str, Any] = {"description": "OK"}
        if route.response:
            success["content"] = {"application/json": {"schema": ref[route.response]}}
        op["responses"][str(route.status)] = success
        codes = ["400", "401", "403", "404", "409", "413", "422", "429", "503"]
        if route.body:
            codes.append("415")
        retry_after = {"Retry-After": {"schema": {"type": "integer"}}}
        for code in codes:
            answer: dict[str, Any] = {"description": "problem", "content": problem}
            if code in ("429", "503"):
                answer["headers"] = retry_after
            op["responses"][code] = answer
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Channel gateway", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
