"""Event handlers that never lose an event.

nameko acks an event whose handler raised, and the event is gone. ``reliable_handler`` instead
moves a failed event to the retry queue of its delay (it comes back after an exponential backoff)
and, after ``MAX_ATTEMPTS``, to its parking queue for an operator -- the queues come from
``common.topology`` and are reached through the service's own retry exchange
(``common.bus.retry_exchange``), never the default exchange, which would let the service publish
into any queue. The handler's queue is declared with the topology's arguments (quorum, delivery
limit, dead-lettering to the parking queue), which a re-declaration must repeat exactly.
Only when that hand-over is confirmed by the broker is the original acked; if it fails the event
is requeued. Handlers must be idempotent: every event may arrive twice.

The handler's worker context holds the event's request id (its AMQP ``correlation_id``) and event
id (``message_id``, else the body's), nothing else of the headers: ``common.context`` binds them,
so what the handler logs names both and the events it queues carry the same request id. A retry
keeps the envelope (``common.envelope``) of the original.
"""
import logging

from amqp.exceptions import AMQPError
from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import SERVICE_POOL, EventHandler

from common import context, topology
from common.bus import retry_exchange
from common.envelope import PROPERTIES
from common.errors import DomainError
from common.metrics import count_event
from common.subscriptions import Subscription

log = logging.getLogger(__name__)

MAX_ATTEMPTS = topology.MAX_ATTEMPTS
ATTEMPTS_HEADER = "x-orgplatform-attempts"


class ReliableEventHandler(EventHandler):
    def setup(self):
        super().setup()
        subscription = Subscription((self.source_service, self.event_type), self.container.service_name,
                                             self.method_name)
        queue = self.queue
        self.queue = Queue(queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=True,
                           auto_delete=False, exclusive=False,
                           queue_arguments=topology.subscriber_arguments(subscription))
        self._publisher = Publisher(self.container.config[AMQP_URI_CONFIG_KEY], serializer="json")

    def unpack_message_headers(self, message):
        """Context data from the envelope, instead of nameko's default (every header, which the
        worker would then forward on each RPC it makes)."""
        properties = message.properties or {}
        body = message.payload if isinstance(message.payload, dict) else {}
        data = {context.EVENT_ID: properties.get("message_id") or body.get("event_id")}
        if context.well_formed(properties.get("correlation_id")):
            data[context.REQUEST_ID] = properties["correlation_id"]
        return data

    def _settle(self, settle, message):
        """Ack or requeue; if the broker connection just broke, the broker redelivers the message by
        itself (handlers are idempotent). Raising here would kill the whole service container."""
        try:
            settle(message)
        except (OSError, AMQPError) as error:
            log.warning("could not settle an event on %s (%r); the broker redelivers it", self.queue.name, error)

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is None:
            self._settle(self.queue_consumer.ack_message, message)
            return
        attempts = int((message.headers or {}).get(ATTEMPTS_HEADER, 0)) + 1
        queue = self.queue.name
        headers = dict(message.headers or {})
        headers[ATTEMPTS_HEADER] = attempts
        if attempts >= MAX_ATTEMPTS:
            target = topology.parked_queue_name(queue)
            log.error("parking event on %s after %d attempts: %r", queue, attempts, exc_info[1])
        else:
            delay = topology.retry_delay_ms(attempts)
            target = topology.retry_routing_key(delay)
            headers[topology.REQUEUE_HEADER] = queue  # where <service>.requeue sends it back
            log.warning("event on %s failed (attempt %d), retrying in %.1fs: %r",
                        queue, attempts, delay / 1000.0, exc_info[1])
        envelope = {key: message.properties[key] for key in PROPERTIES
                    if key != "content_type" and message.properties.get(key) is not None}
        try:
            self._publisher.publish(message.payload, exchange=retry_exchange(self.container.service_name),
                                    routing_key=target,
                                    headers=headers, mandatory=True, **envelope)
        except Exception:  # the broker did not take it: keep the original instead
            log.exception("could not hand failed event to %s; requeueing", target)
            self._settle(self.queue_consumer.requeue_message, message)
            return
        outcome = "parked" if attempts >= MAX_ATTEMPTS else "retried"
        count_event(self.container.service_name, self.method_name, outcome)
        self._settle(self.queue_consumer.ack_message, message)


def reliable_handler(event, handler_type=SERVICE_POOL):
    """``@reliable_handler(events.ORGANIZATION_RENAMED)`` -- subscribe with retry and parking."""
    source, event_type = event
    return ReliableEventHandler.decorator(source, event_type, handler_type=handler_type,
                                          expected_exceptions=(DomainError,))
