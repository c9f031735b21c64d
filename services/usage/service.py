"""Usage service: storage reports and the credit ledger (filled in by its own issue)."""
from nameko.rpc import rpc


class UsageService:
    name = "usage"

    @rpc
    def ping(self):
        return "pong"
