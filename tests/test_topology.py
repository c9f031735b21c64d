"""The bus topology declared up front matches what the services subscribe to."""
import copy
import glob
import inspect
import os
import time
import uuid
from urllib.parse import quote

import pytest
from kombu import Connection
from nameko.events import EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from common import subscriptions, topology
from common.handlers import ReliableEventHandler
from services.audit.service import AuditService
from services.membership.service import MembershipService
from services.notifications.service import NotificationsService
from services.org.service import OrgService
from services.usage.service import UsageService
from stack import stack
from tests.support import wait_until

SERVICES = (OrgService, MembershipService, NotificationsService, UsageService, AuditService)


def declared_handlers():
    for service in SERVICES:
        for method_name, method in inspect.getmembers(service, inspect.isfunction):
            for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, EventHandler):
                    yield service, method_name, entrypoint


def test_every_service_is_inspected_for_the_topology():
    """Every ``services/*/service.py`` class is one the topology reads its subscriptions from."""
    listed = {path.split(":")[0] for path in subscriptions.SERVICE_CLASSES}
    on_disk = {f"services.{os.path.basename(os.path.dirname(path))}.service"
               for path in glob.glob(os.path.join(stack.ROOT, "services", "*", "service.py"))}
    assert listed == on_disk


def test_every_event_handler_is_in_the_topology_and_reliable():
    found = set()
    for service, method_name, entrypoint in declared_handlers():
        assert isinstance(entrypoint, ReliableEventHandler), f"{service.name}.{method_name} must use reliable_handler"
        found.add(subscriptions.Subscription((entrypoint.source_service, entrypoint.event_type), service.name,
                                             method_name))
    assert found == set(topology.subscriptions()) and len(found) >= 28


def test_queue_names_match_what_nameko_declares():
    for subscription in topology.subscriptions():
        main, parked = topology.subscriber_queues(subscription)
        source, event_type = subscription.event
        assert main.name == f"evt-{source}-{event_type}--{subscription.service}.{subscription.method}"
        assert main.durable and not main.auto_delete and not main.exclusive
        assert main.queue_arguments["x-dead-letter-routing-key"] == parked.name == main.name + ".parked"


def test_one_retry_queue_per_delay_in_attempt_order():
    """A per-message TTL expires only at the head of a queue: one queue per delay keeps a 0.5 s
    retry from waiting behind a 32 s one."""
    delays = [topology.retry_delay_ms(attempt) for attempt in range(1, topology.MAX_ATTEMPTS)]
    assert delays == sorted(delays) and delays[0] == topology.BASE_DELAY_MS
    queues = topology.retry_queues("usage")
    assert [q.queue_arguments["x-message-ttl"] for q in queues] == sorted(set(delays))
    assert len({q.name for q in queues}) == len(queues)


@pytest.fixture
def scratch_vhost(test_stack):
    """The test stack's broker with an empty vhost of its own: whatever is there, the declaration made."""
    inst = copy.copy(test_stack)
    inst.vhost = f"{test_stack.vhost}-topology-{uuid.uuid4().hex[:8]}"
    stack.ensure_rabbitmq(inst)  # creates the vhost and grants the user access
    yield inst
    stack._management(inst, "DELETE", f'/api/vhosts/{quote(inst.vhost, safe="")}')


QUORUM_AT_LEAST_ONCE = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish"}


def test_declaration_creates_every_durable_subscriber_queue_on_the_broker(scratch_vhost):
    inst = scratch_vhost
    vhost = quote(inst.vhost, safe="")
    assert stack._management(inst, "GET", f"/api/queues/{vhost}") == []
    assert stack._management(inst, "GET", f"/api/vhosts/{vhost}")["default_queue_type"] == "quorum"
    stack.declare_topology(inst)  # what `make up` runs before any service starts

    queues = {q["name"]: q for q in stack._management(inst, "GET", f"/api/queues/{vhost}")}
    exchanges = {e["name"]: e for e in stack._management(inst, "GET", f"/api/exchanges/{vhost}")}
    bindings = {(b["source"], b["destination"], b["routing_key"])
                for b in stack._management(inst, "GET", f"/api/bindings/{vhost}")}
    header_bindings = {(b["source"], b["destination"]): b["arguments"]
                       for b in stack._management(inst, "GET", f"/api/bindings/{vhost}")
                       if b["source"].endswith(".requeue")}
    for source in topology.EVENT_SOURCES:
        exchange = exchanges[f"{source}.events"]
        assert exchange["type"] == "topic" and exchange["durable"] and not exchange["auto_delete"], exchange
    for queue in queues.values():  # every durable queue is replicated
        assert queue["type"] == "quorum" and queue["durable"], queue
    for subscription in topology.subscriptions():
        main, parked = topology.subscriber_queues(subscription)
        for queue in (main, parked):
            assert queue.name in queues, f"{queue.name} not declared"
            declared = queues[queue.name]
            assert declared["durable"] and not declared["auto_delete"] and not declared["exclusive"], declared
        assert (f"{subscription.event[0]}.events", main.name, subscription.event[1]) in bindings
        # a poison message (never settled) goes to the parking queue after DELIVERY_LIMIT deliveries
        companions = f"{subscription.service}.retry"
        assert queues[main.name]["arguments"] == dict(QUORUM_AT_LEAST_ONCE, **{
            "x-delivery-limit": topology.DELIVERY_LIMIT, "x-dead-letter-exchange": companions,
            "x-dead-letter-routing-key": parked.name})
        # the service reaches its retry and parking queues through its own exchange, never the
        # default one (common/bus.py: write on amq.default would reach every queue by name)
        assert exchanges[companions]["type"] == "direct" and exchanges[companions]["durable"]
        assert (companions, parked.name, parked.name) in bindings
        # retried events come back through the requeue exchange, by the header naming their queue
        requeue = f"{subscription.service}.requeue"
        assert exchanges[requeue]["type"] == "headers"
        assert header_bindings[(requeue, main.name)] == {"x-match": "all", topology.REQUEUE_HEADER: main.name}
    for service in {s.service for s in topology.subscriptions()}:
        for retry in topology.retry_queues(service):
            delay = retry.queue_arguments["x-message-ttl"]
            assert queues[retry.name]["arguments"] == dict(QUORUM_AT_LEAST_ONCE, **{
                "x-message-ttl": delay, "x-dead-letter-exchange": f"{service}.requeue"})
            assert (f"{service}.retry", retry.name, topology.retry_routing_key(delay)) in bindings
    # exchanges components use but may not declare themselves
    assert exchanges["nameko-rpc"]["type"] == "topic" and exchanges["nameko-rpc"]["durable"]
    # org.cache: topic, so that topic permissions keep its routing keys to "" (common/topology.py)
    assert exchanges["org.cache"]["type"] == "topic" and exchanges["org.cache"]["durable"]


