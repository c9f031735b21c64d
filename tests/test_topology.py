"""The bus topology declared up front matches what the services subscribe to."""
import inspect

from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from common import topology
from common.handlers import ReliableEventHandler
from nameko.events import EventHandler
from services.membership.service import MembershipService
from services.notifications.service import NotificationsService
from services.org.service import OrgService
from services.usage.service import UsageService

SERVICES = (OrgService, MembershipService, NotificationsService, UsageService)


def declared_handlers():
    for service in SERVICES:
        for method_name, method in inspect.getmembers(service, inspect.isfunction):
            for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, EventHandler):
                    yield service, method_name, entrypoint


def test_every_event_handler_is_in_the_topology_and_reliable():
    found = set()
    for service, method_name, entrypoint in declared_handlers():
        assert isinstance(entrypoint, ReliableEventHandler), "%s.%s must use reliable_handler" % (
            service.name, method_name)
        found.add(topology.Subscription((entrypoint.source_service, entrypoint.event_type), service.name,
                                        method_name))
    assert found == set(topology.SUBSCRIPTIONS)


def test_queue_names_match_what_nameko_declares():
    for subscription in topology.SUBSCRIPTIONS:
        main, retry, parked = topology.subscriber_queues(subscription)
        source, event_type = subscription.event
        assert main.name == "evt-%s-%s--%s.%s" % (source, event_type, subscription.service, subscription.method)
        assert main.durable and not main.auto_delete and not main.exclusive
        assert retry.queue_arguments["x-dead-letter-routing-key"] == main.name
        assert parked.name == main.name + ".parked"
