"""Local SMTP sink: accepts every message and writes it to ``<dir>/<timestamp>-<n>.eml``.

Each file is written under a temporary name and renamed, so a reader never sees half a message.
"""
import argparse
import itertools
import logging
import os
import signal
import threading
import time

from aiosmtpd.controller import Controller

from common import logs

_counter = itertools.count(1)


class SaveToDirectory:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() // 1000 % 1_000_000:06d}"
        name = f"{stamp}-{next(_counter)}.eml"
        header = f'X-Sink-Mail-From: {envelope.mail_from}\r\nX-Sink-Rcpt-To: {", ".join(envelope.rcpt_tos)}\r\n'
        temporary = os.path.join(self.directory, "." + name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(header.encode())
            handle.write(envelope.original_content or envelope.content)
        os.rename(temporary, os.path.join(self.directory, name))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default="var/mail")
    args = parser.parse_args()
    controller = Controller(SaveToDirectory(args.dir), hostname=args.host, port=args.port)
    controller.start()
    logging.basicConfig(level=logging.INFO)
    for handler in logging.getLogger().handlers:  # one JSON object per line, like every process
        handler.setFormatter(logs.formatter("smtp", os.environ.get("LOG_FORMAT") or "json"))
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per connection
    logging.getLogger("smtp_sink").info("smtp sink on %s:%d writing to %s", args.host, args.port, args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
