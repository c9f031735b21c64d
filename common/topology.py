"""The bus topology, declared once before anything publishes.

RabbitMQ drops an event published to an exchange with no bound queue, so every durable subscriber
queue is listed here and declared by ``python -m common.topology`` at start-up (and by each service
again when it starts). Queue names and arguments match what nameko's ``event_handler`` declares
(``common.handlers`` declares its queue with :func:`subscriber_arguments`), so both declarations
agree: RabbitMQ refuses (406) a re-declaration whose arguments differ.

Every durable queue is a quorum queue (replicated over the broker cluster's nodes, so losing the
node a queue was declared on loses neither the queue nor its messages). The vhost is created with
``default-queue-type: quorum`` (``common.bus.provision``), which makes nameko's own ``rpc-<service>``
queues quorum too; the queues declared here say ``x-queue-type: quorum`` themselves. Reply and
broadcast queues are non-durable classic queues (``common.bus.least_privilege``,
``common.broadcast``): quorum queues refuse exclusive, auto-delete and non-durable declarations,
and a durable classic queue would pin its consumer to the one node it lives on.

Each subscriber queue has a parking queue, and each subscribing service one retry queue per delay:

* ``<service>.retry.<ms>ms`` -- a failed event waits here for that queue's TTL (one queue per delay:
  a per-message TTL only expires at the head of a queue, so a 0.5 s retry would wait behind a 32 s
  one), then is dead-lettered to the service's ``<service>.requeue`` headers exchange, which routes
  it back to the queue named in its ``orgplatform-queue`` header;
* ``<queue>.parked`` -- after ``MAX_ATTEMPTS`` failures the event is parked for an operator
  instead of being dropped, and so is a poison message the broker redelivered
  ``DELIVERY_LIMIT`` times without anyone settling it (a handler that kills its process).

Dead-lettering (retry back to the queue, poison to the parking queue) is at-least-once
(``x-dead-letter-strategy``, which needs ``x-overflow: reject-publish``): the broker keeps the
message until the target queue confirmed it, so a node lost mid-way loses nothing.

The retry queues and the parking queues are bound to the subscribing service's ``<service>.retry``
exchange (routing keys: ``delay.<ms>`` and the parking queue's name), which is how the service
reaches them: see ``common.bus.retry_exchange``.

This is also the one place exchanges are declared (the RPC exchange, the event exchanges, the
retry and requeue exchanges, ``org.cache``): components run with broker users that may not declare
any (``common/bus.py``), so this runs first, as the instance's admin user.
"""
import sys
import time
from collections import namedtuple

from kombu import Connection, Exchange, Queue

from common import bus, events

Subscription = namedtuple("Subscription", "event service method")

