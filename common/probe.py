"""Liveness of a nameko container: ``python -m common.probe`` (compose healthcheck, Kubernetes probe).

PID 1 must be the ``nameko run`` process (exec-form command, no init) and hold an established TCP
connection to one of the broker nodes of ``AMQP_URI`` -- any of them: with several nodes listed
(``amqp://a;amqp://b``) kombu is connected to whichever answered, and a probe of the first one only
would restart a healthy service whenever that node is down. Standard library only.
"""
import os
import sys

from common.bus import broker_addresses


def connected_ports(tables=("/proc/net/tcp", "/proc/net/tcp6")):
    """Remote ports of every established TCP connection of this network namespace."""
    ports = set()
    for table in tables:
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01":  # 01 = ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def broker_connected(amqp_uri):
    """Some established connection goes to the port of a broker node of ``amqp_uri``."""
    return bool({port for _, port in broker_addresses(amqp_uri)} & connected_ports())


def main():
    with open("/proc/1/cmdline", "rb") as handle:
        if b"nameko" not in handle.read():
            return "pid 1 is not nameko"
    if not broker_connected(os.environ["AMQP_URI"]):
        return "no connection to a broker node of AMQP_URI"
    return 0


if __name__ == "__main__":
    sys.exit(main())
