"""Who may do what on the bus: one broker user per component, least privilege.

A broker that lets every client do everything lets one compromised (or merely buggy) process
speak for every other: a raw ``usage.grant_credits`` mints credits, a forged
``organization_deletion_requested`` purges three services behind the org service's back. So every
component connects as its own user, and RabbitMQ itself refuses what the component has no business
doing:

* resource permissions (configure / write / read regexes on queue and exchange names): a component
  declares only its own queues (never an exchange -- the topology user declares those, see
  :func:`least_privilege`), publishes only to the exchanges it must, consumes only its own queues;
* topic permissions on the topic exchanges (write / read regexes on routing keys): on ``nameko-rpc``
  a component may publish only the ``<service>.<method>`` calls it makes (:data:`GATEWAY_CALLS`,
  :data:`SERVICE_CALLS`) and replies, and bind only its own RPC queue and its own reply keys; on
  ``<source>.events`` only the source itself may publish, only its own event types, and a
  subscriber may bind only the event types it handles (:func:`common.subscriptions.subscriptions`).

The ``admin`` component (topology declaration, tests' taps, operators) keeps full rights on its
vhost. This module imports only the standard library (and nameko lazily in
:func:`least_privilege`), so ``stack/stack.py`` can use it without the venv.
"""
import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

SERVICES = ("org", "membership", "notifications", "usage", "audit")
COMPONENTS = ("gateway",) + SERVICES
ADMIN = "admin"

RPC_EXCHANGE = "nameko-rpc"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
HEX32 = r"[0-9a-f]{32}"
#: matches no routing key at all (RabbitMQ's regexes are PCRE): "may not" for a topic permission
NOTHING = "(?!)"

#: Every RPC the gateway makes (``tests/test_bus_permissions.py`` checks this against gateway/).
GATEWAY_CALLS = {
    "membership": ("accept_invite", "change_member", "change_password", "check_access", "create_invites",
                   "delete_account",
                   "create_organization", "export", "list_invites", "list_members", "list_organizations",
                   "login", "logout", "me", "ping", "preview_invite", "public_keys", "refresh",
                   "remove_member", "request_org_deletion", "revoke_invite", "signup", "signup_with_invite",
                   "switch", "transfer_ownership"),
    "notifications": ("export", "get_settings", "list_deliveries", "ping", "put_settings"),
    "org": ("export", "get_deletion", "get_deletion_by_receipt", "get_overview", "ping", "rename", "set_plan"),
    "usage": ("export", "get_ledger", "get_usage", "grant_credits", "ping", "report_storage",
              "reserve_credits", "settle_reservation"),
    "audit": ("export", "list_entries", "ping", "verify"),
}

#: Every RPC one service makes of another (checked against services/ the same way).
SERVICE_CALLS = {
    "membership": {"org": ("create_organization", "get_overview", "request_deletion")},
    "usage": {"org": ("get_overview",)},
    "notifications": {"org": ("get_overview",)},
}

#: the name nameko gives a component's RPC client (its reply queues and reply keys carry it)
REPLY_NAME = {"gateway": "standalone_rpc_proxy"}

#: exclusive broadcast queues (``common.broadcast``): the component and its queue-name prefix
BROADCAST_QUEUES = {"gateway": "gateway-revocations", "org": "org-cache"}
#: the gateway's revocation list listens to these (``gateway/revocations.py``)
GATEWAY_SUBSCRIPTIONS = {"membership": ("access_revoked",), "org": ("organization_deletion_requested",)}
ORG_CACHE_EXCHANGE = "org.cache"
#: who listens to the org service's change broadcasts: its own replicas (services/org/cache.py) and
#: the gateway's overview read model (gateway/readmodel.py); only the org service publishes them
ORG_CACHE_LISTENERS = ("org", "gateway")


def reply_name(component):
    return REPLY_NAME.get(component, component)


def reply_key(component, reply_uuid):
    """The routing key of a component's RPC replies: ``reply.<component>.<uuid>``.

    nameko's own key is the bare uuid, which every component would then have to be allowed to
    bind: a service that saw the gateway's reply key in a request could bind a queue of its own to
    it and read the gateway's replies from every other service (tokens among them). With the
    component in the key, the topic read permission allows a component only its own replies."""
    return f"reply.{reply_name(component)}.{reply_uuid}"


