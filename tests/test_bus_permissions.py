"""The bus trusts nobody by default: each component's broker user may do only its own job.

Every attack here is made with a raw kombu client holding one component's real credentials (the
ones the stack gives that process), against the real broker of the test stack. Publishes use
publisher confirms, so a refusal is observed as the broker closing the channel with 403
ACCESS_REFUSED -- not guessed from a message that merely never arrived. What each user may do is
``common/bus.py``; the static checks at the end keep its call lists in step with the code.
"""
import glob
import os
import re
import uuid

import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection, Exchange, Producer, Queue

from common import bus, events, subscriptions, topology
from stack import stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def connect(test_stack, component):
    return Connection(test_stack.amqp_uri_for(component), transport_options={"confirm_publish": True},
                      connect_timeout=10)


def publish(test_stack, component, exchange, routing_key, body, **properties):
    """Publish as ``component`` with confirms; raises what the broker answered."""
    with connect(test_stack, component) as connection:
        producer = Producer(connection.channel())
        producer.publish(body, exchange=exchange, routing_key=routing_key, serializer="json", retry=False,
                         **properties)


def refused(action):
    """``action()`` is refused by the broker with 403 ACCESS_REFUSED."""
    with pytest.raises(AccessRefused) as caught:
        action()
    assert caught.value.reply_code == 403, caught.value
    return str(caught.value)


def deletion_event(org_id):
    _, _, body = events.make_event(events.ORGANIZATION_DELETION_REQUESTED, org_id, name="Forged",
                                   requested_by=str(uuid.uuid4()), owner_email="forger@example.test")
    return body


def assert_organization_intact(gateway, owner):
    """Every service still serves the organization as live (none of them purged it)."""
    overview = gateway.get(f"/organizations/{owner.org_id}", owner.token)
    assert overview.status_code == 200, overview.text
    assert overview.json().get("status", "active") == "active", overview.json()
    members = gateway.get(f"/organizations/{owner.org_id}/members", owner.token)
    assert members.status_code == 200 and owner.user_id in {m["user_id"] for m in members.json()["items"]}, \
        members.text
    assert gateway.get(f"/organizations/{owner.org_id}/notifications", owner.token).status_code == 200
    assert gateway.get(f"/organizations/{owner.org_id}/usage", owner.token).status_code == 200
    assert gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).status_code == 200


# -- forged events ---------------------------------------------------------------------------------

@pytest.mark.parametrize("forger", ["usage", "membership", "notifications", "gateway"])
def test_nobody_but_org_can_announce_an_organization_deletion(gateway, test_stack, owner, forger):
    refused(lambda: publish(test_stack, forger, topology.event_exchange("org"),
                            events.ORGANIZATION_DELETION_REQUESTED[1], deletion_event(owner.org_id)))
    # nor by naming a subscriber's queue on the default exchange (which would bypass every exchange)
    membership_queue = topology.queue_name(subscriptions.Subscription(
        events.ORGANIZATION_DELETION_REQUESTED, "membership", "on_organization_deletion_requested"))
    refused(lambda: publish(test_stack, forger, "", membership_queue, deletion_event(owner.org_id)))
    assert_organization_intact(gateway, owner)


def test_the_gateway_publishes_on_no_event_exchange(test_stack):
    for source in topology.EVENT_SOURCES:
        refused(lambda source=source: publish(test_stack, "gateway", topology.event_exchange(source),
                                              "organization_purged",
                                {"organization_id": str(uuid.uuid4())}))


@pytest.mark.parametrize("service", bus.SERVICES)
def test_a_service_publishes_only_its_own_exchange_and_event_types(test_stack, service):
    for source in topology.EVENT_SOURCES:
        if source != service:
            refused(lambda source=source: publish(test_stack, service, topology.event_exchange(source),
                                                  "organization_purged",
                                    {"organization_id": str(uuid.uuid4())}))
    # on its own exchange only the event types it owns (topic permission): org cannot say member_joined
    own = {t for s, t in events.SCHEMAS if s == service}
    foreign = sorted({t for s, t in events.SCHEMAS if s != service} - own)
    refused(lambda: publish(test_stack, service, topology.event_exchange(service), foreign[0],
                            {"organization_id": str(uuid.uuid4())}))


def test_only_org_broadcasts_cache_invalidations(test_stack):
    for component in ("gateway", "membership", "usage"):
        refused(lambda component=component: publish(test_stack, component, topology.ORG_CACHE_EXCHANGE, "",
                                {"organization_id": str(uuid.uuid4())}))


# -- forged RPC calls ------------------------------------------------------------------------------

def forged_grant(test_stack, component, org_id, amount):
    publish(test_stack, component, topology.RPC_EXCHANGE, "usage.grant_credits",
            {"args": [org_id, str(uuid.uuid4()), amount, uuid.uuid4().hex], "kwargs": {}},
            reply_to=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))


