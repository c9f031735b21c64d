"""The baseline of ``healthz_vs_bare_flask``: the smallest Flask app answering what ``/healthz`` does.

Run by the bench under the gateway's gunicorn settings (worker class, workers, threads, keep-alive)
without the gateway's hooks: request id, metrics, security headers, access log, JSON logs."""
from flask import Flask, jsonify


def create_app():
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})
    return app
