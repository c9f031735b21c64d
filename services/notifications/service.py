"""Notifications service: settings, mail outbox and delivery log (filled in by its own issue)."""
from nameko.rpc import rpc


class NotificationsService:
    name = "notifications"

    @rpc
    def ping(self):
        return "pong"