@pytest.mark.parametrize("component", bus.SERVICES)
def test_no_service_can_call_the_operator_only_grant(gateway, test_stack, owner, component):
    refused(lambda: forged_grant(test_stack, component, owner.org_id, 10 ** 12))
    usage = gateway.get(f"/organizations/{owner.org_id}/usage", owner.token)
    assert usage.status_code == 200 and usage.json()["credits"]["balance"] == 0, usage.text


def test_a_service_calls_only_what_it_needs_of_others(test_stack):
    # membership asks org for overviews, never for a rename; usage never asks membership anything;
    refused(lambda: publish(test_stack, "membership", topology.RPC_EXCHANGE, "org.rename",
                            {"args": [], "kwargs": {}}, reply_to=str(uuid.uuid4())))
    refused(lambda: publish(test_stack, "usage", topology.RPC_EXCHANGE, "membership.login",
                            {"args": [], "kwargs": {}}, reply_to=str(uuid.uuid4())))
    # notifications asks org for overviews (settings of an organization it has not heard of), not more
    refused(lambda: publish(test_stack, "notifications", topology.RPC_EXCHANGE, "org.set_plan",
                            {"args": [], "kwargs": {}}, reply_to=str(uuid.uuid4())))


def test_allowed_calls_still_go_through_with_least_privilege(test_stack):
    """The positive control: the same users do their job (the whole suite shows it at length)."""
    from nameko.standalone.rpc import ClusterRpcProxy
    bus.least_privilege()  # as the gateway process does: its reply queue and key carry its name
    with ClusterRpcProxy({"AMQP_URI": test_stack.amqp_uri_for("gateway")}, timeout=10) as cluster:
        assert cluster.org.ping() == "pong"
        assert cluster.usage.ping() == "pong"


# -- other components' queues and the exchanges themselves ------------------------------------------

def consume(test_stack, component, queue_name):
    with connect(test_stack, component) as connection:
        channel = connection.channel()
        channel.basic_consume(queue=queue_name, callback=lambda message: None)


def basic_get(test_stack, component, queue_name):
    with connect(test_stack, component) as connection:
        connection.channel().basic_get(queue=queue_name)


def some_queue_of(service):
    return next(topology.queue_name(s) for s in topology.subscriptions() if s.service == service)


@pytest.mark.parametrize("thief, victim", [("usage", "membership"), ("gateway", "org"), ("org", "usage"),
                                           ("membership", "notifications"), ("notifications", "membership")])
def test_a_component_cannot_consume_another_components_queues(test_stack, thief, victim):
    refused(lambda: consume(test_stack, thief, f"rpc-{victim}"))
    refused(lambda: consume(test_stack, thief, some_queue_of(victim)))
    refused(lambda: basic_get(test_stack, thief, some_queue_of(victim)))
    refused(lambda: basic_get(test_stack, thief, some_queue_of(victim) + ".parked"))


def bind_own_queue(test_stack, component, routing_key):
    """Declare a queue named like the component's own reply queue and bind it to ``nameko-rpc``."""
    name = f"rpc.reply-{bus.reply_name(component)}-{uuid.uuid4()}"
    with connect(test_stack, component) as connection:
        channel = connection.channel()
        queue = Queue(name, exchange=Exchange(bus.RPC_EXCHANGE, type="topic", no_declare=True),
                      routing_key=routing_key, auto_delete=True, channel=channel)
        try:
            queue.declare()
        finally:
            try:
                Connection(test_stack.amqp_uri).channel().queue_delete(name)
            except Exception:  # pragma: no cover - best effort cleanup
                pass


def test_a_component_cannot_listen_in_on_calls_or_replies_meant_for_others(test_stack):
    # its own reply key is fine (that is how its calls get answered) ...
    bind_own_queue(test_stack, "membership", bus.reply_key("membership", uuid.uuid4()))
    # ... but not everything, another service's calls, or the gateway's replies (tokens)
    refused(lambda: bind_own_queue(test_stack, "membership", "#"))
    refused(lambda: bind_own_queue(test_stack, "usage", "membership.*"))
    refused(lambda: bind_own_queue(test_stack, "usage", bus.reply_key("gateway", uuid.uuid4())))
    refused(lambda: bind_own_queue(test_stack, "usage", str(uuid.uuid4())))  # nameko's bare reply key


@pytest.mark.parametrize("component", bus.COMPONENTS)
def test_no_component_can_declare_or_delete_an_exchange(test_stack, component):
    def delete(name):
        with connect(test_stack, component) as connection:
            connection.channel().exchange_delete(name)

    def redeclare(name):
        with connect(test_stack, component) as connection:
            Exchange(name, type="topic", durable=True)(connection.channel()).declare()

    for name in (bus.RPC_EXCHANGE, "org.events", f"{component}.events"):
        refused(lambda name=name: delete(name))
        refused(lambda name=name: redeclare(name))


