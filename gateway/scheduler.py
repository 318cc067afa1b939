"""APScheduler wiring: it only wakes the dispatcher; every due time lives in the database."""

from __future__ import annotations

from apscheduler.schedulers.background import BackgroundScheduler

from gateway.dispatch import Dispatcher
from gateway.housekeeping import erase_old_bodies, purge


def start_scheduler(dispatcher: Dispatcher) -> BackgroundScheduler:
    """Wake the dispatcher every `dispatch_interval`, so work written by other processes is seen."""
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        dispatcher.nudge,
        "interval",
        seconds=dispatcher.gw.settings.dispatch_interval,
        id="wake-dispatcher",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(purge, "interval", args=[dispatcher.gw], hours=1, id="housekeeping", coalesce=True)
    scheduler.add_job(
        erase_old_bodies, "interval", args=[dispatcher.gw], days=1, id="retention", coalesce=True
    )
    scheduler.start()
    return scheduler
