"""What the console's small forms share: validation errors keyed by the form field they belong to."""

from __future__ import annotations

from pydantic import ValidationError

from gateway.api.http import problem_from


def field_errors(exc: ValidationError) -> dict[str, str]:
    """The first message per top-level field (`scopes.0` belongs to the `scopes` field)."""
    errors: dict[str, str] = {}
    for e in problem_from(exc).errors:
        errors.setdefault(e.field.split(".")[0], e.message)
    return errors