def test_processes_get_their_own_user_and_nobody_is_guest(test_stack):
    uris = {component: test_stack.service_env(component)["AMQP_URI"] for component in bus.COMPONENTS}
    users = {component: uri.split("//", 1)[1].split(":", 1)[0] for component, uri in uris.items()}
    assert len(set(users.values())) == len(users), users
    assert all(component in user and "guest" not in user for component, user in users.items()), users
    assert "guest" not in test_stack.amqp_uri
    with open(os.path.join(test_stack.run_dir, "..", "log", "gateway.log"), errors="replace") as handle:
        assert "ACCESS_REFUSED" not in handle.read()  # the gateway never tried anything it may not


def test_the_running_processes_connect_as_their_own_users(test_stack):
    """What the broker sees: every connection of the instance's vhost is one of its component users."""
    connections = stack._management(test_stack, "GET", f"/api/vhosts/{bus.quote(test_stack.vhost)}/connections")
    users = {c["user"] for c in connections}
    expected = {test_stack.rabbit_users[c][0] for c in bus.COMPONENTS}
    assert expected <= users, (expected, users)
    assert users <= expected | {test_stack.rabbit_users[bus.ADMIN][0]}, users


# -- the call lists of common/bus.py are the code's ------------------------------------------------

def read(path):
    with open(path) as handle:
        return handle.read()


def rpc_methods(service):
    """The RPC entrypoints of ``service``'s class, inherited ones (``ping``, common/service.py) included."""
    import importlib
    import inspect

    from nameko.rpc import Rpc

    [path] = [p for p in subscriptions.SERVICE_CLASSES if p.startswith(f"services.{service}.")]
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    return {method for method, member in inspect.getmembers(cls)
            if any(isinstance(entrypoint, Rpc) for entrypoint in getattr(member, "nameko_entrypoints", ()))}


def test_gateway_call_list_is_exactly_what_the_gateway_calls():
    called = set()
    for path in glob.glob(os.path.join(ROOT, "gateway", "**", "*.py"), recursive=True):
        source = read(path)
        called |= set(re.findall(r"(?:\brpc|\.call)\(\s*\"(\w+)\",\s*\"(\w+)\"", source))
        for method in re.findall(r"\brpc\(\s*(?:name|service),\s*\"(\w+)\"", source):  # loops over services
            called |= {(service, method) for service in bus.SERVICES}
    allowed = {(service, method) for service, methods in bus.GATEWAY_CALLS.items() for method in methods}
    assert called - allowed == set(), f"add to common.bus.GATEWAY_CALLS: {sorted(called - allowed)}"
    assert allowed - called == set(), f"no longer called, remove from GATEWAY_CALLS: {sorted(allowed - called)}"
    for service, methods in bus.GATEWAY_CALLS.items():
        assert set(methods) <= rpc_methods(service), (service, set(methods) - rpc_methods(service))
    # the operator-only and internal methods are not among what services may call of each other
    assert "grant_credits" not in {m for calls in bus.SERVICE_CALLS.values() for ms in calls.values() for m in ms}


def test_service_call_lists_are_exactly_what_services_ask_each_other():
    for service in bus.SERVICES:
        sources = "\n".join(read(p) for p in glob.glob(os.path.join(ROOT, "services", service, "*.py")))
        targets = set(re.findall(r"RpcProxy\(\"(\w+)\"\)", sources))
        asked = {("org", m) for m in re.findall(r"ask_org\(\s*\"(\w+)\"", sources)}
        allowed = {(target, m) for target, methods in bus.SERVICE_CALLS.get(service, {}).items() for m in methods}
        assert {t for t, _ in asked} <= targets
        assert asked == allowed, (service, sorted(asked ^ allowed))
        for target, methods in bus.SERVICE_CALLS.get(service, {}).items():
            assert set(methods) <= rpc_methods(target)



# -- no detour through an exchange-to-exchange binding ---------------------------------------------

def exchange_bind(test_stack, component, destination, source, routing_key):
    with connect(test_stack, component) as connection:
        connection.channel().exchange_bind(destination=destination, source=source, routing_key=routing_key)


def test_no_component_can_route_forged_calls_into_the_rpc_exchange_through_another_exchange(test_stack):
    """Topic permissions are checked on publish, not on messages an exchange binding forwards. A
    component that writes ``nameko-rpc`` (all do: replies) and reads an exchange it may publish any
    routing key to could bind the two and send ``usage.grant_credits`` by the detour."""
    # org reads org.cache and writes nameko-rpc: org.cache is a topic exchange limited to key ""
    refused(lambda: exchange_bind(test_stack, "org", bus.RPC_EXCHANGE, bus.ORG_CACHE_EXCHANGE, "#"))
    refused(lambda: publish(test_stack, "org", topology.ORG_CACHE_EXCHANGE, "usage.grant_credits",
                            {"args": [], "kwargs": {}}))
    # the direct retry exchanges take any routing key, so nobody may read (bind from) them
    for service in bus.SERVICES:
        refused(lambda service=service: exchange_bind(test_stack, service, bus.RPC_EXCHANGE,
                                                      bus.retry_exchange(service),
                                      "usage.grant_credits"))
