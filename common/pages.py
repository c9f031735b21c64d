"""Page keys: a growing per-organization list read a page at a time by equality alone.

Why: the embedded FerretDB pushes only equality down to its storage and decodes, in Go, every
document the pushed-down filter matches (~0.1 ms each). ``find({org_id}).sort(...).limit(50)``
therefore costs the organization's whole history (920 ms at 10,000 ledger entries), and range
filters or ``$in`` cost even more. So every list that grows with an organization's history (the
credit ledger, storage reports, memberships, the delivery log) numbers its documents per
organization (``ordinal`` 1, 2, 3, ...; the ledger's ``seq``) and stores a page key

    pk = "<org_id>/<(ordinal - 1) // PAGE>"

A page of the list reads the page keys it needs with ``find({"pk": key})``: about ``limit + PAGE``
documents decoded, whatever the organization's history or other organizations' data (the PostgreSQL
side answers the equality from a GIN index, ``stack/ferretdb/mirror.go``). On MongoDB the same
queries are served by an ordinary index on ``pk``; one shape for both servers.

The highest ordinal of a list is kept with the organization (a counter, or for the append-only
chains the highest page, moved up before the first entry of a new page is written), so the
newest page is found without a sort.
"""

#: documents per page key: a page of 50 reads 2-3 keys (decodes <= 50 + 2 * 32 documents)
PAGE = 32
FIELD = "pk"


def number(ordinal, size=PAGE):
    """The page that holds ``ordinal`` (ordinals start at 1); ``size``: documents per page (a list
    read whole, like an audit log's verification, may keep a coarser key beside ``pk``)."""
    return (max(int(ordinal), 1) - 1) // size


def key(org_id, ordinal, size=PAGE):
    return f"{org_id}/{number(ordinal, size)}"


def key_of_page(org_id, page):
    return f"{org_id}/{page}"


def starts_page(ordinal):
    """True for the first ordinal of a page (its writer moves the list's top page up first)."""
    return (int(ordinal) - 1) % PAGE == 0


def newest_first(fetch, org_id, top, limit, before=None, field="ordinal", keep=None, lowest=1):
    """Up to ``limit`` documents with ``field`` below ``before`` (all if None), newest first.

    ``fetch(page_key)`` returns the documents of one page key; ``top`` is the highest ordinal (or
    any ordinal in the highest page). Walks down from the page of the newest wanted ordinal.
    ``keep(doc)``: a filter applied page by page (a filtered list still reads by equality alone);
    ``lowest``: the lowest ordinal still kept (a list whose oldest entries were removed)."""
    start = top if before is None else min(top, before - 1)
    found = []
    page = number(start) if start >= 1 else -1
    while page >= number(lowest) and len(found) < limit:
        docs = [doc for doc in fetch(key_of_page(org_id, page)) if doc.get(field) is not None and doc[field] <= start
                and (keep is None or keep(doc))]
        docs.sort(key=lambda doc: doc[field], reverse=True)
        found.extend(docs)
        page -= 1
    return found[:limit]


def oldest_first(fetch, org_id, top, limit, after=None, field="ordinal"):
    """Up to ``limit`` documents with ``field`` above ``after`` (all if None), oldest first."""
    first = 1 if after is None else after + 1
    found = []
    page, last = number(first), number(top) if top >= 1 else -1
    while page <= last and len(found) < limit:
        docs = [doc for doc in fetch(key_of_page(org_id, page)) if doc.get(field) is not None and doc[field] >= first]
        docs.sort(key=lambda doc: doc[field])
        found.extend(docs)
        page += 1
    return found[:limit]
