"""Plain rows (`gateway.rows`): what may be set on them, and what `changes` reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.rows import AttemptRow, MessageRow, SentMessageRow


def _message(**values: object) -> MessageRow:
    row = dict.fromkeys(MessageRow._keys)
    row.update(id="msg_1", status="queued", completed=False, content={"text": "hi"}, **values)
    return MessageRow([row[key] for key in MessageRow._keys])


def test_changes_are_the_columns_set_to_another_value() -> None:
    message = _message(channel="sms")
    message.status = "sending"
    message.channel = "sms"  # the value it had: no change
    message.claimed_until = datetime(2026, 1, 1, tzinfo=UTC)
    assert message.changes() == {"status": "sending", "claimed_until": datetime(2026, 1, 1, tzinfo=UTC)}


def test_json_columns_and_columns_not_loaded_cannot_be_set() -> None:
    message = _message()
    with pytest.raises(AttributeError):
        message.content = {"text": "changed"}  # written only through the ORM
    with pytest.raises(AttributeError):
        message.metadata_ = {}  # never loaded on a plain row
    assert "content" not in SentMessageRow._keys and "retry" not in SentMessageRow._keys
    assert "plan" in SentMessageRow._keys  # a step's `until` and `after` are read when recording


def test_an_attempt_row_has_every_column_of_the_table() -> None:
    assert set(AttemptRow._keys) >= {"id", "message_id", "status", "sends", "sent_by", "deadline_at"}
