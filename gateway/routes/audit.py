"""The organization's activity log (the audit service, ``services/audit``): who did what, when."""
from common.events import isoformat
from gateway import schemas as s
from gateway.api import ADMIN
from gateway.routes.common import api, rpc


@api.route("/organizations/<org_id>/audit-log", "GET", ADMIN, "Who did what, when: the activity log, newest first",
           "audit", query=s.AuditLogQuery, response=s.AuditLogPageSchema, errors=("410",))
def list_audit_log(org_id, query):
    """Built from the platform's events only. `action` takes an action (`member.joined`) or its kind
    (`member`); `actor` a user id or `system`; `since` an ISO 8601 moment. The cursor is the
    `next_cursor` of the previous page."""
    return rpc("audit", "list_entries", org_id, query["limit"], query["cursor"], query["action"], query["actor"],
               isoformat(query["since"]))


@api.route("/organizations/<org_id>/audit-log/verify", "GET", ADMIN,
           "Recompute the log's hash chain: does every entry still hash to what the next one names?", "audit",
           query=s.AuditVerifyQuery, response=s.AuditVerificationSchema, errors=("410",), bulkhead="export")
def verify_audit_log(org_id, query):
    """`ok: false` names the first entry that was changed, removed or reordered (`broken_at`). A big log
    is checked over several calls: while `next_cursor` is not null, call again with `cursor` set to it."""
    return rpc("audit", "verify", org_id, query["cursor"])