#: Every (event, subscribing service, handler method). A test checks this against the services.
SUBSCRIPTIONS = [
    # usage: its copy of each organization's plan, seat count and state; the overview's usage sections
    Subscription(events.ORGANIZATION_CREATED, "usage", "on_organization_created"),
    Subscription(events.PLAN_CHANGED, "usage", "on_plan_changed"),
    Subscription(events.MEMBER_JOINED, "usage", "on_member_joined"),
    Subscription(events.MEMBER_LEFT, "usage", "on_member_left"),
    Subscription(events.ORGANIZATION_DELETION_REQUESTED, "usage", "on_organization_deletion_requested"),
    Subscription(events.STORAGE_UPDATED, "org", "on_storage_updated"),
    Subscription(events.CREDITS_CHANGED, "org", "on_credits_changed"),
    Subscription(events.ORGANIZATION_RENAMED, "membership", "on_organization_renamed"),
    Subscription(events.MEMBER_JOINED, "org", "on_member_joined"),
    Subscription(events.MEMBER_LEFT, "org", "on_member_left"),
    Subscription(events.OWNERSHIP_TRANSFERRED, "org", "on_ownership_transferred"),
    # notifications: its copy of who to mail, and the mail of CONTRACT §4
    Subscription(events.ORGANIZATION_CREATED, "notifications", "on_organization_created"),
    Subscription(events.ORGANIZATION_RENAMED, "notifications", "on_organization_renamed"),
    Subscription(events.PLAN_CHANGED, "notifications", "on_plan_changed"),
    Subscription(events.ORGANIZATION_DELETION_REQUESTED, "notifications", "on_organization_deletion_requested"),
    Subscription(events.ORGANIZATION_DELETED, "notifications", "on_organization_deleted"),
    Subscription(events.MEMBER_JOINED, "notifications", "on_member_joined"),
    Subscription(events.MEMBER_LEFT, "notifications", "on_member_left"),
    Subscription(events.MEMBER_ROLE_CHANGED, "notifications", "on_member_role_changed"),
    Subscription(events.OWNERSHIP_TRANSFERRED, "notifications", "on_ownership_transferred"),
    Subscription(events.INVITE_CREATED, "notifications", "on_invite_created"),
    Subscription(events.STORAGE_UPDATED, "notifications", "on_storage_updated"),
    Subscription(events.AI_JOB_COMPLETED, "notifications", "on_ai_job_completed"),
    Subscription(events.ACCOUNT_DELETED, "notifications", "on_account_deleted"),
    Subscription(events.organization_purged("membership"), "org", "on_membership_purged"),
    Subscription(events.organization_purged("notifications"), "org", "on_notifications_purged"),
    Subscription(events.organization_purged("usage"), "org", "on_usage_purged"),
    Subscription(events.ORGANIZATION_DELETION_REQUESTED, "membership", "on_organization_deletion_requested"),
    Subscription(events.organization_purged("audit"), "org", "on_audit_purged"),
    # audit: built from the documented events alone (issue 19); one entry (or two) per event
] + [Subscription(event, "audit", "on_" + event[1]) for event in (
    events.ORGANIZATION_CREATED, events.ORGANIZATION_RENAMED, events.PLAN_CHANGED,
    events.ORGANIZATION_DELETION_REQUESTED, events.NOTIFICATION_SETTINGS_CHANGED,
    events.MEMBER_JOINED, events.MEMBER_LEFT, events.MEMBER_ROLE_CHANGED, events.DELETION_RIGHT_CHANGED,
    events.OWNERSHIP_TRANSFERRED, events.INVITE_CREATED, events.INVITE_REVOKED,
    events.CREDITS_CHANGED, events.AI_JOB_COMPLETED, events.STORAGE_UPDATED, events.ACCOUNT_DELETED)]

EVENT_SOURCES = sorted({source for source, _ in events.SCHEMAS})


