"""The heartbeat file of a service process (standard library only: the liveness probe reads it).

Written by ``common.liveness.Liveness`` from the queue consumer's loop; read by ``common.probe``.
The file is named after the process id (``orgplatform-alive-<pid>`` in the temporary directory), so
replicas on one machine do not share one and a container's probe looks for pid 1's. No setting: the
path and the age are the probe's contract with the service.
"""
import os
import tempfile
import time

#: the probe fails when the consumer has not iterated for this long (its idle round is 1 s)
MAX_AGE_SECONDS = 30.0
#: the heartbeat is written at most this often
WRITE_EVERY_SECONDS = 1.0


def heartbeat_file(pid=None):
    return os.path.join(tempfile.gettempdir(), f"orgplatform-alive-{(os.getpid() if pid is None else pid)}")


def beating(pid=None, max_age=MAX_AGE_SECONDS, now=None):
    """True while the heartbeat of process ``pid`` (this one by default) is younger than ``max_age``."""
    try:
        written = os.stat(heartbeat_file(pid)).st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - written < max_age


class Heartbeat:
    """Touches this process's heartbeat file, at most every :data:`WRITE_EVERY_SECONDS`."""

    def __init__(self):
        self.path = heartbeat_file()
        self._written = 0.0

    def beat(self):
        now = time.monotonic()
        if now - self._written < WRITE_EVERY_SECONDS:
            return
        self._written = now
        try:
            with open(self.path, "a"):
                os.utime(self.path)
        except OSError:  # a full or read-only temporary directory: the probe will say so
            pass

    def remove(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass
