"""Starts a test instance of the whole stack (own vhost, database prefix and ports) for the session.

Infrastructure (RabbitMQ, the MongoDB-compatible server) is reused when something already answers
on its port and started otherwise -- then also stopped at the end.
"""
import os
import subprocess

import pytest

from stack import stack
from tests.support import EventTap, Gateway


@pytest.fixture(scope="session")
def test_stack():
    inst = stack.Instance("test")
    rabbit_was_up = stack.port_open(inst.rabbit_port, inst.rabbit_host)
    mongo_was_up = inst.external_mongo or stack.port_open(inst.mongo_port)
    stack.down(inst, infra=False)  # leftovers of an interrupted run
    stack.ensure_rabbitmq(inst)
    stack.reset_vhost(inst)
    stack.ensure_mongo(inst)
    stack.drop_databases(inst)
    # infrastructure this session started (and only that) is stopped at the end -- also when a
    # fault test restarted it meanwhile (its pid file then names the new process)
    started = [name for name, was_up in (("ferretdb", mongo_was_up), ("rabbitmq", rabbit_was_up)) if not was_up]
    stack.up(inst, quiet=True)
    yield inst
    stack.down(inst, infra=False)
    for name in started:
        if stack.stop_pid_file(os.path.join(stack.INFRA_RUN, name + ".pid"), timeout=30) and name == "rabbitmq":
            subprocess.run(["epmd", "-kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def gateway(test_stack):
    return Gateway(test_stack.gateway_url)


@pytest.fixture
def owner(gateway):
    """A fresh account owning a fresh organization."""
    return gateway.signup(organization_name="Lab %s" % os.urandom(3).hex())


@pytest.fixture(scope="session")
def tap(test_stack):
    """Every event on the bus, as an outside subscriber sees it."""
    listener = EventTap(test_stack.amqp_uri)
    yield listener
    listener.close()
