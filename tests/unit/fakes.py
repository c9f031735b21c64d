"""In-memory fake stores: the "repository + fake" pattern of *Architecture Patterns with Python*.

Each fake offers the intent-level methods its service's domain modules call on the real
``store.py`` (same names, same answers for the cases the unit tests drive), keeping documents in
dicts. The conditional writes the real stores make atomic with a filter (claim a seat under the
plan's limit, move an invite out of ``pending`` once, compare-and-set a member's cut-off) are
written here as the same condition, so the domain rules that rely on them are exercised for real.
Events the real store would queue in its outbox are appended to ``outbox.published`` at once.
"""
import copy
import itertools
import time
from contextlib import contextmanager

from common import tombstones
from common.errors import DomainError


class FakeOutbox:
    def __init__(self):
        self.published = []
        self.enrichers = {}

    def publish_entry(self, entry):
        enrich = self.enrichers.get(entry["type"])
        self.published.append(dict(entry, body=enrich(dict(entry["body"])) if enrich else entry["body"]))

    def publish_all(self, entries):
        for entry in entries:
            self.publish_entry(entry)

    def publish_written(self, collection, doc_id, entries, delete_after=False):
        self.publish_all(entries)
        return len(entries)

    def types(self):
        return [entry["type"] for entry in self.published]


class FakeStore:
    """What ``common.mongo.Store`` gives every store: tombstones, the purge lease, take-backs."""

    def __init__(self):
        self.outbox = FakeOutbox()
        self.tombstones = set()
        self.leases = set()
        self.collections = {}

    def table(self, name):
        return self.collections.setdefault(name, {})

    def was_purged(self, org_id):
        return org_id is not None and tombstones.digest(org_id) in self.tombstones

    def remember_purged(self, org_id):
        self.tombstones.add(tombstones.digest(org_id))

    @contextmanager
    def purge_lease(self, org_id, seconds=900):
        key = tombstones.digest(org_id)
        if key in self.leases:
            yield False
            return
        self.leases.add(key)
        try:
            yield True
        finally:
            self.leases.discard(key)

    def take_back_if_purged(self, org_id, collection, doc_id):
        if not self.was_purged(org_id):
            return False
        self.table(collection).pop(doc_id, None)
        return True

    def purge_organization(self, org_id):
        """Every document naming the organization, by collection (what each real store deletes)."""
        removed = {}
        for name, docs in self.collections.items():
            doomed = [doc_id for doc_id, doc in docs.items() if doc_id == org_id or doc.get("org_id") == org_id]
            for doc_id in doomed:
                del docs[doc_id]
            removed[name] = len(doomed)
        return removed

    def mentioning(self, org_id):
        return [(name, doc) for name, docs in self.collections.items() for doc_id, doc in docs.items()
                if org_id in repr(doc) or doc_id == org_id]


def _copy(doc):
    return copy.deepcopy(doc) if doc is not None else None


# -- membership ------------------------------------------------------------------------------------

