"""``GET /api/v1/asyncapi.json``: the AsyncAPI 3 description of every event (``common.asyncapi``),
built once per worker from the schemas the services validate their events with."""
from flask import jsonify

from common.asyncapi import document

PATH = "/api/v1/asyncapi.json"


def init_app(app):
    described = document()

    @app.get(PATH)
    def asyncapi_document():
        return jsonify(described)