def test_the_running_stack_has_quorum_queues_and_non_durable_classic_reply_queues(test_stack):
    """Acceptance 2 of issue 14: what `make up` declares, as `rabbitmqctl list_queues name type`
    shows it. Durable queues (RPC, events, retry, parking) are quorum; reply and broadcast queues
    are non-durable classic queues, which do not tie a process to the node they were declared on."""
    queues = stack._management(test_stack, "GET", f'/api/queues/{quote(test_stack.vhost, safe="")}')
    durable = [q for q in queues if q["durable"]]
    temporary = [q for q in queues if not q["durable"]]
    for service in ("org", "membership", "notifications", "usage"):
        assert any(q["name"] == f"rpc-{service}" for q in durable)
    assert durable and all(q["type"] == "quorum" for q in durable), [
        (q["name"], q["type"]) for q in durable if q["type"] != "quorum"]
    # membership and usage hold an RpcProxy (their reply queues), the gateway its pooled proxies
    replies = {q["name"].split("-")[1] for q in temporary if q["name"].startswith("rpc.reply-")}
    assert {"membership", "usage"} <= replies, replies
    assert all(q["type"] == "classic" for q in temporary), [(q["name"], q["type"]) for q in temporary]


def publish_to(inst, queue, body, headers=None):
    with Connection(inst.amqp_uri, transport_options={"confirm_publish": True}) as connection:
        connection.Producer(serializer="json").publish(body, exchange="", routing_key=queue, headers=headers or {},
                                                       retry=True)


def message_count(inst, queue):
    with Connection(inst.amqp_uri) as connection:
        return connection.default_channel.queue_declare(queue, passive=True).message_count


def test_a_poison_message_is_parked_after_the_delivery_limit(scratch_vhost):
    """A message nobody ever settles (its handler kills the process each time: here a consumer
    that returns it) is parked, not redelivered forever -- and not lost."""
    inst = scratch_vhost
    stack.declare_topology(inst)
    subscription = topology.subscriptions()[0]
    main, parked = topology.subscriber_queues(subscription)
    publish_to(inst, main.name, {"poison": True})
    deliveries = 0
    with Connection(inst.amqp_uri) as connection:
        channel = connection.channel()
        while True:
            message = channel.basic_get(main.name, no_ack=False)
            if message is None:
                break
            deliveries += 1
            channel.basic_reject(message.delivery_tag, requeue=True)
            assert deliveries <= topology.DELIVERY_LIMIT + 1
    assert deliveries == topology.DELIVERY_LIMIT + 1 or deliveries == topology.DELIVERY_LIMIT
    wait_until(lambda: message_count(inst, parked.name) == 1, what=f"the poison message in {parked.name}")
    assert message_count(inst, main.name) == 0


def test_a_short_retry_does_not_wait_behind_a_long_one(scratch_vhost):
    """Two failed events of one service: the one on its last, 32 s retry does not hold back the
    one on its first, 0.5 s retry (each delay has its own queue), which comes back to its own
    subscriber queue through the service's requeue exchange."""
    inst = scratch_vhost
    stack.declare_topology(inst)
    mine = [s for s in topology.subscriptions() if s.service == "notifications"][:2]
    slow_queue, fast_queue = (topology.queue_name(s) for s in mine)
    longest, shortest = topology.RETRY_DELAYS_MS[-1], topology.RETRY_DELAYS_MS[0]
    with Connection(inst.amqp_uri, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer(serializer="json")
        for queue, delay in ((slow_queue, longest), (fast_queue, shortest)):
            producer.publish({"queue": queue}, exchange="notifications.retry",
                             routing_key=topology.retry_routing_key(delay),
                             headers={topology.REQUEUE_HEADER: queue}, mandatory=True, retry=True)
    started = time.monotonic()
    wait_until(lambda: message_count(inst, fast_queue) == 1, what=f"the short retry back on {fast_queue}")
    assert time.monotonic() - started < longest / 1000.0
    assert message_count(inst, slow_queue) == 0  # the long one still waits
    assert message_count(inst, topology.retry_queue_name("notifications", longest)) == 1
