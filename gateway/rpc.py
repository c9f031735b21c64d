"""A bounded pool of started nameko RPC proxies, one per gunicorn worker process.

``ClusterRpcProxy`` is single-threaded, so a thread borrows a whole proxy for one call and gives it
back. Proxies are created lazily (so after gunicorn forks), reused across requests, and thrown away
after a timeout or a connection error so that a broken connection never serves the next request.
Requests carry an AMQP expiration equal to the timeout: a call the client already got a 503 for is
not executed later when the service comes back.

Every call gets a worker context of its own: the standalone proxy's single context would give
every call through it the same nameko call id. It carries the request id of the HTTP request
and the caller its token names (``common.context``) as context data, which the service's workers
bind and forward.
"""
import logging
import queue
import socket
import threading
import time

from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError
from nameko.containers import WorkerContext
from nameko.exceptions import RemoteError, RpcTimeout, UnknownService
from nameko.rpc import ServiceProxy
from nameko.standalone.rpc import ClusterRpcProxy

from common import bus, context
from common.errors import DomainError
from common.nameko_private import standalone_parts
from gateway import metrics

log = logging.getLogger(__name__)

_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


class ServiceUnavailable(Exception):
    def __init__(self, service, reason):
        super().__init__(f"{service} unavailable: {reason}")
        self.service = service


def _probe_broker(amqp_uri, timeout):
    """Fail fast when no broker node listens: kombu's first connect sleeps 2 s before its one
    retry, which would make every request during an outage that slow.

    ``AMQP_URI`` may list several nodes (kombu's failover syntax, ``amqp://a;amqp://b``): the broker
    is reachable when any of them answers -- kombu then connects to that one -- so a cluster that
    lost its first node is not reported "unreachable". The error names every node tried."""
    failures = []
    for host, port in bus.broker_addresses(amqp_uri):
        try:
            with socket.create_connection((host, port), timeout=min(timeout, 1.0)):
                return
        except OSError as error:
            failures.append(f"{host}:{port}: {error}")
    raise ConnectionError(f'no broker node answers ({"; ".join(failures)})')


class _PooledProxy:
    def __init__(self, config, timeout):
        self.timeout = timeout
        _probe_broker(config["AMQP_URI"], timeout)
        self.standalone = ClusterRpcProxy(config, timeout=timeout)
        self.standalone.start()

    def call(self, service, method, args, kwargs):
        shared, reply_listener = standalone_parts(self.standalone)
        data = {key: value for key, value in ((context.REQUEST_ID, context.request_id()),
                                              (context.ACTOR, context.actor())) if value}
        worker_ctx = WorkerContext(shared.container, None, shared.entrypoint, data=data or None)
        proxy = ServiceProxy(worker_ctx, service, reply_listener,
                             expiration=self.timeout, retry=True, retry_policy=_PUBLISH_RETRY)
        return getattr(proxy, method)(*args, **kwargs)

    def close(self):
        try:
            self.standalone.stop()
        except Exception:  # a dead connection may fail to close; it is being discarded anyway
            log.debug("error closing rpc proxy", exc_info=True)


class RpcPool:
    def __init__(self, config, size=8, timeout=5.0):
        self.config = {"AMQP_URI": config["AMQP_URI"]}
        self.size = int(size)
        self.timeout = float(timeout)
        self._idle = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.size)

    def _acquire(self, service):
        if not self._slots.acquire(timeout=self.timeout):
            raise ServiceUnavailable(service, "all rpc proxies busy")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        try:
            return _PooledProxy(self.config, self.timeout)
        except Exception as error:
            self._slots.release()
            raise ServiceUnavailable(service, f"broker unreachable: {error}") from error

    def _release(self, proxy, healthy):
        if healthy:
            self._idle.put(proxy)
        else:
            proxy.close()
        self._slots.release()

    def call(self, service, method, *args, **kwargs):
        """Call ``service.method``; DomainError passes through, anything transport-ish is a 503.
        Every call is counted and timed (``gateway_rpc_calls_total``, ``gateway_rpc_seconds``)."""
        started, outcome = time.perf_counter(), "unavailable"
        try:
            proxy = self._acquire(service)
        except ServiceUnavailable:
            metrics.observe_rpc(service, method, outcome, time.perf_counter() - started)
            raise
        healthy = False
        try:
            result = proxy.call(service, method, args, kwargs)
            healthy, outcome = True, "ok"
            return result
        except DomainError:
            healthy, outcome = True, "refused"
            raise
        except RemoteError:
            healthy, outcome = True, "error"
            raise
        except (RpcTimeout, UnknownService) as error:
            raise ServiceUnavailable(service, type(error).__name__) from error
        except (KombuError, AMQPError, OSError) as error:
            log.warning("rpc connection failed calling %s.%s: %r", service, method, error)
            raise ServiceUnavailable(service, "broker connection lost") from error
        finally:
            self._release(proxy, healthy)
            metrics.observe_rpc(service, method, outcome, time.perf_counter() - started)

    def close(self):
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
