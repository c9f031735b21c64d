"""A gateway worker's view of what happens on the bus: revoked tokens, organizations being deleted,
changed overviews -- three in-memory lists fed by one listener (``revocations.revocation_listener``).

``init_app(app, settings, pool)`` builds them; :func:`start` starts the listener, from gunicorn's
``post_worker_init`` hook (``gateway/gunicorn.conf.py``): after the fork, so no AMQP connection or
thread crosses it, and never in a test that only builds the app to look at its answers.
"""
from gateway import metrics
from gateway.deletions import GoneOrganizations
from gateway.readmodel import OverviewCache, shared_stamps
from gateway.revocations import RevocationList, revocation_listener


def init_app(app, settings, pool):
    revocations = RevocationList(lambda claims: pool.call("membership", "check_access", claims))
    gone = GoneOrganizations(enabled=not settings.gateway_fault_no_deletion_list)
    overviews = OverviewCache(shared_stamps(), max_age=settings.overview_cache_seconds,
                              observe=metrics.observe_overview)
    app.extensions["revocations"] = revocations
    app.extensions["gone_organizations"] = gone
    app.extensions["overviews"] = overviews
    # one listener feeds all three: the revocation list, the organizations being deleted, the overviews
    app.extensions["revocation_consumer"] = revocation_listener(settings.amqp_uri, revocations, gone.add, overviews)
    return revocations


def start(app):
    """Start the worker's listener (once)."""
    consumer = app.extensions["revocation_consumer"]
    if not consumer.is_alive() and not consumer.ident:
        consumer.start()