class FakeMembershipStore(FakeStore):
    def __init__(self):
        super().__init__()
        self.accounts_ = self.table("accounts")
        self.orgs = self.table("organizations")
        self.members = self.table("memberships")
        self.invites = self.table("invites")
        self.sessions = self.table("sessions")
        self.attempts = {}
        self.idempotency = {}
        self.invite_requests = {}

    # accounts
    def insert_account(self, doc):
        if any(a["email"] == doc["email"] for a in self.accounts_.values()):
            return False
        self.accounts_[doc["_id"]] = _copy(doc)
        return True

    def delete_account(self, user_id):
        self.accounts_.pop(user_id, None)

    def account_by_email(self, email):
        return _copy(next((a for a in self.accounts_.values() if a["email"] == email), None))

    def account(self, user_id):
        return _copy(self.accounts_.get(user_id))

    def accounts(self, user_ids):
        return {uid: _copy(self.accounts_[uid]) for uid in user_ids if uid in self.accounts_}

    def set_account(self, user_id, fields, *events):
        if user_id not in self.accounts_:
            return False
        self.accounts_[user_id].update(fields)
        self.outbox.publish_all(events)
        return True

    def delete_account_after_publish(self, user_id, *events):
        self.outbox.publish_all(events)
        self.accounts_.pop(user_id, None)

    def superuser_ids(self):
        return {uid for uid, a in self.accounts_.items() if a.get("is_superuser")}

    # organizations
    def insert_organization(self, org_id, name, owner_user_id, as_of):
        self.orgs.setdefault(org_id, {"_id": org_id, "name": name, "name_as_of": as_of,
                                      "owner_user_id": owner_user_id, "member_count": 1, "joined": 0,
                                      "status": "active"})
        self.take_back_if_purged(org_id, "organizations", org_id)

    def organization(self, org_id):
        return _copy(self.orgs.get(org_id))

    def organizations(self, org_ids):
        return {oid: _copy(self.orgs[oid]) for oid in org_ids if oid in self.orgs}

    def set_if_newer(self, org_id, field, value, as_of):
        org = self.orgs.get(org_id)
        if org is not None and (org.get(field + "_as_of") is None or org[field + "_as_of"] < as_of):
            org.update({field: value, field + "_as_of": as_of})

    def claim_seat(self, org_id, included_users):
        org = self.orgs.get(org_id)
        if org is None or org.get("status") != "active" or (
                included_users is not None and org["member_count"] >= included_users):
            return None
        org["member_count"] += 1
        return org["member_count"]

    def release_seat(self, org_id):
        org = self.orgs.get(org_id)
        if org is None:
            return 0
        org["member_count"] -= 1
        return org["member_count"]

    def transfer_owner(self, org_id, from_user_id, to_user_id, *events):
        org = self.orgs.get(org_id)
        if org is None or org.get("owner_user_id") != from_user_id:
            return None
        org["owner_user_id"] = to_user_id
        self.outbox.publish_all(events)
        return _copy(org)

    def set_organization_status(self, org_id, status, *events):
        if org_id in self.orgs:
            self.orgs[org_id]["status"] = status
            self.outbox.publish_all(events)
            return True
        return False

    # memberships
    def insert_membership(self, doc, *events):
        if doc["_id"] in self.members:
            return False
        org = self.orgs.get(doc["org_id"])
        if org is not None:
            org["joined"] += 1
            doc = dict(doc, ordinal=org["joined"])
        if org is None or org.get("status") != "active":
            raise DomainError("organization_gone", "organization is deleted or being deleted")
        self.members[doc["_id"]] = _copy(doc)
        self.outbox.publish_all(events)
        return True

    def membership(self, org_id, user_id):
        return _copy(self.members.get(f"{org_id}:{user_id}"))

    def memberships_of(self, user_id):
        return sorted((_copy(m) for m in self.members.values() if m["user_id"] == user_id),
                      key=lambda m: m["joined_at"])

    def org_memberships(self, org_id):
        return sorted((_copy(m) for m in self.members.values() if m["org_id"] == org_id),
                      key=lambda m: (m["joined_at"], m["user_id"]))

    def org_member_ids(self, org_id):
        return [m["user_id"] for m in self.members.values() if m["org_id"] == org_id]

    def members_elsewhere(self, user_ids, org_id):
        return {m["user_id"] for m in self.members.values() if m["user_id"] in user_ids and m["org_id"] != org_id}

    def member_page(self, org_id, limit, after=None, search=None, organization=None):
        import re
        found = [m for m in self.org_memberships(org_id) if after is None or m["ordinal"] > after]
        if search:
            found = [m for m in found if re.search(search, m["name"], re.I) or re.search(search, m["email"], re.I)]
        return sorted(found, key=lambda m: m["ordinal"])[:limit]

    def _matching(self, org_id, user_id, cutoff):
        doc = self.members.get(f"{org_id}:{user_id}")
        if doc is None or (cutoff is not None and doc.get("tokens_not_before") != cutoff):
            return None
        return doc

    def update_membership(self, org_id, user_id, fields, *events, cutoff=None):
        doc = self._matching(org_id, user_id, cutoff)
        if doc is None:
            return None
        doc.update(fields)
        self.outbox.publish_all(events)
        return _copy(doc)

    def remove_membership(self, org_id, user_id, *events, cutoff=None):
        if self._matching(org_id, user_id, cutoff) is None:
            return False
        del self.members[f"{org_id}:{user_id}"]
        self.outbox.publish_all(events)
        return True

    def members_with_emails(self, org_id, emails):
        return {m["email"] for m in self.members.values() if m["org_id"] == org_id and m["email"] in emails}

    # invites
    def insert_invites(self, docs_and_events):
        for doc, events in docs_and_events:
            self.invites[doc["_id"]] = _copy(doc)
            self.outbox.publish_all(events)

    def pending_invites_for(self, org_id, emails):
        return sorted((_copy(i) for i in self.invites.values()
                       if i["org_id"] == org_id and i["status"] == "pending" and i["email"] in emails),
                      key=lambda i: i["created_at"], reverse=True)

    def pending_invites(self, org_id, email=None):
        return [i for i in self.pending_invites_for(org_id, {i["email"] for i in self.invites.values()})
                if email is None or i["email"] == email]

    def export_invites(self, org_id):
        return [_copy(i) for i in self.invites.values() if i["org_id"] == org_id]

    def revoke_invites(self, invite_ids, fields):
        changed = 0
        for invite_id in invite_ids:
            if self.invites.get(invite_id, {}).get("status") == "pending":
                self.invites[invite_id].update(fields)
                changed += 1
        return changed

    def invite_by_token_hash(self, token_hash):
        return _copy(next((i for i in self.invites.values() if i["token_hash"] == token_hash), None))

    def set_invite_status(self, invite_id, from_status, fields, org_id=None):
        invite = self.invites.get(invite_id)
        if invite is None or invite["status"] != from_status or (org_id is not None and invite["org_id"] != org_id):
            return None
        invite.update(fields)
        return _copy(invite)

    def claim_invite_request(self, doc):
        if doc["_id"] in self.invite_requests:
            return _copy(self.invite_requests[doc["_id"]])
        self.invite_requests[doc["_id"]] = _copy(doc)
        return None

    def take_over_invite_request(self, request_id, claimed_before, claimed_at):
        record = self.invite_requests.get(request_id)
        if record and record["state"] == "running" and record["claimed_at"] < claimed_before:
            record["claimed_at"] = claimed_at
            return True
        return False

    def finish_invite_request(self, request_id, response):
        self.invite_requests[request_id].update(state="done", response=response)

    def release_invite_request(self, request_id):
        if self.invite_requests.get(request_id, {}).get("state") == "running":
            del self.invite_requests[request_id]

    # sessions
    def insert_session(self, doc):
        self.sessions[doc["_id"]] = _copy(doc)

    def session(self, session_id):
        return _copy(self.sessions.get(session_id))

    def live_session_by_refresh(self, refresh_hash, now):
        return _copy(next((s for s in self.sessions.values() if s["refresh_hash"] == refresh_hash
                           and s["revoked_at"] is None and s["expires_at"] > now), None))

    def rotate_refresh(self, refresh_hash, new_hash, now, expires_at, grace_until, sealed_pair):
        for s in self.sessions.values():
            if s["refresh_hash"] == refresh_hash and s["revoked_at"] is None and s["expires_at"] > now:
                s.update(refresh_hash=new_hash, expires_at=expires_at, refreshed_at=now,
                         grace={"hash": refresh_hash, "until": grace_until, "sealed": sealed_pair})
                s["previous_hashes"].append(refresh_hash)
                return True
        return False

    def session_with_previous_hash(self, refresh_hash):
        return _copy(next((s for s in self.sessions.values() if refresh_hash in s["previous_hashes"]), None))

    def revoke_session(self, session_id, now, *events):
        s = self.sessions.get(session_id)
        if s is None or s["revoked_at"] is not None:
            return False
        s["revoked_at"] = now
        self.outbox.publish_all(events)
        return True

    def revoke_sessions(self, user_id, now, org_id=None, all_orgs=False):
        count = 0
        for s in self.sessions.values():
            if s["user_id"] == user_id and s["revoked_at"] is None and (all_orgs or s["org_id"] == org_id):
                s["revoked_at"] = now
                count += 1
        return count

    # rate limits and idempotency
    def count_attempt(self, key, window_start, expires_at, amount=1):
        slot = f"{key}@{window_start}"
        self.attempts[slot] = self.attempts.get(slot, 0) + amount
        return self.attempts[slot]

    def insert_idempotency_record(self, doc):
        if doc["_id"] in self.idempotency:
            return False
        self.idempotency[doc["_id"]] = _copy(doc)
        return True

    def idempotency_record(self, record_id):
        return _copy(self.idempotency.get(record_id))

    def forget_idempotency_record(self, record_id, expires_at):
        if self.idempotency.get(record_id, {}).get("expires_at") == expires_at:
            del self.idempotency[record_id]

    def forget_person(self, user_id, email):
        for session_id in [k for k, s in self.sessions.items() if s["user_id"] == user_id]:
            del self.sessions[session_id]


