"""The bus topology declared up front matches what the services subscribe to."""
import copy
import glob
import inspect
import os
import uuid
from urllib.parse import quote

import pytest
from nameko.events import EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from common import subscriptions, topology
from common.handlers import ReliableEventHandler
from services.membership.service import MembershipService
from services.notifications.service import NotificationsService
from services.org.service import OrgService
from services.usage.service import UsageService
from stack import stack

SERVICES = (OrgService, MembershipService, NotificationsService, UsageService)


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
        main, retry, parked = topology.subscriber_queues(subscription)
        source, event_type = subscription.event
        assert main.name == f"evt-{source}-{event_type}--{subscription.service}.{subscription.method}"
        assert main.durable and not main.auto_delete and not main.exclusive
        assert retry.queue_arguments["x-dead-letter-routing-key"] == main.name
        assert parked.name == main.name + ".parked"


@pytest.fixture
def scratch_vhost(test_stack):
    """The test stack's broker with an empty vhost of its own: whatever is there, the declaration made."""
    inst = copy.copy(test_stack)
    inst.vhost = f"{test_stack.vhost}-topology-{uuid.uuid4().hex[:8]}"
    stack.ensure_rabbitmq(inst)  # creates the vhost and grants the user access
    yield inst
    stack._management(inst, "DELETE", f'/api/vhosts/{quote(inst.vhost, safe="")}')


def test_declaration_creates_every_durable_subscriber_queue_on_the_broker(scratch_vhost):
    inst = scratch_vhost
    vhost = quote(inst.vhost, safe="")
    assert stack._management(inst, "GET", f"/api/queues/{vhost}") == []
    stack.declare_topology(inst)  # what `make up` runs before any service starts

    queues = {q["name"]: q for q in stack._management(inst, "GET", f"/api/queues/{vhost}")}
    exchanges = {e["name"]: e for e in stack._management(inst, "GET", f"/api/exchanges/{vhost}")}
    bindings = {(b["source"], b["destination"], b["routing_key"])
                for b in stack._management(inst, "GET", f"/api/bindings/{vhost}")}
    for source in topology.EVENT_SOURCES:
        exchange = exchanges[f"{source}.events"]
        assert exchange["type"] == "topic" and exchange["durable"] and not exchange["auto_delete"], exchange
    for subscription in topology.subscriptions():
        main, retry, parked = topology.subscriber_queues(subscription)
        for queue in (main, retry, parked):
            assert queue.name in queues, f"{queue.name} not declared"
            declared = queues[queue.name]
            assert declared["durable"] and not declared["auto_delete"] and not declared["exclusive"], declared
        assert (f"{subscription.event[0]}.events", main.name, subscription.event[1]) in bindings
        assert queues[retry.name]["arguments"] == {"x-dead-letter-exchange": "",
                                                   "x-dead-letter-routing-key": main.name}
        # the service reaches its retry and parking queues through its own exchange, never the
        # default one (common/bus.py: write on amq.default would reach every queue by name)
        companions = f"{subscription.service}.retry"
        assert exchanges[companions]["type"] == "direct" and exchanges[companions]["durable"]
        assert (companions, retry.name, retry.name) in bindings
        assert (companions, parked.name, parked.name) in bindings
    # exchanges components use but may not declare themselves
    assert exchanges["nameko-rpc"]["type"] == "topic" and exchanges["nameko-rpc"]["durable"]
    # org.cache: topic, so that topic permissions keep its routing keys to "" (common/topology.py)
    assert exchanges["org.cache"]["type"] == "topic" and exchanges["org.cache"]["durable"]
