"""CPU seconds per process over a measured stretch: where a figure's work goes.

A figure that is CPU-bound on the machine's cores (the ledger's reservations) is only improved by
taking work away from the processes that do it, so the bench reads each process's user + system
time (``/proc/<pid>/stat``) before and after the stretch and prints the difference per unit of
work: the instance's own processes by their pid files (a process with its children: the gateway's
gunicorn master and workers, nginx's master and workers), and the infrastructure by executable
(RabbitMQ's ``beam.smp``, ``ferretdb-local``, PostgreSQL's ``postgres`` processes).

The infrastructure is shared with whatever else runs on the machine (other instances, other
benchmarks): its figures include their work, so read them from runs on a quiet machine, or compare
runs taken close together.
"""
import os
import time
from contextlib import contextmanager

from stack import stack

_TICKS = os.sysconf("SC_CLK_TCK")
#: infrastructure processes by executable name (``comm``)
INFRA = {"beam.smp": "rabbitmq", "ferretdb-local": "ferretdb", "postgres": "postgres"}


def _processes():
    """``{pid: (comm, ppid, cpu seconds)}`` of every process now."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                raw = handle.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        found[int(entry)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def snapshot(inst):
    """``{label: cpu seconds}``: each pid file of the instance (with its descendants), the
    infrastructure by executable, and this process (the load's client threads)."""
    procs = _processes()
    children = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    totals, counted = {}, set()
    for name in stack.started_processes(inst):
        root = stack.read_pid(os.path.join(inst.run_dir, name + ".pid"))
        todo = [root] if root in procs else []
        while todo:
            pid = todo.pop()
            if pid in counted:
                continue
            counted.add(pid)
            totals[name] = totals.get(name, 0.0) + procs[pid][2]
            todo.extend(children.get(pid, ()))
    for pid, (comm, _, seconds) in procs.items():
        label = INFRA.get(comm)
        if label and pid not in counted:
            totals[label] = totals.get(label, 0.0) + seconds
    totals["bench client"] = procs.get(os.getpid(), (None, None, 0.0))[2]
    totals[MACHINE] = _machine_busy()
    return totals


#: the whole machine's busy CPU seconds (``/proc/stat``); ``Usage`` shows the part no label covers
MACHINE = "machine"


def _machine_busy():
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


class Usage:
    """What :func:`measure` yields: after the block, ``seconds`` holds CPU seconds per label."""

    def __init__(self):
        self.seconds = {}

    def per_unit_ms(self, units):
        """``{label: ms per unit}``; the machine's busy time no label covers shows as ``elsewhere``
        (other work on the machine, the kernel's own threads)."""
        per = {label: 1000.0 * seconds / units for label, seconds in self.seconds.items() if label != MACHINE}
        if MACHINE in self.seconds:
            per["elsewhere"] = max(0.0, 1000.0 * self.seconds[MACHINE] / units - sum(per.values()))
        return per

    def line(self, units, unit="reservation"):
        per = self.per_unit_ms(units)
        shown = sorted(((label, ms) for label, ms in per.items() if ms >= 0.05 and label != "elsewhere"),
                       key=lambda item: -item[1])
        return (f"CPU ms per {unit}: {sum(ms for _, ms in shown):.1f} = "
                + ", ".join(f"{label} {ms:.1f}" for label, ms in shown)
                + f" (elsewhere on the machine: {per.get('elsewhere', 0.0):.1f})")


def settle(inst, labels=("usage", "audit", "org", "membership", "notifications"), idle=0.05, window=0.5,
           timeout=60.0):
    """Wait until the instance's services are idle (together under ``idle`` of a core over ``window``
    seconds): the events a measured stretch caused are handled by then. Returns the seconds waited.

    A figure that compares a burst of writes with a baseline measured right after it must not let
    the burst's consumers (an audit log catching up) run during the baseline: it would slow the
    baseline and flatter the figure, the more the slower they are."""
    started = time.monotonic()
    before = snapshot(inst)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = snapshot(inst)
        busy = sum(now.get(label, 0.0) - before.get(label, 0.0) for label in labels)
        if busy < idle * window:
            break
        before = now
    return time.monotonic() - started


@contextmanager
def measure(inst):
    """CPU seconds each process spent during the block (``Usage.seconds``)."""
    usage = Usage()
    before = snapshot(inst)
    yield usage
    after = snapshot(inst)
    usage.seconds = {label: after[label] - before.get(label, 0.0) for label in after
                     if after[label] - before.get(label, 0.0) > 0}
