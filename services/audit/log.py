"""Reading an organization's log: the filtered, paginated list (newest first) and the export."""
from common.errors import DomainError, not_found
from common.validation import decode_sequence
from services.audit import chain, entries, people

MAX_PAGE = 200
MAX_ACTOR = 100


def _invalid(field, message):
    return DomainError("validation_failed", "invalid input", {field: [message]})


def require_log(store, org_id):
    """The organization's chain document; 410 for a deleted organization (its log went with it), 404
    for one this service never heard of (no event of it yet)."""
    if store.was_purged(org_id):
        raise DomainError("organization_gone", "organization is deleted or being deleted")
    chain_doc = store.chain(org_id)
    if chain_doc is None:
        raise not_found("organization")
    return chain_doc


def _filter(action, actor, since, actor_token):
    """The ``keep`` of a page walk (``common/pages.py``): the filters are applied page by page, so a
    filtered list still reads the log by page key alone."""
    if action is not None and action not in entries.ACTIONS and action not in entries.KINDS:
        raise _invalid("action", f'Must be one of: {", ".join(entries.ACTIONS)} (or a kind: '
                                 f'{", ".join(entries.KINDS)}).')
    if actor is not None and (not isinstance(actor, str) or not 1 <= len(actor) <= MAX_ACTOR):
        raise _invalid("actor", "Must be a user id or system.")
    if since is not None and not isinstance(since, str):
        raise _invalid("since", "Must be an ISO 8601 moment.")

    def keep(doc):
        if action is not None and doc["action"] != action and doc["action"].split(".")[0] != action:
            return False
        if actor is not None:
            who = doc["actor"] if doc["actor"] == "system" else (doc["actor"] or {}).get("user_id")
            if who != actor_token:
                return False
        return since is None or doc["at"] >= since  # both ISO 8601 UTC with milliseconds and a Z
    return keep


def list_entries(store, org_id, limit=50, cursor=None, action=None, actor=None, since=None):
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise _invalid("limit", f"Must be between 1 and {MAX_PAGE}.")
    before = decode_sequence(cursor) if cursor is not None else None
    chain_doc = require_log(store, org_id)
    # entries name people by token (people.py): the filter compares tokens
    actor_token = actor if actor in (None, "system") else people.token_of(store, org_id, actor)
    keep = _filter(action, actor, since, actor_token)
    head = store.head(org_id, chain_doc)
    if head is None or (actor is not None and actor_token is None):
        return {"items": [], "next_cursor": None}
    first = (store.retained(org_id) or {}).get("first_seq") or 1
    page = store.entries_newest_first(org_id, head["seq"], limit + 1, before,
                                      keep=lambda doc: doc["seq"] >= first and keep(doc), lowest=first)
    return {"items": people.presented(store, page[:limit]),
            "next_cursor": str(page[limit - 1]["seq"]) if len(page) > limit else None}


def verify(store, org_id, cursor=None, budget_seconds=None):
    after = decode_sequence(cursor) if cursor is not None else None
    require_log(store, org_id)
    return chain.verify(store, org_id, after, budget_seconds)


def export(store, org_id):
    """The whole kept log, oldest first (the organization's export), with where its chain starts
    (``anchor``: what the first kept entry links to) and its head hash, so a copy can be checked
    without this service; ``GET .../audit-log/verify`` checks the stored log."""
    chain_doc = require_log(store, org_id)
    head = store.head(org_id, chain_doc)
    retained = store.retained(org_id) or {}
    first = retained.get("first_seq") or 1
    docs = store.entries_oldest_first(org_id, first, head["seq"]) if head else []
    return {"entries": people.presented(store, docs, store.org_people(org_id)),
            "first_sequence": first if head else None,
            "anchor": retained.get("anchor") or "", "head_hash": head["hash"] if head else None}
