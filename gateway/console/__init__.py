"""The web console: server-rendered pages over the API's own operations (see ``calls.py``).

``register_console(app, config)`` adds the blueprint at ``/``; ``views.py`` has the pages,
``session.py`` the sealed session cookie and CSRF token, ``templates/`` and ``static/`` the
markup, style and a little progressive-enhancement script (no build step).
"""
from gateway.console.session import Sealer


def register_console(app, config):
    from gateway.console import views

    app.extensions["console_sealer"] = Sealer(str(config.get("CONSOLE_SESSION_KEY") or ""))
    app.extensions["console_secure_cookie"] = str(config.get("PUBLIC_BASE_URL") or "").lower().startswith("https:")
    app.register_blueprint(views.bp)
