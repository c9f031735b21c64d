"""Per-organization notification settings and the delivery log as the API shows them."""
from common import events, outbox, pages
from common.addresses import normalize_address
from common.errors import DomainError, gone
from common.events import AI_JOB_RECIPIENTS
from common.validation import decode_sequence, encode_sequence
from services.notifications.dispatch import delivery_view
from services.notifications.schemas import DeliverySchema, SettingsSchema

DEFAULTS = {"plan_email": None, "new_user_email": None, "ai_job_recipients": "initiator"}
FIELDS = tuple(DEFAULTS)
MAX_PAGE = 200


def current(store, org_id):
    """The organization's settings, defaults filled in."""
    doc = store.settings(org_id) or {}
    return {field: doc.get(field, default) for field, default in DEFAULTS.items()}


def get_settings(store, org_id):
    return SettingsSchema().dump(current(store, org_id))


def put_settings(store, org_id, values):
    """Replace the settings; the gateway validates too, this is the service's own check."""
    if not isinstance(values, dict):
        raise DomainError("validation_failed", "invalid input", {"_schema": ["Must be an object."]})
    errors = {}
    unknown = set(values) - set(FIELDS)
    for field in unknown:
        errors[field] = ["Unknown field."]
    clean = {}
    for field in ("plan_email", "new_user_email"):
        value = values.get(field)
        if value is None:
            clean[field] = None
        else:
            clean[field] = normalize_address(value)
            if clean[field] is None:
                errors[field] = ["Must be one plain email address (no name, no list) or null."]
    recipients = values.get("ai_job_recipients", DEFAULTS["ai_job_recipients"])
    if recipients not in AI_JOB_RECIPIENTS:
        errors["ai_job_recipients"] = [f'Must be one of: {", ".join(AI_JOB_RECIPIENTS)}.']
    clean["ai_job_recipients"] = recipients
    if errors:
        raise DomainError("validation_failed", "invalid input", errors)
    changed = current(store, org_id) != clean
    store.put_settings(org_id, clean, *([outbox.pending(events.NOTIFICATION_SETTINGS_CHANGED, org_id, **clean)]
                                        if changed else []))
    if store.take_back_if_purged(org_id, "settings", org_id):  # the purge ran since the caller's check
        raise gone()
    return get_settings(store, org_id)


_DELIVERIES = DeliverySchema(many=True)  # built once: a schema costs more to build than to dump a page


def with_attempts(store, org_id, log_docs, whole_log=False):
    """The log entries with their state, derived from their attempts (``whole_log``: the entries
    are the organization's whole log, so all its attempts are read without naming them)."""
    keys = None if whole_log or any(not doc.get(pages.FIELD) for doc in log_docs) else sorted(
        {doc[pages.FIELD] for doc in log_docs})
    attempts = store.attempts_of(org_id, None if whole_log else [doc["_id"] for doc in log_docs], keys)
    return [delivery_view(doc, attempts.get(doc["_id"], [])) for doc in log_docs]


def list_deliveries(store, org_id, limit=50, cursor=None):
    limit = max(1, min(int(limit or 50), MAX_PAGE))
    after = decode_sequence(cursor) if cursor else None  # the log pages newest first
    page = store.delivery_page(org_id, limit + 1, after)
    items = _DELIVERIES.dump(with_attempts(store, org_id, page[:limit]))
    return {"items": items, "next_cursor": encode_sequence(page[limit - 1]["ordinal"]) if len(page) > limit else None}
