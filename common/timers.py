"""Timers whose interval comes from the service config, so tests can tick faster than production.

Every replica runs every timer: the work a timer does must be idempotent or claimed.

Timer work here is housekeeping (outbox sweeps, re-drives, expiries, reminders), and on a
MongoDB-compatible server without index pushdown (FerretDB) its queries scan whole collections: a
sweep of a big ledger can take longer than its interval. nameko's timer then fires again at once
to catch up, so the scans run back to back and crowd out the requests that share the database.
These timers instead let at least ``interval`` pass between the starts of two ticks *and* keep the
timer busy at most ``MAX_DUTY`` of the time: after a tick that took ``d`` seconds the next one
waits at least ``d * (1 - MAX_DUTY) / MAX_DUTY``. Cheap ticks keep their interval.
"""
from common.nameko_private import PacedTimer
from common.settings_provider import settings_of

#: the largest share of the time a timer may spend working
MAX_DUTY = 0.1


def next_delay(interval, took, max_duty=MAX_DUTY):
    """Seconds to wait after a tick that took ``took`` seconds."""
    return max(interval - took, took * (1 - max_duty) / max_duty)


class ConfiguredTimer(PacedTimer):
    """``@configured_timer("outbox_sweep_seconds")``: the interval is that field of the service's
    settings (``common/settings.py``), read at start-up."""

    def __init__(self, setting, **kwargs):
        self.setting = setting
        super().__init__(interval=None, **kwargs)

    def setup(self):
        super().setup()
        self.interval = float(getattr(settings_of(self.container), self.setting))

    def next_delay(self, took):
        return next_delay(self.interval, took)


configured_timer = ConfiguredTimer.decorator