# -- usage ---------------------------------------------------------------------------------------

class FakeUsageStore(FakeStore):
    storage_lease_seconds = 60

    def __init__(self):
        super().__init__()
        self.orgs = self.table("organizations")
        self.ledger = self.table("ledger")
        self.expiries = self.table("grant_expiries")
        self.inserts = []  # entries per insert_ledger_entries call
        self.clears = 0

    def insert_organization(self, org_id, name, created_at):
        self.orgs.setdefault(org_id, {"_id": org_id, "name": name, "status": "active", "created_at": created_at})
        return not self.take_back_if_purged(org_id, "organizations", org_id)

    def organization(self, org_id):
        return _copy(self.orgs.get(org_id))

    def scrub(self, org_id):
        return self.purge_organization(org_id)

    def ledger_head(self, org_id, organization=None):
        entries = [e for e in self.ledger.values() if e["org_id"] == org_id]
        return _copy(max(entries, key=lambda e: e["seq"])) if entries else None

    def ledger_entry(self, entry_id):
        return _copy(self.ledger.get(entry_id))

    def insert_ledger_entries(self, entries):
        """An ordered insert: stops at the first entry whose ``seq`` or ``_id`` is taken."""
        assert len(entries) <= 32, "at most a page per insert"
        self.inserts.append(len(entries))
        for count, (entry, _events) in enumerate(entries):
            taken = any(e["org_id"] == entry["org_id"] and e["seq"] == entry["seq"] for e in self.ledger.values())
            if taken or entry["_id"] in self.ledger:
                return count
            self.ledger[entry["_id"]] = _copy(entry)  # its events are published by publish_ledger_entries
        return len(entries)

    def publish_ledger_entries(self, entries, published=None):
        self.outbox.publish_all([event for _, events in entries for event in events])
        self.clears += 1
        if published is not None:
            published()
        return sum(len(events) for _, events in entries)

    def ledger_entries(self, org_id):
        return sorted((_copy(e) for e in self.ledger.values() if e["org_id"] == org_id), key=lambda e: e["seq"])

    def ledger_page(self, org_id, limit, before_seq=None, top_seq=0):
        entries = [e for e in reversed(self.ledger_entries(org_id)) if before_seq is None or e["seq"] < before_seq]
        return entries[:limit]

    def schedule_expiry(self, grant_id, org_id, expires_at, now):
        self.expiries.setdefault(grant_id, {"_id": grant_id, "org_id": org_id, "expires_at": expires_at,
                                            "created_at": now})

    def due_expiries(self, now, limit=100):
        return sorted((_copy(e) for e in self.expiries.values() if e["expires_at"] <= now),
                      key=lambda e: e["expires_at"])[:limit]

    def drop_expiry(self, grant_id):
        self.expiries.pop(grant_id, None)

    def set_fact_if_newer(self, collection, org_id, values, as_of):
        doc = self.table(collection).setdefault(org_id, {"_id": org_id})
        if doc.get("as_of") is None or doc["as_of"] < as_of:
            doc.update(values, as_of=as_of)
        self.take_back_if_purged(org_id, collection, org_id)

    def fact(self, collection, org_id):
        return _copy(self.table(collection).get(org_id))

    # storage reports: a chain like the ledger's
    def storage_head(self, org_id):
        reports = [r for r in self.table("storage_reports").values() if r["org_id"] == org_id]
        return _copy(max(reports, key=lambda r: r["seq"])) if reports else None

    def insert_storage_report(self, doc):
        reports = self.table("storage_reports")
        if any(r["org_id"] == doc["org_id"] and r["seq"] == doc["seq"] for r in reports.values()):
            return False
        reports[doc["_id"]] = _copy(doc)
        return True

    def finish_storage_report(self, report_id, fields, *events, before_publish=None):
        self.table("storage_reports")[report_id].update(fields)
        if before_publish is not None:
            before_publish()
        self.outbox.publish_all(events)

    def drop_storage_claim(self, report_id):
        if self.table("storage_reports").get(report_id, {}).get("status") == "applying":
            del self.table("storage_reports")[report_id]

    def storage_report(self, org_id, seq):
        return _copy(next((r for r in self.table("storage_reports").values()
                           if r["org_id"] == org_id and r["seq"] == seq), None))

    def bucket(self, org_id, index):
        return _copy(self.table("dataset_buckets").get(f"{org_id}:{index:02d}"))

    def buckets(self, org_id):
        return [_copy(b) for b in self.table("dataset_buckets").values() if b["org_id"] == org_id]

    def put_bucket(self, org_id, index, datasets):
        bucket_id = f"{org_id}:{index:02d}"
        if datasets:
            self.table("dataset_buckets")[bucket_id] = {"_id": bucket_id, "org_id": org_id, "datasets": _copy(datasets)}
        else:
            self.table("dataset_buckets").pop(bucket_id, None)


