"""gunicorn access log without secrets: invite tokens and deletion receipts live in URL paths
(``/invites/<token>``, ``/deletions/<receipt>``).

The request line, path, query and referer are logged with every path segment after ``/invites/``
or ``/deletions/`` replaced by ``[redacted]``; request headers that carry credentials are never logged.
"""
import re

from gunicorn.glogging import Logger

_INVITE_TOKEN = re.compile(r"(/(?:invites|deletions)/)[^/?#\s]+")  # invite tokens, deletion receipts
_URL_ATOMS = ("r", "U", "q", "f")
_SECRET_HEADERS = ("{authorization}i", "{cookie}i", "{proxy-authorization}i")


def redact(text):
    return _INVITE_TOKEN.sub(r"\1[redacted]", text) if isinstance(text, str) else text


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in _URL_ATOMS:
            atoms[key] = redact(atoms.get(key))
        for key in _SECRET_HEADERS:
            if key in atoms:
                atoms[key] = "[redacted]"
        return atoms
