"""The gateway's pool of RPC proxies, with stub proxies in place of nameko's (no broker needed):
bounded (a full pool is a quick 503, never a hang), proxies reused across calls and never shared
between threads, and a proxy whose connection broke is thrown away and replaced."""
import threading
import time

import pytest
from amqp.exceptions import ConnectionForced
from kombu.exceptions import OperationalError
from nameko.exceptions import RemoteError, RpcTimeout

from common.errors import DomainError
from gateway import rpc
from gateway.app import create_app
from tests.support import assert_error, free_port, wait_until
from tests.test_errors import FlaskAnswer


class StubProxy:
    """Stands in for a started ClusterRpcProxy; what a call does is the test's ``behaviour``."""

    def __init__(self, log, behaviour):
        self.log, self.behaviour = log, behaviour
        self.closed = False
        self.busy = False
        log.append(self)

    def call(self, service, method, args, kwargs):
        assert not self.busy, "a proxy was lent to two threads at once"
        self.busy = True
        try:
            return self.behaviour(self, service, method)
        finally:
            self.busy = False

    def close(self):
        self.closed = True


class Stubs:
    def __init__(self):
        self.created = []
        self.behaviour = lambda proxy, service, method: f"{service}.{method} ok"
        self.refuse_connect = 0  # how many of the next proxy creations fail (broker unreachable)

    def factory(self, config, timeout):
        if self.refuse_connect:
            self.refuse_connect -= 1
            raise ConnectionRefusedError("nothing listens on the broker's port")
        return StubProxy(self.created, lambda proxy, service, method: self.behaviour(proxy, service, method))


@pytest.fixture
def stubs(monkeypatch):
    stubs = Stubs()
    monkeypatch.setattr(rpc, "_PooledProxy", stubs.factory)
    return stubs


def hold(stubs, count, pool):
    """``count`` calls that keep their proxies busy until the returned event is set."""
    release, entered, results = threading.Event(), [], []

    def blocking(proxy, service, method):
        entered.append(proxy)
        release.wait(10)
        return "done"
    stubs.behaviour = blocking
    threads = [threading.Thread(target=lambda: results.append(pool.call("org", "ping"))) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(entered) == count, timeout=5, what=f"{count} calls in flight")

    def finish():
        release.set()
        for thread in threads:
            thread.join(10)
        return results
    return entered, finish


def test_a_full_pool_refuses_within_the_timeout_instead_of_waiting(stubs):
    pool = rpc.RpcPool({"AMQP_URI": "amqp://unused"}, size=2, timeout=0.5)
    entered, finish = hold(stubs, 2, pool)
    assert len(set(map(id, entered))) == 2  # one proxy per thread
    started = time.monotonic()
    with pytest.raises(rpc.ServiceUnavailable, match="all rpc proxies busy"):
        pool.call("org", "ping")
    assert time.monotonic() - started < 1.5
    assert len(stubs.created) == 2  # bounded: no third proxy was made for the third caller
    assert finish() == ["done", "done"]

    # the proxies are kept and reused: later calls create nothing new
    stubs.behaviour = lambda proxy, service, method: "pong"
    assert [pool.call("org", "ping") for _ in range(5)] == ["pong"] * 5
    assert len(stubs.created) == 2 and not any(proxy.closed for proxy in stubs.created)


def test_a_full_pool_is_a_503_in_the_error_shape_through_the_gateway(stubs):
    app = create_app({"AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "RPC_POOL_SIZE": 1,
                      "RPC_TIMEOUT": 0.5})
    try:
        _, finish = hold(stubs, 1, app.extensions["rpc"])
        started = time.monotonic()
        response = app.test_client().post("/api/v1/auth/login", json={"email": "a@example.test", "password": "x"})
        elapsed = time.monotonic() - started
        error = assert_error(FlaskAnswer(response), 503, "service_unavailable")
        assert error["details"] == {"service": "membership"} and response.headers["Retry-After"] == "1"
        assert elapsed < 1.5
        assert finish() == ["done"]
    finally:
        app.extensions["revocation_consumer"].stop()


@pytest.mark.parametrize("failure", [ConnectionResetError(104, "Connection reset by peer"),
                                     OperationalError("connection lost"), ConnectionForced("broker closing"),
                                     RpcTimeout()])
def test_a_proxy_that_failed_in_transport_is_discarded_and_replaced(stubs, failure):
    pool = rpc.RpcPool({"AMQP_URI": "amqp://unused"}, size=1, timeout=0.5)

    def broken(proxy, service, method):
        raise failure
    stubs.behaviour = broken
    with pytest.raises(rpc.ServiceUnavailable):
        pool.call("membership", "me", "user-1")
    assert len(stubs.created) == 1 and stubs.created[0].closed

    stubs.behaviour = lambda proxy, service, method: proxy
    assert pool.call("membership", "me", "user-1") is stubs.created[1]  # a new proxy, not the broken one
    assert pool.call("membership", "me", "user-1") is stubs.created[1]  # which is then kept
    assert len(stubs.created) == 2 and not stubs.created[1].closed


@pytest.mark.parametrize("answer", [DomainError("not_found", "no such organization"),
                                    RemoteError("KeyError", "boom")])
def test_an_answer_of_the_service_keeps_the_proxy(stubs, answer):
    """Errors the service answered with travelled over a working connection: the proxy stays."""
    pool = rpc.RpcPool({"AMQP_URI": "amqp://unused"}, size=1, timeout=0.5)

    def failing(proxy, service, method):
        raise answer
    stubs.behaviour = failing
    with pytest.raises(type(answer)):
        pool.call("org", "get")
    stubs.behaviour = lambda proxy, service, method: proxy
    assert pool.call("org", "get") is stubs.created[0] and not stubs.created[0].closed


def test_an_unreachable_broker_gives_back_the_slot(stubs):
    pool = rpc.RpcPool({"AMQP_URI": "amqp://unused"}, size=1, timeout=0.5)
    stubs.refuse_connect = 3
    for _ in range(3):  # with a leaked slot the second attempt would wait and report "busy" instead
        with pytest.raises(rpc.ServiceUnavailable, match="broker unreachable"):
            pool.call("org", "ping")
    assert pool.call("org", "ping") == "org.ping ok" and len(stubs.created) == 1