# -- notifications -------------------------------------------------------------------------------

class FakeNotificationsStore(FakeStore):
    def __init__(self):
        super().__init__()
        self.orgs = self.table("organizations")
        self.members = self.table("members")
        self.prefs = self.table("settings")
        self.queue = self.table("mail_queue")
        self.decisions = {}
        self._ordinals = itertools.count(1)

    def organization(self, org_id):
        return _copy(self.orgs.get(org_id))

    def set_if_newer(self, org_id, stamp, fields, as_of):
        org = self.orgs.setdefault(org_id, {"_id": org_id})
        if org.get(stamp + "_as_of") is None or org[stamp + "_as_of"] < as_of:
            org.update(fields, **{stamp + "_as_of": as_of})
        self.take_back_if_purged(org_id, "organizations", org_id)

    def set_fields(self, org_id, fields):
        if org_id in self.orgs:
            self.orgs[org_id].update(fields)

    def schedule_reminder(self, org_id, lead):
        pass  # reminders are driven by the integration suite

    def put_member(self, org_id, user_id, fields, as_of):
        doc = self.members.setdefault(f"{org_id}:{user_id}", {"org_id": org_id, "user_id": user_id})
        if doc.get("as_of") is None or doc["as_of"] < as_of:
            doc.update(fields, as_of=as_of)
            return True
        return False

    def member(self, org_id, user_id):
        doc = self.members.get(f"{org_id}:{user_id}")
        return _copy(doc) if doc and not doc.get("left") else None

    def admins(self, org_id):
        return [_copy(m) for m in self.members.values()
                if m["org_id"] == org_id and m.get("role") == "admin" and not m.get("left")]

    def settings(self, org_id):
        return _copy(self.prefs.get(org_id))

    def put_settings(self, org_id, fields, *events):
        self.prefs.setdefault(org_id, {"_id": org_id}).update(fields)
        self.outbox.publish_all(events)
        return _copy(self.prefs[org_id])

    def decide_once(self, key, recipients):
        return list(self.decisions.setdefault(key, list(recipients)))

    def record_delivery(self, entry, log):
        if entry["_id"] in self.queue:
            return False
        self.queue[entry["_id"]] = dict(_copy(entry), ordinal=next(self._ordinals))
        return True

    def unfinished(self, org_id, kind):
        return any(e["org_id"] == org_id and e["kind"] == kind for e in self.queue.values())

    def mark_deleting(self, org_id):
        if org_id in self.orgs:
            self.orgs[org_id]["status"] = "deleting"

    def mark_purge_pending(self, org_id):
        self.orgs.setdefault(org_id, {"_id": org_id}).update(purge_pending=True, status="deleting")

    def purge_pending_ids(self, limit=100):
        return [org_id for org_id, doc in self.orgs.items() if doc.get("purge_pending")][:limit]

    def finish_attempt(self, entry, record):
        """The attempt's outcome; a final one takes the mail out of the queue."""
        self.table("delivery_attempts")[f"{entry['_id']}#{entry.get('attempts', 0) + 1}"] = dict(
            record, org_id=entry["org_id"], delivery_id=entry["_id"])
        if record["status"] == "queued":
            self.queue[entry["_id"]].update(attempts=entry.get("attempts", 0) + 1, due_at=record["next_attempt_at"])
        else:
            self.queue.pop(entry["_id"], None)
        return True

    def forget_delivery(self, delivery_id):
        pass

    def mail_to(self, kind=None):
        """The recipients of every mail recorded (of ``kind``), sorted."""
        return sorted(e["to"] for e in self.queue.values() if kind is None or e["kind"] == kind)


