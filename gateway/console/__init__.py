"""The web console: server-rendered pages over the API's own operations (see ``calls.py``).

``register_console(app, settings)`` adds the blueprint at ``/``; ``views.py`` has the pages,
``session.py`` the sealed session cookie and CSRF token, ``templates/`` and ``static/`` the
markup, style and a little progressive-enhancement script (no build step).
"""
from gateway.console.session import Sealer


def register_console(app, settings):
    from gateway.console import views

    app.extensions["console_sealer"] = Sealer(settings.console_session_key or "")
    app.extensions["console_secure_cookie"] = settings.public_base_url.lower().startswith("https:")
    app.register_blueprint(views.bp)
