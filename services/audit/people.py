"""People in the log by pseudonym, so that deleting an account forgets them here too.

The README promises that after ``DELETE /me`` no database holds the person's id or address. An
audit entry cannot be edited (its hash would break), so entries never hold them: each user id,
email address and person's name is stored as a random token (``p:<hex>``) of a ``people`` document
(per organization: ``{kind, value, name}``), and the hash covers the token. Reads put the values
back; ``account_deleted`` deletes the person's documents, after which the entries still verify and
name a person nobody can look up (the API answers null for them).
"""
import hashlib

from services.audit.schemas import present

#: details fields holding a user id, and those holding an email address
USER_FIELDS = ("user_id", "owner_user_id", "from_user_id", "to_user_id", "requested_by", "initiator_user_id")
EMAIL_FIELDS = ("email", "plan_email", "new_user_email")
PREFIX = "p:"


def is_token(value):
    return isinstance(value, str) and value.startswith(PREFIX)


def stored(store, org_id, actor, meaning):
    """``(actor, meaning)`` as stored: people replaced by their tokens (created on first sight)."""
    def user(user_id, name=None):
        return store.person_token(org_id, "user", user_id, digest(user_id), name) if user_id else user_id

    def email(address):
        return store.person_token(org_id, "email", address, digest(address)) if address else address

    if isinstance(actor, dict):
        actor = dict(actor, user_id=user(actor["user_id"]))
    result = []
    for action, target, details in meaning:
        details = dict(details)
        name = details.pop("name", None) if target.get("type") == "member" else None
        if target.get("type") == "member":
            target = dict(target, id=user(target["id"], name))
            if name is not None:
                details["name"] = target["id"]  # the name lives with the person (shown from there)
        for field in USER_FIELDS:
            if field in details:
                details[field] = user(details[field])
        for field in EMAIL_FIELDS:
            if field in details:
                details[field] = email(details[field])
        result.append((action, target, details))
    return actor, result


def presented(store, docs, known=None):
    """Entries as the API shows them, people put back (null for a forgotten one). ``known``: the
    organization's people when the caller read them all (the export)."""
    tokens = set()
    for doc in docs:
        tokens.update(_tokens(doc))
    people = known if known is not None else store.people(tokens)
    return [_resolve(present(doc), people) for doc in docs]


def _tokens(doc):
    actor = doc.get("actor")
    if isinstance(actor, dict) and is_token(actor.get("user_id")):
        yield actor["user_id"]
    if is_token((doc.get("target") or {}).get("id")):
        yield doc["target"]["id"]
    for value in (doc.get("details") or {}).values():
        if is_token(value):
            yield value


def _value(people, token, field="value"):
    if not is_token(token):
        return token
    person = people.get(token)
    return person.get(field) if person else None


def _resolve(entry, people):
    if isinstance(entry["actor"], dict):
        entry["actor"] = dict(entry["actor"], user_id=_value(people, entry["actor"]["user_id"]))
    entry["target"] = dict(entry["target"], id=_value(people, entry["target"].get("id")))
    entry["details"] = {key: _value(people, value, "name" if key == "name" else "value")
                        for key, value in entry["details"].items()}
    return entry


def token_of(store, org_id, user_id):
    """The token the log names ``user_id`` by in the organization, or None (never named)."""
    return store.find_person(org_id, "user", user_id)


def digest(value):
    """What is remembered of a forgotten person: a one-way digest (as ``common/tombstones.py`` keeps
    of a purged organization), so events still in flight for them create nothing."""
    return hashlib.sha256((f"orgplatform-audit-forgotten\x00{value}").encode()).hexdigest()


def forget(store, user_id, email):
    """A deleted account: its people documents go in every organization; entries keep only tokens."""
    return store.forget_people([(value, digest(value)) for value in (user_id, email) if value])