def broker_urls(amqp_uri):
    """The node URLs of an ``AMQP_URI``: one, or several in kombu's failover syntax
    (``amqp://u:p@a:5672/v;amqp://u:p@b:5672/v``), in the order a client tries them."""
    return [url.strip() for url in amqp_uri.split(";") if url.strip()]


def broker_addresses(amqp_uri):
    """``[(host, port)]`` of each node of an ``AMQP_URI`` (5672 where a URL names no port)."""
    addresses = []
    for url in broker_urls(amqp_uri):
        parts = urllib.parse.urlsplit(url)
        addresses.append((parts.hostname or "localhost", parts.port or 5672))
    return addresses


def retry_exchange(service):
    """The direct exchange a service's failed events go through to its retry and parking queues
    (``common.handlers``): publishing to the default exchange would need write on ``amq.default``,
    which reaches every queue by name and would bypass every topic permission."""
    return f"{service}.retry"


def _alternatives(patterns):
    return f'^({"|".join(patterns)})$' if patterns else NOTHING


def _calls_pattern(calls):
    return [f'{re.escape(service)}\\.({"|".join(re.escape(m) for m in sorted(methods))})'
            for service, methods in sorted(calls.items())]


def _event_types(source):
    from common import events  # stdlib-only at import time; the schemas need marshmallow
    return sorted(event_type for src, event_type in events.SCHEMAS if src == source)


def _subscribed(service):
    """{source: sorted event types} a service handles."""
    from common.subscriptions import subscriptions
    subscribed = {}
    for subscription in subscriptions():
        if subscription.service == service:
            source, event_type = subscription.event
            subscribed.setdefault(source, set()).add(event_type)
    return {source: sorted(types) for source, types in subscribed.items()}


def own_queues(component):
    """Regexes of the queues a component declares and consumes (and binds, which needs write)."""
    reply = re.escape(reply_name(component))
    queues = [f"rpc\\.reply-{reply}-{UUID}"]
    if component in SERVICES:
        queues += [f"rpc-{re.escape(component)}", f"evt-[a-z]+-[a-z_]+--{re.escape(component)}\\.[a-z_]+"]
    if component in BROADCAST_QUEUES:
        queues.append(f"{re.escape(BROADCAST_QUEUES[component])}-{HEX32}")
    return queues


def permissions(component):
    """``{"configure", "write", "read"}`` regexes of a component on its vhost."""
    if component == ADMIN:
        return {"configure": ".*", "write": ".*", "read": ".*"}
    queues = own_queues(component)
    write = [re.escape(RPC_EXCHANGE)]
    read = [re.escape(RPC_EXCHANGE)]
    if component == "gateway":
        read += [re.escape(f"{source}.events") for source in sorted(GATEWAY_SUBSCRIPTIONS)]
    else:
        write.append(re.escape(f"{component}.events"))
        subscribed = _subscribed(component)
        if subscribed:
            write.append(re.escape(retry_exchange(component)))
        read += [re.escape(f"{source}.events") for source in sorted(subscribed)]
    if component == "org":
        write.append(re.escape(ORG_CACHE_EXCHANGE))
    if component in ORG_CACHE_LISTENERS:
        read.append(re.escape(ORG_CACHE_EXCHANGE))
    return {"configure": _alternatives(queues), "write": _alternatives(write + queues),
            "read": _alternatives(read + queues)}


def topic_permissions(component):
    """``[{"exchange", "write", "read"}]``: routing keys per topic exchange the component may touch.

    (RabbitMQ allows every routing key on an exchange the user has no topic permission for, so
    every topic exchange the component can write or read is listed.)"""
    if component == ADMIN:
        return []
    own_reply = f"reply\\.{re.escape(reply_name(component))}\\.{UUID}"
    rows = []
    if component in ORG_CACHE_LISTENERS:  # invalidations carry routing key "" (common.topology.ORG_CACHE_EXCHANGE)
        rows.append({"exchange": ORG_CACHE_EXCHANGE, "write": "^$" if component == "org" else NOTHING,
                     "read": "^$"})
    if component == "gateway":
        rpc_write = _calls_pattern(GATEWAY_CALLS)
        rpc_read = [own_reply]
        subscribed = {source: list(types) for source, types in GATEWAY_SUBSCRIPTIONS.items()}
    else:
        # replies go to whoever asked: components' reply keys, or a bare uuid from a client that
        # does not apply least_privilege() (an operator's nameko shell, the tests' admin proxies)
        rpc_write = _calls_pattern(SERVICE_CALLS.get(component, {})) + [f"reply\\.[a-z_]+\\.{UUID}", UUID]
        rpc_read = [f"{re.escape(component)}\\.\\*", own_reply]
        subscribed = _subscribed(component)
    rows.append({"exchange": RPC_EXCHANGE, "write": _alternatives(rpc_write), "read": _alternatives(rpc_read)})
    sources = set(subscribed) | ({component} if component in SERVICES else set())
    for source in sorted(sources):
        write = [re.escape(t) for t in _event_types(source)] if source == component else []
        read = [re.escape(t) for t in subscribed.get(source, ())]
        rows.append({"exchange": f"{source}.events", "write": _alternatives(write),
                     "read": _alternatives(read)})
    return rows


