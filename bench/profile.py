"""Where the time goes: py-spy sampling of running processes during a measurement (``--profile``).

``Profiler(pids)`` records each process with ``py-spy record --format raw`` (collapsed stacks) while
the ``with`` block runs, then prints the heaviest frames per process, in total (inclusive) and
self time, and keeps the raw files in var/bench-work/ for a flame graph.
"""
import collections
import os
import shutil
import signal
import subprocess

from bench.harness import BENCH_DIR
from stack import stack


def py_spy():
    return shutil.which("py-spy") or os.path.join(stack.VENV_BIN, "py-spy")


class Profiler:
    def __init__(self, label, pids, top=12):
        self.label, self.pids, self.top = label, dict(pids), top
        self.running = {}

    def __enter__(self):
        os.makedirs(BENCH_DIR, exist_ok=True)
        for name, pid in self.pids.items():
            out = os.path.join(BENCH_DIR, f"profile-{self.label}-{name}.txt")
            self.running[name] = (out, subprocess.Popen(
                [py_spy(), "record", "--format", "raw", "--nonblocking", "--rate", "200", "--subprocesses",
                 "--output", out, "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return self

    def __exit__(self, *exc):
        for name, (out, process) in self.running.items():
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            if os.path.exists(out):
                print(summarise(f"{self.label}/{name}", out, self.top), flush=True)
            else:
                print(f'  profile {self.label}/{name}: py-spy wrote nothing '
                      f'({process.stderr.read().decode(errors="replace").strip()[-300:]})')


def summarise(title, path, top):
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(path) as handle:
        for line in handle:
            stack_text, _, count = line.rstrip("\n").rpartition(" ")
            if not stack_text or not count.isdigit():
                continue
            count = int(count)
            frames = [frame for frame in stack_text.split(";") if not frame.startswith("process ")
                      and not frame.startswith("thread ")]
            if not frames:
                continue
            total += count
            own[_short(frames[-1])] += count
            for frame in set(_short(f) for f in frames):
                inclusive[frame] += count
    rows = [f"  profile {title}: {total} samples (idle waits included)"]
    rows.append("    self:      " + "; ".join(f"{f} {100.0 * c / total:.0f}%" for f, c in own.most_common(top)))
    ours = [(f, c) for f, c in inclusive.most_common() if any(part in f for part in (
        "services/", "gateway/", "common/"))][:top]
    rows.append("    inclusive: " + "; ".join(f"{f} {100.0 * c / total:.0f}%" for f, c in ours))
    return "\n".join(rows)


def _short(frame):
    # py-spy raw frames look like "function (path/to/file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("/site-packages/", stack.ROOT + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"
