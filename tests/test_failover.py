"""``AMQP_URI`` with several broker nodes (kombu's failover syntax, ``amqp://a;amqp://b``): every
component works while the first node listed is down -- the gateway's broker probe too, which used
to check the first host only and answered "broker unreachable" while kombu was connected to another.

The first node here is a loopback port nothing listens on (a node that is down); the second is the
test stack's broker. The cluster fault test (faults/, `make faults`) kills a real node under load.
"""
import pytest

from common.bus import broker_addresses, broker_urls
from gateway import rpc
from stack import stack
from tests.support import free_port, side_gateway, unique_email


def with_dead_first_node(uri):
    """``uri`` with a node that is down listed before it."""
    first = broker_urls(uri)[0]
    host, port = broker_addresses(first)[0]
    dead = first.replace(f"@{host}:{port}/", f"@127.0.0.1:{free_port()}/")
    assert dead != first
    return dead + ";" + uri


def test_the_broker_urls_of_a_failover_uri_in_order():
    uri = "amqp://u:p@h1:5681/v;amqp://u:p@h2/v; amqp://u:p@h3:5683/v"
    assert broker_urls(uri) == ["amqp://u:p@h1:5681/v", "amqp://u:p@h2/v", "amqp://u:p@h3:5683/v"]
    assert broker_addresses(uri) == [("h1", 5681), ("h2", 5672), ("h3", 5683)]


def test_the_gateway_probe_passes_when_any_node_answers_and_names_every_node_when_none_does(test_stack):
    rpc._probe_broker(with_dead_first_node(test_stack.amqp_uri_for("gateway")), 1.0)
    dead = [f"amqp://u:p@127.0.0.1:{free_port()}/v" for _ in range(2)]
    with pytest.raises(ConnectionError) as caught:
        rpc._probe_broker(";".join(dead), 1.0)
    for url in dead:
        assert f"127.0.0.1:{broker_addresses(url)[0][1]}" in str(caught.value)


def test_a_gateway_whose_first_node_is_down_serves_the_api(test_stack):
    """Sign-up (membership, which calls org) and the organization's overview through a second
    gateway whose AMQP_URI names a dead node first."""
    uri = with_dead_first_node(test_stack.amqp_uri_for("gateway"))
    with side_gateway(test_stack, "failover", AMQP_URI=uri) as side:
        account = side.signup(organization_name="Failover Lab", email=unique_email("failover"))
        response = side.get(f"/organizations/{account.org_id}", account.token)
        assert response.status_code == 200, response.text
        assert side.get(side.base_url + "/readyz").json()["status"] == "ready"


def test_a_service_whose_first_node_is_down_consumes(test_stack):
    """A second usage process connected through the failover URI takes its share of the RPC queue."""
    env = dict(test_stack.service_env("usage"), AMQP_URI=with_dead_first_node(test_stack.amqp_uri_for("usage")),
               USAGE_METRICS_PORT="")
    pid_file = stack.start_replica(test_stack, "usage", "usage-failover", env=env)
    stack.stop_pid_file(pid_file)


def test_the_liveness_probe_accepts_a_connection_to_any_node(test_stack):
    """common/probe.py (compose healthcheck, Kubernetes probes): a process connected to the second
    node listed is alive; one whose nodes all have no connection is not."""
    import socket

    from common.probe import broker_connected
    uri = with_dead_first_node(test_stack.amqp_uri_for("org"))
    dead_only = ";".join(f"amqp://u:p@127.0.0.1:{free_port()}/v" for _ in range(2))
    host, port = broker_addresses(uri)[1]
    with socket.create_connection((host, port), timeout=5):
        assert broker_connected(uri)
        assert not broker_connected(dead_only)
