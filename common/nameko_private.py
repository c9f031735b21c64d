"""Every use of nameko's private internals, in one place, pinned to the version they were read from.

nameko 2.14.1 offers no public way to do five things this project needs; each is done here and
nowhere else, and ``tests/unit/test_nameko_private.py`` fails on any other nameko version or when
an internal it relies on is gone -- so an upgrade is a conscious step, not a silent break:

* the **event queue name** nameko's ``EventHandler`` declares (``evt-<source>-<type>--<service>.<method>``),
  which the topology declares up front and the broker permissions allow (``common/topology.py``);
* the **timer loop** (``Timer._run``), replaced by one that paces a slow tick instead of catching up
  (``common/timers.py``);
* a **standalone proxy's worker context and reply listener** (``ClusterRpcProxy._worker_ctx`` /
  ``._reply_listener``), from which the gateway builds one context per call (``gateway/rpc.py``);
* the **queue consumer's loop** (``QueueConsumer.on_iteration``, kombu's ``ConsumerMixin`` hook),
  which the liveness heartbeat rides on (``common/liveness.py``);
* the **RPC exchange and reply queue** declarations (``nameko.rpc.get_rpc_exchange``,
  ``ReplyListener.setup``), patched so components declare no exchange (``common/bus.py``).
"""
import time
import uuid

from eventlet import Timeout
from nameko.timer import Timer

#: the nameko release every function below was written against
NAMEKO_VERSION = "2.14.1"


def event_queue_name(source, event_type, service, method):
    """The queue nameko's ``EventHandler.setup`` declares for a service-pool handler."""
    return f"evt-{source}-{event_type}--{service}.{method}"


def standalone_parts(proxy):
    """``(worker context, reply listener)`` of a started ``ClusterRpcProxy``."""
    return proxy._worker_ctx, proxy._reply_listener


def after_each_consume_round(container, callback):
    """Call ``callback()`` after every round of the container's queue consumer: kombu's consume loop
    calls ``on_iteration`` after each ``drain_events`` (at least once a second while idle)."""
    from nameko.messaging import QueueConsumer

    for consumer in {extension for extension in container.extensions if isinstance(extension, QueueConsumer)}:
        original = consumer.on_iteration

        def on_iteration(original=original):
            callback()
            return original()
        consumer.on_iteration = on_iteration  # an instance attribute: kombu calls self.on_iteration()


class PacedTimer(Timer):
    """nameko's ``Timer`` with its loop (``_run``) replaced: after each tick the wait is
    :meth:`next_delay` of the time the tick took, and ``stop()`` still ends the wait early."""

    def next_delay(self, took):
        raise NotImplementedError

    def _run(self):
        delay = 0 if self.eager else self.interval
        while True:
            with Timeout(delay, exception=False):  # stop() ends the wait early
                self.should_stop.wait()
                break
            started = time.monotonic()
            self.handle_timer_tick()
            self.worker_complete.wait()
            self.worker_complete.reset()
            delay = self.next_delay(time.monotonic() - started)


def declare_no_rpc_exchange(exchange_name):
    """Make nameko refer to the RPC exchange without declaring it, name reply routing keys after the
    service (``reply.<service>.<uuid>``) so broker topic permissions can tell them apart, and declare
    reply queues non-durable (why: ``common.bus.least_privilege``)."""
    from kombu import Exchange, Queue
    from nameko import rpc
    from nameko.constants import RPC_EXCHANGE_CONFIG_KEY

    def get_rpc_exchange(config):
        return Exchange(config.get(RPC_EXCHANGE_CONFIG_KEY, exchange_name), durable=True, type="topic",
                        no_declare=True)

    def setup(self):
        reply_uuid = uuid.uuid4()
        service_name = self.container.service_name
        self.routing_key = f"reply.{service_name}.{reply_uuid}"
        self.queue = Queue(rpc.RPC_REPLY_QUEUE_TEMPLATE.format(service_name, reply_uuid),
                           exchange=rpc.get_rpc_exchange(self.container.config), routing_key=self.routing_key,
                           durable=False, queue_arguments={"x-expires": rpc.RPC_REPLY_QUEUE_TTL})
        self.queue_consumer.register_provider(self)

    rpc.get_rpc_exchange = get_rpc_exchange
    rpc.ReplyListener.setup = setup