# -- provisioning through the management API -------------------------------------------------------

class Management:
    """The RabbitMQ management HTTP API as a broker administrator (stdlib only)."""

    def __init__(self, base_url, user, password, timeout=10):
        self.base_url = base_url.rstrip("/")
        self.user, self.password, self.timeout = user, password, timeout

    def __call__(self, method, path, body=None):
        request = urllib.request.Request(
            self.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json", "authorization": "Basic " + base64.b64encode(
                (f"{self.user}:{self.password}").encode()).decode()})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            data = response.read()
            return json.loads(data) if data else None


def quote(name):
    return urllib.parse.quote(name, safe="")


def provision(management, vhost, users):
    """Create (or update) the vhost, each component's user and its permissions; idempotent.

    ``users`` maps a component (``admin`` included) to ``(username, password)``. Users are global on
    a broker, so callers name them per instance (several stacks share one broker). A re-run resets
    passwords and permissions to what this call says and drops topic permissions no longer listed.
    """
    # quorum by default: nameko's rpc-<service> queues (declared without arguments) become quorum
    # queues; RabbitMQ applies this only when it creates the vhost (see README, "Deploying").
    # 3.10 reads "defaultqueuetype", later versions "default_queue_type"; each ignores the other.
    management("PUT", f"/api/vhosts/{quote(vhost)}", {"defaultqueuetype": "quorum", "default_queue_type": "quorum"})
    for component, (username, password) in sorted(users.items()):
        tags = "management" if component == ADMIN else ""
        management("PUT", f"/api/users/{quote(username)}", {"password": password, "tags": tags})
        management("PUT", f"/api/permissions/{quote(vhost)}/{quote(username)}", permissions(component))
        wanted = topic_permissions(component)
        for row in wanted:
            management("PUT", f"/api/topic-permissions/{quote(vhost)}/{quote(username)}", row)
        try:
            existing = management("GET", f"/api/topic-permissions/{quote(vhost)}/{quote(username)}") or []
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            existing = []
        if any(row["exchange"] not in {w["exchange"] for w in wanted} for row in existing):
            # the API deletes a user's topic permissions on a vhost only all at once: re-add ours
            management("DELETE", f"/api/topic-permissions/{quote(vhost)}/{quote(username)}")
            for row in wanted:
                management("PUT", f"/api/topic-permissions/{quote(vhost)}/{quote(username)}", row)


# -- making nameko live with it ------------------------------------------------------------------

_applied = False


def least_privilege():
    """Make this process's nameko declare no exchange, use component-named reply keys and
    non-durable reply queues.

    nameko's reply queue is durable: a classic durable queue lives on one node, and while that node
    is down every re-declaration fails (``NOT_FOUND - home node ... is down``), which stalls the
    whole service container holding an ``RpcProxy`` (membership, usage) until the node returns. A
    non-durable queue of a lost node is gone, so the reconnecting consumer declares it anew on a
    node that is up (and the vhost's quorum default applies only to durable declarations, so it
    stays a classic queue: quorum queues are a poor fit for per-process temporary queues).

    nameko declares the RPC exchange every time it declares an RPC queue or publishes a call, and
    RabbitMQ checks *configure* on an exchange for every non-passive declare -- a right that also
    lets a component delete the exchange everyone's calls go through. The topology user declares
    every exchange before anything starts (``python -m common.topology``); components only use
    them. (Event exchanges: ``DECLARE_EVENT_EXCHANGES: false`` in each service's config.yml.)
    Idempotent; every service module and the gateway call it at import.
    """
    global _applied
    if _applied:
        return
    from common.nameko_private import declare_no_rpc_exchange  # nameko at call time: stdlib-only import

    declare_no_rpc_exchange(RPC_EXCHANGE)
    _applied = True
