"""A per-process listener for broadcast signals (every process gets every message).

Used where each process keeps something in memory that others' writes can make stale: the
gateway's revocation list and the org service's organization cache. Each process binds its own
exclusive, auto-delete queue, so a message published while the listener is disconnected is lost
for it; the owner is told about every (dis)connect (``on_connected`` / ``on_disconnected``) and
must treat the time in between as a gap in what it knows.
"""
import logging
import threading
import time
import uuid

from kombu import Connection, Queue

log = logging.getLogger(__name__)


class BroadcastListener(threading.Thread):
    """Keeps one exclusive queue bound to ``bindings`` consumed; reconnects with backoff."""

    def __init__(self, amqp_uri, name, bindings, on_message, on_connected, on_disconnected):
        super().__init__(name=name, daemon=True)
        self.amqp_uri = amqp_uri
        self.bindings = list(bindings)  # [(kombu Exchange, routing key)]
        self.on_message = on_message  # (routing_key, body) -> None; errors are logged, the message acked
        self.on_connected = on_connected  # (epoch seconds) -> None
        self.on_disconnected = on_disconnected  # () -> None
        self.ready = threading.Event()
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()

    def _deliver(self, body, message):
        try:
            self.on_message(message.delivery_info.get("routing_key"), body)
        except Exception:
            log.exception("%s: ignoring a message it could not apply", self.name)
        message.ack()

    def run(self):
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with Connection(self.amqp_uri, heartbeat=10, connect_timeout=5) as connection:
                    channel = connection.channel()
                    (first_exchange, first_key), rest = self.bindings[0], self.bindings[1:]
                    queue = Queue(f"{self.name}-{uuid.uuid4().hex}", exchange=first_exchange,
                                  routing_key=first_key, exclusive=True, auto_delete=True, durable=False,
                                  channel=channel)
                    # the exchanges exist (common.topology declares them): a component may not
                    # declare exchanges (common/bus.py), so the queue is declared without them
                    queue.exchange.no_declare = True  # the queue's own (bound) copy of the exchange
                    queue.declare()
                    for exchange, routing_key in rest:
                        queue.bind_to(exchange=exchange, routing_key=routing_key)
                    with connection.Consumer([queue], channel=channel, callbacks=[self._deliver], accept=["json"]):
                        self.on_connected(time.time())
                        self.ready.set()
                        backoff = 0.2
                        while not self._stop.is_set():
                            try:
                                connection.drain_events(timeout=1)
                            except TimeoutError:
                                connection.heartbeat_check()
            except Exception as error:
                self.on_disconnected()
                self.ready.clear()
                log.warning("%s disconnected (%r); retrying in %.1fs", self.name, error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.on_disconnected()
