"""Notifications: per-organization settings and the mail delivery log."""
from gateway import schemas as s
from gateway.api import ADMIN
from gateway.routes.common import api, rpc


@api.route("/organizations/<org_id>/notifications", "GET", ADMIN, "Who gets which mail", "notifications",
           response=s.NotificationSettingsSchema, errors=("410",))
def get_notification_settings(org_id):
    return rpc("notifications", "get_settings", org_id)


@api.route("/organizations/<org_id>/notifications", "PUT", ADMIN,
           "Set who gets plan, new-member and AI-job mail (null address = the owner's)", "notifications",
           body=s.NotificationSettingsRequest, response=s.NotificationSettingsSchema, errors=("410",))
def put_notification_settings(org_id, body):
    return rpc("notifications", "put_settings", org_id, body)


@api.route("/organizations/<org_id>/notifications/deliveries", "GET", ADMIN,
           "Mail sent for the organization, newest first, with every attempt", "notifications",
           query=s.DeliveryQuery, response=s.DeliveryPageSchema, errors=("410",))
def list_deliveries(org_id, query):
    return rpc("notifications", "list_deliveries", org_id, query["limit"], query["cursor"])