def event_exchange(source):
    return Exchange("%s.events" % source, type="topic", durable=True, delivery_mode=2,
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
    return "evt-%s-%s--%s.%s" % (source, event_type, subscription.service, subscription.method)


#: a failed event's attempts before it is parked (``common.handlers``)
MAX_ATTEMPTS = 8
BASE_DELAY_MS = 500
MAX_DELAY_MS = 60_000
#: the retry delay of attempt n (1-based) is RETRY_DELAYS_MS[n - 1]: exponential, capped
RETRY_DELAYS_MS = tuple(min(BASE_DELAY_MS * 2 ** n, MAX_DELAY_MS) for n in range(MAX_ATTEMPTS - 1))
#: deliveries of one message a subscriber queue allows before it parks it: a message that never
#: gets settled (its handler kills the process, or the connection, every time) is a poison message
DELIVERY_LIMIT = 10
#: the header naming the queue a retried event goes back to (``<service>.requeue`` routes on it;
#: not "x-..." -- a headers exchange ignores binding arguments starting with "x-" when it matches)
REQUEUE_HEADER = "orgplatform-queue"
QUORUM = {"x-queue-type": "quorum"}
#: at-least-once dead-lettering: a dead-lettered message stays in its queue until the target
#: confirmed it (RabbitMQ requires reject-publish overflow for it)
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def retry_delay_ms(attempt):
    """The delay before a failed event's ``attempt``-th retry (1-based; < MAX_ATTEMPTS)."""
    return RETRY_DELAYS_MS[attempt - 1]


def retry_queue_name(service, delay_ms):
    return "%s.retry.%dms" % (service, delay_ms)


def retry_routing_key(delay_ms):
    """The routing key on ``<service>.retry`` that reaches the retry queue of ``delay_ms``."""
    return "delay.%d" % delay_ms


def parked_queue_name(subscription_or_queue):
    name = subscription_or_queue if isinstance(subscription_or_queue, str) else queue_name(subscription_or_queue)
    return name + ".parked"


def requeue_exchange(service):
    """The headers exchange a service's retry queues dead-letter to: it routes each event back to
    the subscriber queue its ``orgplatform-queue`` header names."""
    return Exchange("%s.requeue" % service, type="headers", durable=True, auto_delete=False)


def subscriber_arguments(subscription):
    """The arguments of a subscriber queue (here and in ``common.handlers``: both must agree)."""
    return dict(QUORUM, **AT_LEAST_ONCE, **{
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": bus.retry_exchange(subscription.service),
        "x-dead-letter-routing-key": parked_queue_name(subscription)})


def subscriber_queues(subscription):
    """The handler's queue plus its parking queue."""
    source, event_type = subscription.event
    name = queue_name(subscription)
    main = Queue(name, exchange=event_exchange(source), routing_key=event_type,
                 durable=True, auto_delete=False, exclusive=False,
                 queue_arguments=subscriber_arguments(subscription))
    parked = Queue(parked_queue_name(name), exchange=retry_exchange(subscription.service),
                   routing_key=parked_queue_name(name), durable=True, auto_delete=False, queue_arguments=QUORUM)
    return main, parked


def retry_queues(service):
    """The service's retry queues, one per delay."""
    return [Queue(retry_queue_name(service, delay), exchange=retry_exchange(service),
                  routing_key=retry_routing_key(delay), durable=True, auto_delete=False,
                  queue_arguments=dict(QUORUM, **AT_LEAST_ONCE, **{
                      "x-message-ttl": delay, "x-dead-letter-exchange": requeue_exchange(service).name}))
            for delay in sorted(set(RETRY_DELAYS_MS))]


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


def declare(amqp_uri, subscriptions=None):
    """Declare every exchange and every subscriber, retry and parking queue (idempotent)."""
    subscriptions = subscriptions or SUBSCRIPTIONS
    with Connection(amqp_uri, connect_timeout=10) as connection:
        _replace_if_other_type(connection, ORG_CACHE_EXCHANGE)
        channel = connection.channel()
        RPC_EXCHANGE(channel).declare()
        for source in EVENT_SOURCES:
            event_exchange(source)(channel).declare()
        for service in sorted({s.service for s in subscriptions}):
            requeue_exchange(service)(channel).declare()
            for queue in retry_queues(service):
                queue(channel).declare()
        for subscription in subscriptions:
            main, parked = subscriber_queues(subscription)
            main(channel).declare()
            main(channel).bind_to(requeue_exchange(subscription.service),
                                  arguments={"x-match": "all", REQUEUE_HEADER: main.name})
            parked(channel).declare()
        channel.close()


def provision_users(amqp_uri, environ):
    """``--users`` (docker-compose's one-shot): the broker users of :mod:`common.bus`, created with
    the administrator of ``amqp_uri`` through the management API (``RABBIT_MANAGEMENT_URL``), each
    named after its component with the password of ``RABBIT_<COMPONENT>_PASSWORD``."""
    from urllib.parse import unquote, urlsplit
    url = urlsplit(bus.broker_urls(amqp_uri)[0])  # every node of a cluster has the same users
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    management = bus.Management(environ["RABBIT_MANAGEMENT_URL"], unquote(url.username), unquote(url.password))
    missing = [c for c in bus.COMPONENTS if not environ.get("RABBIT_%s_PASSWORD" % c.upper())]
    if missing:
        raise SystemExit("no password for %s (RABBIT_<COMPONENT>_PASSWORD)" % ", ".join(missing))
    deadline = time.monotonic() + 120  # "healthy" means the node answers, the management API comes later
    while True:
        try:
            management("GET", "/api/overview")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    bus.provision(management, vhost, {c: (c, environ["RABBIT_%s_PASSWORD" % c.upper()]) for c in bus.COMPONENTS})
    print("broker users of %s provisioned on vhost %s" % (", ".join(bus.COMPONENTS), vhost))


def main(argv):
    import os
    args = [arg for arg in argv[1:] if arg != "--users"]
    amqp_uri = args[0] if args else os.environ["AMQP_URI"]
    if "--users" in argv[1:]:
        provision_users(amqp_uri, os.environ)
    declare(amqp_uri)
    print("declared %d exchanges and %d subscriber queues" % (len(EVENT_SOURCES), len(SUBSCRIPTIONS)))


if __name__ == "__main__":
    main(sys.argv)
