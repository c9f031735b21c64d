"""The bus topology, declared once before anything publishes.

RabbitMQ drops an event published to an exchange with no bound queue, so every durable subscriber
queue is listed here and declared by ``python -m common.topology`` at start-up (and by each service
again when it starts). Queue names and arguments match what nameko's ``event_handler`` declares,
so both declarations agree. Each subscriber queue has two companions:

* ``<queue>.retry`` -- a failed event waits here (per-message TTL, exponential backoff) and is
  dead-lettered back to its queue;
* ``<queue>.parked`` -- after ``MAX_ATTEMPTS`` failures the event is parked for an operator
  instead of being dropped.
"""
import sys
from collections import namedtuple

from kombu import Connection, Exchange, Queue

from common import events

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
    Subscription(events.organization_purged("membership"), "org", "on_membership_purged"),
    Subscription(events.organization_purged("notifications"), "org", "on_notifications_purged"),
    Subscription(events.organization_purged("usage"), "org", "on_usage_purged"),
    Subscription(events.ORGANIZATION_DELETION_REQUESTED, "membership", "on_organization_deletion_requested"),
]

EVENT_SOURCES = sorted({source for source, _ in events.SCHEMAS})


def event_exchange(source):
    return Exchange("%s.events" % source, type="topic", durable=True, delivery_mode=2,
                    auto_delete=False)


def queue_name(subscription):
    source, event_type = subscription.event
    return "evt-%s-%s--%s.%s" % (source, event_type, subscription.service, subscription.method)


def subscriber_queues(subscription):
    """The handler's queue plus its retry and parking queues."""
    source, event_type = subscription.event
    name = queue_name(subscription)
    main = Queue(name, exchange=event_exchange(source), routing_key=event_type,
                 durable=True, auto_delete=False, exclusive=False)
    retry = Queue(name + ".retry", durable=True, auto_delete=False, queue_arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
    parked = Queue(name + ".parked", durable=True, auto_delete=False)
    return main, retry, parked


def declare(amqp_uri, subscriptions=None):
    """Declare every event exchange and every subscriber queue (idempotent)."""
    with Connection(amqp_uri, connect_timeout=10) as connection:
        channel = connection.channel()
        for source in EVENT_SOURCES:
            event_exchange(source)(channel).declare()
        for subscription in subscriptions or SUBSCRIPTIONS:
            for queue in subscriber_queues(subscription):
                queue(channel).declare()
        channel.close()


def main(argv):
    import os
    amqp_uri = argv[1] if len(argv) > 1 else os.environ.get(
        "AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    declare(amqp_uri)
    print("declared %d exchanges and %d subscriber queues" % (len(EVENT_SOURCES), len(SUBSCRIPTIONS)))


if __name__ == "__main__":
    main(sys.argv)
