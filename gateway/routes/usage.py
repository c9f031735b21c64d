"""Usage: storage reports, the usage summary and the credit ledger (amounts in milli-credits)."""
from flask import g

from common.errors import DomainError
from gateway import schemas as s
from gateway.api import ADMIN, DATASET_MANAGER, MEMBER, SUPERUSER
from gateway.routes.common import api, rpc


def _write(result):
    """A repeated idempotency key answers exactly as the first time, flagged by a header."""
    return result, {"Idempotent-Replayed": "true"} if result.get("replayed") else {}


def _key(body):
    """The ``Idempotency-Key`` header or, as before it, the body's ``idempotency_key``: one of them,
    and the same if both are given."""
    header, field = g.idempotency_key, body.get("idempotency_key")
    if header is None and field is None:
        raise DomainError("validation_failed", "invalid input",
                          {"Idempotency-Key": ["Give an Idempotency-Key header (or idempotency_key)."]})
    if header is not None and field is not None and header != field:
        raise DomainError("validation_failed", "invalid input",
                          {"idempotency_key": ["Differs from the Idempotency-Key header."]})
    return header if header is not None else field


@api.route("/organizations/<org_id>/usage", "GET", MEMBER, "Storage, seats and credit balance", "usage",
           response=s.UsageSchema, errors=("410",))
def get_usage(org_id):
    """Any member: what the plan includes and how much of it is used is no admin secret (the
    console's overview shows it to everyone in the organization)."""
    return rpc("usage", "get_usage", org_id)


@api.route("/organizations/<org_id>/storage-reports", "POST", SUPERUSER,
           "Report datasets' storage (complete: replace the whole report)", "usage",
           body=s.StorageReportRequest, response=s.StorageTotalsSchema, status=201, errors=("409", "410"))
def report_storage(org_id, body):
    return rpc("usage", "report_storage", org_id, body["datasets"], body["complete"])


@api.route("/organizations/<org_id>/credits", "GET", ADMIN, "Credit balance and ledger, newest first", "credits",
           query=s.CreditsQuery, response=s.LedgerPageSchema, errors=("410",))
def get_ledger(org_id, query):
    return rpc("usage", "get_ledger", org_id, query["limit"], query["cursor"])


@api.route("/organizations/<org_id>/credits/grants", "POST", SUPERUSER, "Grant credits (optionally expiring)",
           "credits", body=s.GrantRequest, response=s.CreditWriteSchema, status=201, errors=("409", "410"),
           idempotent=True)
def grant_credits(org_id, body):
    """The idempotency key is required: the `Idempotency-Key` header or the body's `idempotency_key`."""
    expires_at = body.get("expires_at")
    return _write(rpc("usage", "grant_credits", org_id, g.claims["sub"], body["amount"], _key(body),
                      body.get("comment"), expires_at.isoformat() if expires_at else None))


@api.route("/organizations/<org_id>/credits/reservations", "POST", DATASET_MANAGER,
           "Reserve credits for an AI job (402 when the balance does not cover it)", "credits",
           body=s.ReservationRequest, response=s.CreditWriteSchema, status=201, errors=("402", "409", "410"),
           idempotent=True)
def reserve_credits(org_id, body):
    """The idempotency key is required: the `Idempotency-Key` header or the body's `idempotency_key`."""
    return _write(rpc("usage", "reserve_credits", org_id, g.claims["sub"], body["amount"], body["job_id"],
                      body["job_type"], _key(body)))


@api.route("/organizations/<org_id>/credits/reservations/<reservation_id>/settle", "POST", SUPERUSER,
           "Settle a reservation: succeeded keeps it spent, failed refunds it", "credits",
           body=s.SettleRequest, response=s.CreditWriteSchema, errors=("409", "410"),
           success_headers=("Idempotent-Replayed",))
def settle_reservation(org_id, reservation_id, body):
    """Idempotent by the reservation: a repeat with the same outcome answers the first settlement
    (`Idempotent-Replayed: true`); another outcome is 409."""
    return _write(rpc("usage", "settle_reservation", org_id, g.claims["sub"], reservation_id, body["outcome"]))
