"""Setting a column of a loaded row: an unchanged scalar is no change; anything else goes to SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect
from sqlmodel import Session, SQLModel, create_engine

from gateway.models import ChannelState, Contact

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _loaded(session: Session) -> Contact:
    session.add(Contact(id="ct_1", name="Ada", tags=["vip"], updated_at=AT))
    session.commit()
    session.expunge_all()
    contact = session.get(Contact, "ct_1")
    assert contact is not None
    return contact


def test_an_unchanged_scalar_leaves_the_row_clean_and_a_changed_one_is_written() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[Contact.__table__])  # type: ignore[attr-defined]
    with Session(engine) as session:
        contact = _loaded(session)
        contact.name, contact.updated_at, contact.country = "Ada", AT, None
        assert not inspect(contact).modified and not session.dirty
        contact.name = "Ada L."
        assert inspect(contact).attrs.name.history.added == ["Ada L."]
        session.commit()
        session.expunge_all()
        assert session.get(Contact, "ct_1").name == "Ada L."  # type: ignore[union-attr]


def test_a_json_value_is_handed_to_sqlalchemy_which_writes_a_new_one() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[Contact.__table__])  # type: ignore[attr-defined]
    with Session(engine) as session:
        contact = _loaded(session)
        contact.tags = [*(contact.tags or []), "new"]
        assert inspect(contact).modified
        session.commit()
        session.expunge_all()
        assert session.get(Contact, "ct_1").tags == ["vip", "new"]  # type: ignore[union-attr]


def test_an_equal_value_of_another_type_is_still_set() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=[ChannelState.__table__])  # type: ignore[attr-defined]
    with Session(engine) as session:
        session.add(ChannelState(contact_id="ct_1", channel="sms", opted_out=False))
        session.commit()
        session.expunge_all()
        state = session.get(ChannelState, ("ct_1", "sms"))
        assert state is not None
        state.opted_out = 0  # type: ignore[assignment]  # equal to False, but not a bool: handed over
        assert type(state.opted_out) is int
        state.opted_out = False
        assert type(state.opted_out) is bool
