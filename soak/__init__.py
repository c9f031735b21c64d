"""`make soak`: a long mixed workload through the real gateway on an isolated stack instance.

``python -m soak`` starts its own instance (``TEST_INSTANCE=soak``, ports +500), runs a warm-up and
then ``SOAK_SECONDS`` of signups, invites, accepts, switches, reads, storage reports, credit grants,
reservations, settlements and deletions at a fixed rate, checks what must hold at the end and prints
one line per figure, ``name: value (target ...)``; it exits 1 when a figure misses its target.
"""
