"""Time columns: on SQLite bound in one step to exactly the text SQLAlchemy's DATETIME stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime

import gateway.models  # noqa: F401  (the tables)
from gateway.timestamp import Timestamp, sqlite_text

SQLITE = sqlite.dialect()
REFERENCE = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC) | offsets
)


@given(moments)
def test_sqlite_stores_the_text_sqlalchemys_datetime_stores(value: datetime) -> None:
    assert REFERENCE is not None
    assert sqlite_text(value) == REFERENCE(value)
    assert Timestamp().dialect_impl(SQLITE).bind_processor(SQLITE) is sqlite_text


def test_none_is_null_and_a_naive_time_is_refused() -> None:
    assert sqlite_text(None) is None
    with pytest.raises(ValueError, match="timezone"):
        sqlite_text(datetime(2026, 1, 1))


def test_other_databases_bind_as_utcdatetime_does() -> None:
    dialect = postgresql.dialect()
    process = Timestamp().dialect_impl(dialect).bind_processor(dialect)
    local = datetime(2026, 11, 30, 9, 30, tzinfo=timezone(timedelta(hours=9)))
    bound = process(local) if process else local
    assert bound == local and bound.utcoffset() == timedelta(0)


def test_every_time_column_is_a_timestamp() -> None:
    columns = [c for t in SQLModel.metadata.tables.values() for c in t.columns]
    times = [c for c in columns if isinstance(c.type, UTCDateTime)]
    assert len(times) > 40
    assert [c for c in times if type(c.type) is not Timestamp] == []
