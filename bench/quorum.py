"""What a quorum queue costs the broker next to a classic one (issue 14), same broker, same moment.

Every durable queue is a quorum queue now (``common/topology.py``): an RPC crosses one (the
service's ``rpc-<service>`` request queue; the reply queue stays classic) and an event one per
subscriber. This measures that difference where it arises: messages of the overview RPC's size
published with publisher confirms into a durable queue of each type on the bench's vhost, and
consumed back with acks, in alternating rounds; the figure is quorum throughput / classic.
On a single node a quorum queue still writes its Raft log and fsyncs it before confirming; on a
three-node cluster the confirm also waits for a second node.
"""
import json
import time
import uuid

from kombu import Connection, Exchange, Queue

from bench.harness import Figure

BODY = json.dumps({"args": ["00000000-0000-4000-8000-000000000000"], "kwargs": {}}).encode()


def _round_trip(connection, queue_type, messages):
    """Seconds to publish ``messages``, each waiting for its confirm (as the services' publishes do),
    and consume them with acks (prefetch 16)."""
    name = f"bench-{queue_type}-{uuid.uuid4().hex[:8]}"
    exchange = Exchange("", type="direct")
    queue = Queue(name, exchange=exchange, routing_key=name, durable=True, no_declare=False,
                  queue_arguments={"x-queue-type": queue_type})
    channel = connection.channel()
    try:
        queue(channel).declare()
        producer = connection.Producer(channel=channel)
        received = []
        started = time.perf_counter()
        for _ in range(messages):
            producer.publish(BODY, routing_key=name, delivery_mode=2, content_type="application/json",
                             content_encoding="utf-8")
        consumer_channel = connection.channel()
        with connection.Consumer(queue(consumer_channel), callbacks=[lambda body, message: (
                received.append(1), message.ack())], accept=["json"]) as consumer:
            consumer.qos(prefetch_count=16)
            while len(received) < messages:
                connection.drain_events(timeout=30)
        elapsed = time.perf_counter() - started
        consumer_channel.close()
        return elapsed
    finally:
        queue(channel).delete()
        channel.close()


def measure(inst, messages=2000, rounds=3):
    with Connection(inst.amqp_uri, transport_options={"confirm_publish": True}) as connection:
        connection.ensure_connection(max_retries=3)
        samples = {"classic": [], "quorum": []}
        for _ in range(rounds):
            for queue_type in samples:
                samples[queue_type].append(messages / _round_trip(connection, queue_type, messages))
    rates = {queue_type: sorted(values)[len(values) // 2] for queue_type, values in samples.items()}
    print(f"  queue round trips (messages/s, median of {rounds}): classic {rates['classic']:.0f}, "
          f"quorum {rates['quorum']:.0f}", flush=True)
    return Figure("quorum_vs_classic_messages", rates["quorum"] / rates["classic"], None,
                  f"({rates['quorum']:.0f} vs {rates['classic']:.0f} confirmed and acked messages/s through one queue)")
