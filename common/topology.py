"""The bus topology, declared once before anything publishes.

RabbitMQ drops an event published to an exchange with no bound queue, so every durable subscriber
queue is listed here and declared by ``python -m common.topology`` at start-up (and by each service
again when it starts). Queue names and arguments match what nameko's ``event_handler`` declares,
so both declarations agree. Each subscriber queue has two companions:

* ``<queue>.retry`` -- a failed event waits here (per-message TTL, exponential backoff) and is
  dead-lettered back to its queue;
* ``<queue>.parked`` -- after ``MAX_ATTEMPTS`` failures the event is parked for an operator
  instead of being dropped.

Both companions are bound to the subscribing service's ``<service>.retry`` exchange (routing key =
queue name), which is how the service reaches them: see ``common.bus.retry_exchange``.

This is also the one place exchanges are declared (the RPC exchange, the event exchanges, the
retry exchanges, ``org.cache``): components run with broker users that may not declare any
(``common/bus.py``), so this runs first, as the instance's admin user.
"""
import sys
import time

from kombu import Connection, Exchange, Queue

from common import bus, events
from common.nameko_private import event_queue_name
from common.subscriptions import subscriptions

EVENT_SOURCES = sorted({source for source, _ in events.SCHEMAS})


def event_exchange(source):
    return Exchange(f"{source}.events", type="topic", durable=True, delivery_mode=2,
                    auto_delete=False)


#: nameko's RPC exchange, declared as nameko declares it
RPC_EXCHANGE = Exchange(bus.RPC_EXCHANGE, type="topic", durable=True, auto_delete=False)
#: the org processes' cache invalidation broadcast (``services/org/cache.py``; routing key "").
#: A topic exchange, not a fanout one, only so that topic permissions apply: the org user writes
#: ``nameko-rpc`` and reads this exchange, and through a fanout exchange (no routing-key checks)
#: it could bind ``nameko-rpc`` to it and route any call (``usage.grant_credits``) past its limits.
ORG_CACHE_EXCHANGE = Exchange(bus.ORG_CACHE_EXCHANGE, type="topic", durable=True, auto_delete=False)


def retry_exchange(service):
    return Exchange(bus.retry_exchange(service), type="direct", durable=True, auto_delete=False)


def queue_name(subscription):
    source, event_type = subscription.event
    return event_queue_name(source, event_type, subscription.service, subscription.method)


def subscriber_queues(subscription):
    """The handler's queue plus its retry and parking queues."""
    source, event_type = subscription.event
    name = queue_name(subscription)
    main = Queue(name, exchange=event_exchange(source), routing_key=event_type,
                 durable=True, auto_delete=False, exclusive=False)
    companions = retry_exchange(subscription.service)
    retry = Queue(name + ".retry", exchange=companions, routing_key=name + ".retry", durable=True,
                  auto_delete=False,
                  queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
    parked = Queue(name + ".parked", exchange=companions, routing_key=name + ".parked", durable=True,
                   auto_delete=False)
    return main, retry, parked


def _replace_if_other_type(connection, exchange):
    """Declare ``exchange``; one of the same name but another type (``org.cache`` was a fanout
    exchange) is deleted first. Only for exchanges that carry nothing durable: the listeners bound
    to the old one re-bind when they reconnect, and their caches expire meanwhile."""
    from amqp.exceptions import PreconditionFailed
    try:
        exchange(connection.channel()).declare()
    except PreconditionFailed:
        connection.channel().exchange_delete(exchange.name)
        exchange(connection.channel()).declare()


def declare(amqp_uri, only=None):
    """Declare every event exchange and every subscriber queue (``only``: those subscriptions; idempotent)."""
    with Connection(amqp_uri, connect_timeout=10) as connection:
        _replace_if_other_type(connection, ORG_CACHE_EXCHANGE)
        channel = connection.channel()
        RPC_EXCHANGE(channel).declare()
        for source in EVENT_SOURCES:
            event_exchange(source)(channel).declare()
        for subscription in only or subscriptions():
            for queue in subscriber_queues(subscription):
                queue(channel).declare()
        channel.close()


def provision_users(amqp_uri, environ):
    """``--users`` (docker-compose's one-shot): the broker users of :mod:`common.bus`, created with
    the administrator of ``amqp_uri`` through the management API (``RABBIT_MANAGEMENT_URL``), each
    named after its component with the password of ``RABBIT_<COMPONENT>_PASSWORD``."""
    from urllib.parse import unquote, urlsplit
    url = urlsplit(amqp_uri)
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    management = bus.Management(environ["RABBIT_MANAGEMENT_URL"], unquote(url.username), unquote(url.password))
    missing = [c for c in bus.COMPONENTS if not environ.get(f"RABBIT_{c.upper()}_PASSWORD")]
    if missing:
        raise SystemExit(f'no password for {", ".join(missing)} (RABBIT_<COMPONENT>_PASSWORD)')
    deadline = time.monotonic() + 120  # "healthy" means the node answers, the management API comes later
    while True:
        try:
            management("GET", "/api/overview")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    bus.provision(management, vhost, {c: (c, environ[f"RABBIT_{c.upper()}_PASSWORD"]) for c in bus.COMPONENTS})
    print(f'broker users of {", ".join(bus.COMPONENTS)} provisioned on vhost {vhost}')


def main(argv):
    import os
    args = [arg for arg in argv[1:] if arg != "--users"]
    amqp_uri = args[0] if args else os.environ["AMQP_URI"]
    if "--users" in argv[1:]:
        provision_users(amqp_uri, os.environ)
    declare(amqp_uri)
    print(f"declared {len(EVENT_SOURCES)} exchanges and {len(subscriptions())} subscriber queues")


if __name__ == "__main__":
    main(sys.argv)
