"""What every HTTP answer gets: problem+json for every error, 503 while the database is away,
and security headers."""

from __future__ import annotations

from flask import Flask, Response, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from gateway.api.http import MAX_BODY, problem_response
from gateway.errors import ProblemError

SLUGS = {400: "malformed-request", 404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
API_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
API_AND_SECURITY_HEADERS = SECURITY_HEADERS | API_HEADERS


def install(app: Flask) -> None:
    """Register the error handlers and the security headers on `app`."""

    @app.errorhandler(ProblemError)
    def _problem(error: ProblemError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        code = error.code or 500
        detail = f"bodies are limited to {MAX_BODY} bytes" if code == 413 else error.description or error.name
        return problem_response(ProblemError(code, SLUGS.get(code, "http-error"), error.name, detail))

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _database_away(error: Exception) -> Response:
        app.logger.warning("database unavailable: %s", type(error).__name__)
        problem = ProblemError(
            503,
            "service-unavailable",
            "Service unavailable",
            "the database cannot be reached; nothing was changed, try again shortly",
            headers={"Retry-After": "5"},
        )
        return problem_response(problem)

    @app.after_request
    def _headers(response: Response) -> Response:
        # Not Headers.setdefault: it raises and catches a KeyError for each header missing (all, mostly).
        wanted = API_AND_SECURITY_HEADERS if request.path.startswith("/v1/") else SECURITY_HEADERS
        present = {name.lower() for name in response.headers.keys()}
        for name, value in wanted.items():
            if name.lower() not in present:
                response.headers.add(name, value)
        return response
