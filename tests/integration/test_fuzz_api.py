"""Fuzzing the public API with schemathesis: every operation of `/openapi.json`, with generated valid and
invalid requests, against a running gateway (waitress + dispatcher, SMS and email on the simulators).

Every response must not be a 5xx and must conform to the document: a declared status code, the declared
content type, and a body that matches the declared schema. SQLite only: the API is the same on PostgreSQL.

schemathesis' pytest integration (`schemathesis.pytest.from_fixture`) does not run under pytest 9 (it sets
`request.node._nodeid`, which pytest 9 removed), so each operation's Hypothesis strategy is driven here.
Failures are collected over all operations and reported together, each with a curl line to reproduce it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.local import LocalGateway, simulator_settings
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import TwilioSimulator

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 30}  # per operation; ~30 s in all
MAX_REPORTED = 3  # distinct failures kept per operation


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[LocalGateway]:
    with TwilioSimulator(callback_delay=0.05) as twilio, SmtpSimulator() as smtp:
        yield from _gateway(twilio, smtp)


def _gateway(twilio: TwilioSimulator, smtp: SmtpSimulator) -> Iterator[LocalGateway]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, Any] = simulator_settings(twilio, smtp) | {
            "database_url": f"sqlite:///{Path(tmp) / 'gateway.db'}",
            "dispatch_interval": "0.2s",
            "channel_rates": "sms=0",
            "api_rate_limit": 0,  # the fuzzer is one client making many requests quickly
        }
        with LocalGateway(overrides) as local:
            yield local


def _summary(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_summary(e) for e in exc.exceptions)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fuzz(local: LocalGateway, mode: GenerationMode) -> list[str]:
    """Run every operation's generated cases; return one line per distinct failure."""
    auth = {"Authorization": f"Bearer {local.key}"}
    schema = schemathesis.openapi.from_url(local.url + "/openapi.json", headers=auth, timeout=30)
    failures: list[str] = []
    calls: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # a document schemathesis cannot read fails the test here
        found, calls[operation.label] = fuzz_operation(operation, mode, auth)
        failures += [f"{operation.label}: {summary}\n    {curl}" for summary, curl in found.items()]
    print(f"\n{mode.value} cases, answers by status per operation:")
    for label, statuses in calls.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    assert len(calls) >= 10, f"only {len(calls)} operations in /openapi.json"
    assert all(calls.values()), "an operation got no request"
    return failures


def fuzz_operation(
    operation: Any, mode: GenerationMode, auth: dict[str, str]
) -> tuple[dict[str, str], Counter[int]]:
    """Failures (summary -> curl) and the statuses answered, over the operation's generated cases."""
    found: dict[str, str] = {}
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def run(case: schemathesis.Case) -> None:
        try:
            response = case.call(headers=auth, timeout=30)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            summary = _summary(exc)
            if summary not in found and len(found) < MAX_REPORTED:
                found[summary] = case.as_curl_command(headers=auth)

    run()
    return found, statuses


def test_valid_requests_get_documented_answers_and_no_5xx(fuzzed: LocalGateway) -> None:
    failures = fuzz(fuzzed, GenerationMode.POSITIVE)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_invalid_requests_get_documented_4xx_answers_and_no_5xx(fuzzed: LocalGateway) -> None:
    failures = fuzz(fuzzed, GenerationMode.NEGATIVE)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_statuses_the_api_answers_are_in_the_document(tmp_path: Path) -> None:
    """415 (not JSON) and 429 (a key over its rate) are real answers, as is 503 while the database is
    unreachable (see test_scale_out); the document must declare them where they can happen."""
    settings = {"database_url": f"sqlite:///{tmp_path / 'gateway.db'}", "api_rate_limit": 1}
    with LocalGateway(settings, with_dispatcher=False) as local:
        document = local.call("GET", "/openapi.json", key="").body
        not_json = local.call(
            "POST",
            "/v1/messages",
            raw=b"to=x",
            headers={"Content-Type": "text/plain"},
            key=local.new_key("send"),
        )
        assert (not_json.status, not_json.body["type"]) == (415, "unsupported-media-type"), not_json
        key = local.new_key("read")
        answers = [local.call("GET", "/v1/messages", key=key) for _ in range(3)]
        assert (answers[-1].status, answers[-1].body["type"]) == (429, "rate-limited"), answers[-1]

    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            expected = ["429", "503"] if operation.get("security") else ["503"]
            if "requestBody" in operation:
                expected.append("415")
            absent = [code for code in expected if code not in operation["responses"]]
            if absent:
                missing.append(f"{method.upper()} {path}: {', '.join(absent)}")
    assert not missing, f"{len(missing)} operations lack statuses they can answer:\n" + "\n".join(missing)