# -- org -----------------------------------------------------------------------------------------

class FakeOrgStore(FakeStore):
    def __init__(self):
        super().__init__()
        self.orgs = self.table("organizations")

    def _conditional(self, org_id, status):
        doc = self.orgs.get(org_id)
        return doc if doc is not None and doc["status"] == status else None

    def insert_organization(self, doc, *events):
        if doc["_id"] in self.orgs:
            return False
        self.orgs[doc["_id"]] = _copy(doc)
        self.outbox.publish_all(events)
        return True

    def get_organization(self, org_id):
        return _copy(self.orgs.get(org_id))

    cached_organization = get_organization

    def organization_by_receipt(self, receipt_hash):
        return _copy(next((d for d in self.orgs.values()
                           if (d.get("deletion") or {}).get("receipt_hash") == receipt_hash), None))

    def rename_active(self, org_id, name, at, *events):
        doc = self._conditional(org_id, "active")
        if doc is None:
            return None
        doc.update(name=name, updated_at=at)
        self.outbox.publish_all(events)
        return _copy(doc)

    def change_active_plan(self, org_id, plan, history, at, *events):
        doc = self._conditional(org_id, "active")
        if doc is None:
            return None
        doc.update(plan=plan, updated_at=at)
        doc.setdefault("plan_history", []).append(history)
        self.outbox.publish_all(events)
        return _copy(doc)

    def start_deletion(self, org_id, deletion, at, *events):
        doc = self._conditional(org_id, "active")
        if doc is None:
            return None
        doc.update(status="deleting", deletion=_copy(deletion), updated_at=at)
        self.outbox.publish_all(events)
        return _copy(doc)

    def mark_service_purged(self, org_id, service, removed, at):
        doc = self._conditional(org_id, "deleting")
        if doc is None:
            return None
        doc["deletion"]["services"][service] = "purged"
        doc["deletion"].setdefault("removed", {})[service] = removed
        return _copy(doc)

    def replace_with_tombstone(self, org_id, tombstone, *events):
        if self._conditional(org_id, "deleting") is None:
            return False
        self.orgs[org_id] = _copy(tombstone)
        self.outbox.publish_all(events)
        return True

    def apply_read_model(self, org_id, section, values, as_of):
        doc = self.orgs.get(org_id)
        if doc is None or doc["status"] == "deleted":
            return
        current = doc.get(section) or {}
        if current.get("as_of") is None or current["as_of"] < as_of:
            doc[section] = dict(current, **values, as_of=as_of)


