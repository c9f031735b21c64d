"""Read what the local SMTP sink received (`make mail`, and the README's "Try it" block).

``python3 -m stack.mail [--to ADDRESS] [--link]`` prints the newest message (to ADDRESS) decoded:
its headers and its text part, as a person would read it (the ``.eml`` files are quoted-printable,
so a link copied from them is broken). With ``--link`` only the invitation link. Waits up to
``--wait`` seconds for such a message (mail goes out a moment after the request). Standard library
only, so the system ``python3`` runs it.
"""
import argparse
import email
import email.policy
import glob
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"https?://\S+/invites/[A-Za-z0-9_-]+")


def messages(directory):
    """``(path, message)`` of every received mail, oldest first."""
    found = []
    for path in sorted(glob.glob(os.path.join(directory, "*.eml"))):
        with open(path, "rb") as handle:
            found.append((path, email.message_from_bytes(handle.read(), policy=email.policy.default)))
    return found


def recipients(message):
    return [a.strip().lower() for a in str(message.get("X-Sink-Rcpt-To") or message.get("To") or "").split(",")]


def newest(directory, to=None, link=False):
    for path, message in reversed(messages(directory)):
        if to and to.lower() not in recipients(message):
            continue
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        if link and not LINK.search(text):
            continue
        return path, message, text
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=os.path.join(ROOT, "var", "mail"), help="the SMTP sink's folder")
    parser.add_argument("--to", help="only mail to this address")
    parser.add_argument("--link", action="store_true", help="print only the invitation link")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for such a mail")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        found = newest(args.dir, args.to, args.link)
        if found is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # polling a folder: the sink writes each message with one rename
    if found is None:
        to = f" to {args.to}" if args.to else ""
        print(f"no mail{to} in {args.dir}", file=sys.stderr)
        return 1
    path, message, text = found
    if args.link:
        print(LINK.search(text).group(0))
        return 0
    print(f"# {os.path.relpath(path)}")
    for header in ("From", "To", "Subject", "Date"):
        if message.get(header):
            print(f"{header}: {message[header]}")
    print()
    print(text.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
