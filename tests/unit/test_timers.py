"""Housekeeping timers (common/timers.py): a slow tick pushes the next one out instead of nameko's
catch-up burst, so scans of big collections never run back to back; cheap ticks keep their pace."""
import time

import eventlet

from common.timers import MAX_DUTY, ConfiguredTimer, next_delay


class ScriptedTimer(ConfiguredTimer):
    """The real scheduling loop; each tick "works" for the next scripted duration."""

    def __init__(self, interval, durations):
        super().__init__("unused")
        self.interval = interval  # what setup() would read from the service's settings
        self.durations = list(durations)
        self.starts = []

    def handle_timer_tick(self):
        self.starts.append(time.monotonic())
        eventlet.spawn(self._work, self.durations.pop(0) if self.durations else 0.0)

    def _work(self, seconds):
        eventlet.sleep(seconds)
        self.worker_complete.send(True)


def run_ticks(timer, count, deadline=20):
    loop = eventlet.spawn(timer._run)
    with eventlet.Timeout(deadline):
        while len(timer.starts) < count:
            eventlet.sleep(0.01)
    timer.should_stop.send(True)
    loop.wait()
    return [later - earlier for earlier, later in zip(timer.starts, timer.starts[1:], strict=False)]


def test_a_slow_tick_pushes_the_next_one_out_instead_of_catching_up():
    timer = ScriptedTimer(interval=0.05, durations=[0.2, 0.0, 0.0])
    gaps = run_ticks(timer, 3)
    # nameko's own timer would start the 2nd tick right after the 1st ended (0.2 s) to catch up
    assert gaps[0] >= 0.2 + 0.2 * (1 - MAX_DUTY) / MAX_DUTY * 0.95
    assert gaps[1] < 0.5  # a cheap tick: back to the interval


def test_cheap_ticks_keep_their_interval():
    gaps = run_ticks(ScriptedTimer(interval=0.1, durations=[0.0] * 4), 4)
    assert all(0.09 <= gap < 0.5 for gap in gaps)


def test_next_delay_bounds_the_share_of_time_spent_working():
    assert next_delay(5, 0.1) == 4.9
    assert next_delay(5, 2.0) == 18.0  # 2 s of work in every 20 s: 10 %
    for took in (0.01, 0.5, 3.0, 40.0):
        assert took / (took + next_delay(5, took)) <= MAX_DUTY + 1e-9