# -- audit ---------------------------------------------------------------------------------------

class FakeAuditStore(FakeStore):
    """The audit log's chain: entries numbered per organization, one chain document each."""

    def __init__(self):
        super().__init__()
        self.entries = self.table("entries")
        self.chains = self.table("chains")
        self.inserts = []  # entries per insert_entries call

    def chain(self, org_id):
        return _copy(self.chains.get(org_id))

    def start_chain(self, org_id, at):
        self.chains.setdefault(org_id, {"_id": org_id, "org_id": org_id, "top_page": 0, "first_at": at})

    def head(self, org_id, chain=None):
        mine = [e for e in self.entries.values() if e["org_id"] == org_id]
        return _copy(max(mine, key=lambda e: e["seq"])) if mine else None

    def entry(self, entry_id):
        return _copy(self.entries.get(entry_id))

    def entry_at(self, org_id, seq):
        return _copy(next((e for e in self.entries.values() if e["org_id"] == org_id and e["seq"] == seq), None))

    def insert_entries(self, docs):
        """An ordered insert: stops at the first entry whose ``seq`` or ``_id`` is taken."""
        assert len(docs) <= 32, "at most a page per insert"
        self.inserts.append(len(docs))
        for count, doc in enumerate(docs):
            taken = any(e["org_id"] == doc["org_id"] and e["seq"] == doc["seq"] for e in self.entries.values())
            if taken or doc["_id"] in self.entries:
                return count
            self.entries[doc["_id"]] = _copy(doc)
        return len(docs)

    def retained(self, org_id):
        return None

    def bulks(self, org_id, first_seq, top_seq):
        yield sorted((_copy(e) for e in self.entries.values()
                      if e["org_id"] == org_id and first_seq <= e["seq"] <= top_seq), key=lambda e: e["seq"])


class SlowWrites:
    """A fake store whose ``method`` takes ``seconds`` per call: writes arriving meanwhile queue
    behind it and the next group carries them all (as a database round trip does for real)."""

    def __init__(self, store, method, seconds=0.02):
        self.store, self.method, self.seconds = store, method, seconds

    def __getattr__(self, name):
        found = getattr(self.store, name)
        if name != self.method:
            return found

        def slow(*args, **kwargs):
            time.sleep(self.seconds)
            return found(*args, **kwargs)
        return slow
