"""Who subscribes to what: every (event, subscribing service, handler method), read off the services.

A module of its own, importing neither the bus rules nor the topology, so both can use it without
an import circle (``common.bus`` derives broker permissions from it, ``common.topology`` declares
the queues). The service classes are loaded by name (``SERVICE_CLASSES``), the way nameko's runner
loads them: ``common`` has no import statement naming a service.
"""
import functools
import importlib
import inspect
from collections import namedtuple

Subscription = namedtuple("Subscription", "event service method")

#: The services whose event handlers are the subscriber queues, imported only when the list is
#: needed (declaring the topology, provisioning broker users): ``common`` imports no service.
SERVICE_CLASSES = ("services.org.service:OrgService", "services.membership.service:MembershipService",
                   "services.notifications.service:NotificationsService", "services.usage.service:UsageService",
                   "services.audit.service:AuditService")


@functools.lru_cache(maxsize=1)
def subscriptions():
    """Every (event, subscribing service, handler method), read off the services' event handlers --
    the one list, so a handler added to a service is declared and permitted without a second edit."""
    from nameko.events import EventHandler
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

    found = set()
    for path in SERVICE_CLASSES:
        module, name = path.split(":")
        service = getattr(importlib.import_module(module), name)
        for method_name, method in inspect.getmembers(service, inspect.isfunction):
            for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(entrypoint, EventHandler):
                    found.add(Subscription((entrypoint.source_service, entrypoint.event_type), service.name,
                                           method_name))
    return tuple(sorted(found))
