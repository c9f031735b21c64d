"""Figure 6: resident memory (VmRSS) of every service process and gateway worker.

Taken once when the instance is warm (every route called, pools filled) and once after all
measurements; each process must stay under 120 MB and grow by at most 10 % over the run.
"""
import os

from bench.harness import Figure
from stack import stack

LIMIT_MB = 120.0
GROWTH = 0.10


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def processes(inst):
    """``{name: pid}``: the four services and each gunicorn worker (children of the master)."""
    found = {}
    for service in stack.SERVICES:
        pid = stack.read_pid(os.path.join(inst.run_dir, service + ".pid"))
        if pid:
            found[service] = pid
    master = stack.read_pid(os.path.join(inst.run_dir, "gateway.pid"))
    workers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == master:
                        workers.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    for index, pid in enumerate(sorted(workers), 1):
        found[f"gateway-worker-{index}"] = pid
    return found


def snapshot(inst):
    return {name: (pid, rss_mb(pid)) for name, pid in processes(inst).items()}


def figures(idle, after):
    rows, peak, growth = [], 0.0, 0.0
    for name, (pid, before) in idle.items():
        now = after.get(name)
        if now is None or now[0] != pid:
            rows.append(f"{name} restarted during the run")
            growth = float("inf")
            continue
        peak = max(peak, now[1])
        growth = max(growth, (now[1] - before) / before)
        rows.append(f"{name} {before:.0f} -> {now[1]:.0f} MB")
    print("  memory (VmRSS, warm idle -> after the run): " + "; ".join(rows), flush=True)
    return [Figure("max_rss_mb", peak, f"<= {LIMIT_MB:g}"), Figure("max_rss_growth", growth, f"<= {GROWTH:g}")]
