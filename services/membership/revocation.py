"""Revocation cut-offs and the ``access_revoked`` event that carries them to every gateway.

Whatever voids tokens (logout, switch, removal, role change, password change...) publishes
``access_revoked`` so that every gateway rejects them at once, without asking us per request.
"""
import time

from common import events, outbox


def now_seconds():
    return round(time.time(), 3)


def next_cutoff(previous):
    """A revocation cut-off for a document whose current one is ``previous``: now, and always later.

    The cut-off is written into the account or membership together with the change and published
    as the ``access_revoked`` event's ``not_before``; tokens carry the cut-off they were issued
    under (``av``/``mv``), so it must grow strictly with every change.
    """
    return max(now_seconds(), round(float(previous or 0.0) + 0.001, 3))


def access_revoked(org_id=None, user_id=None, session_id=None, not_before=None):
    """An ``access_revoked`` outbox entry.

    With ``user_id``, ``not_before`` is the cut-off written into the account (no ``org_id``) or
    the membership, and voids tokens issued under an older one. With ``org_id`` alone it voids every
    token of that organization (it is being deleted). With ``session_id``, that session's tokens.
    """
    return outbox.pending(events.ACCESS_REVOKED, org_id, user_id=user_id, session_id=session_id,
                          not_before=now_seconds() if not_before is None else not_before)
