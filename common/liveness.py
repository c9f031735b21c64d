"""A service is alive while its consumer consumes: a heartbeat file the probe reads.

A TCP connection to the broker is a weak sign of life: a process stuck in a reconnect loop, a
consumer whose channel died, an event loop blocked by a runaway worker all keep a connection (or
open new ones) while no message is taken. nameko's ``QueueConsumer`` (one per service process; RPC
and event entrypoints share it) runs kombu's consume loop, which calls ``on_iteration`` after every
``drain_events`` round, at least once a second while idle. :class:`Liveness` wraps that callback
and touches a heartbeat file (at most once a second); ``python -m common.probe`` (the containers'
liveness probe) fails when the file is older than ``common.heartbeat.MAX_AGE_SECONDS``.

The file and its age are ``common/heartbeat.py``'s; it is removed when the service stops.
"""
from nameko.extensions import DependencyProvider

from common.heartbeat import Heartbeat
from common.nameko_private import after_each_consume_round


class Liveness(DependencyProvider):
    """Beats from the container's queue consumer loop (see the module's docstring)."""

    def setup(self):
        self.heartbeat = Heartbeat()
        after_each_consume_round(self.container, self.heartbeat.beat)

    def stop(self):
        self.heartbeat.remove()
