"""Password hashing runs at most ARGON2_CONCURRENCY hashes at once (each holds ARGON2_MEMORY_KIB):
concurrent logins queue for a slot instead of multiplying the memory."""
import threading
import time

import eventlet

from services.membership.security import Passwords


def test_concurrent_hashes_are_bounded_and_all_answered():
    passwords = Passwords(time_cost=1, memory_kib=1024, concurrency=2)
    running, peak, lock = [0], [0], threading.Lock()
    real = passwords.hasher

    def counted_hash(password):  # runs in eventlet's OS thread pool
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)  # long enough for every caller to be waiting meanwhile
        try:
            return real.hash(password)
        finally:
            with lock:
                running[0] -= 1
    passwords.hasher = type("CountingHasher", (), {"hash": staticmethod(counted_hash), "verify": real.verify})()
    pool = eventlet.GreenPool()
    hashes = list(pool.imap(passwords.hash, ["password %d" % index for index in range(8)]))
    assert peak[0] == 2
    assert all(passwords.verify(digest, "password %d" % index) for index, digest in enumerate(hashes))
    assert not passwords.verify(hashes[0], "wrong") and not passwords.verify(None, "password 0")
