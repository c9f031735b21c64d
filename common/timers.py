"""Timers whose interval comes from the service config, so tests can tick faster than production.

Every replica runs every timer: the work a timer does must be idempotent or claimed.
"""
from nameko.timer import Timer


class ConfiguredTimer(Timer):
    """``@configured_timer("OUTBOX_SWEEP_SECONDS", 5)``: interval read from the config at start-up."""

    def __init__(self, config_key, default, **kwargs):
        self.config_key = config_key
        super().__init__(interval=default, **kwargs)

    def setup(self):
        super().setup()
        self.interval = float(self.container.config.get(self.config_key) or self.interval)


configured_timer = ConfiguredTimer.decorator
