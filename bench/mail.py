"""Figure 3: mail fan-out. 1,000 ``member_joined`` events published on the bus -> 1,000 mails in
the instance's SMTP sink, vs. the same 1,000 rendered mails sent with bare smtplib (one
connection, one message after the other) to the same sink, in the same run.
"""
import os
import smtplib
import time
import uuid

from kombu import Connection
from kombu.pools import producers

from bench import cpu
from bench.harness import Figure
from common import events
from common.topology import event_exchange

COUNT = int(os.environ.get("BENCH_MAILS", "1000"))
#: the fan-out is cut off after this long so `make bench` stays under 10 minutes
WAIT_SECONDS = float(os.environ.get("BENCH_MAIL_WAIT", "90"))


def _mail_files(directory):
    if not os.path.isdir(directory):
        return set()
    return {name for name in os.listdir(directory) if name.endswith(".eml") and not name.startswith(".")}


def _wait_for_files(directory, before, count, timeout):
    """``(finished at, how many arrived)``; gives up after ``timeout`` so the bench stays bounded."""
    deadline = time.monotonic() + timeout
    while True:
        new = len(_mail_files(directory) - before)
        if new >= count or time.monotonic() > deadline:
            return time.perf_counter(), new
        time.sleep(0.02)


def measure(inst, client):
    signup = client.signup("Mail Bench")
    org_id, owner_email = signup["organization"]["id"], signup["user"]["email"]
    import pymongo
    db = pymongo.MongoClient(inst.mongo_url)[inst.db_prefix + "notifications"]
    client.wait(lambda: (db.organizations.find_one({"_id": org_id}) or {}).get("owner_email"),
                "the notifications service to learn the organization")

    bodies = []
    for index in range(COUNT):
        _, _, body = events.make_event(
            events.MEMBER_JOINED, org_id, user_id=str(uuid.uuid4()), email=f"member-{index}@example.test",
            name=f"Member {index}", role="member", via_invite=True, is_owner=False, member_count=index + 2)
        bodies.append(body)

    before = _mail_files(inst.mail_dir)
    with cpu.measure(inst) as used:
        started = time.perf_counter()
        with Connection(inst.amqp_uri) as connection, producers[connection].acquire(block=True) as producer:
            exchange = event_exchange(events.MEMBER_JOINED[0])
            for body in bodies:
                producer.publish(body, exchange=exchange, routing_key=events.MEMBER_JOINED[1], serializer="json",
                                 declare=[exchange])
        finished, arrived = _wait_for_files(inst.mail_dir, before, COUNT, timeout=WAIT_SECONDS)
    service_seconds = finished - started
    # every subscriber of member_joined works during the fan-out, not only the mailer
    print("  fan-out: " + used.line(COUNT, "mail"), flush=True)

    # the baseline: the very same mails, rendered beforehand, sent with smtplib over one connection
    from services.notifications import mail
    sender = "no-reply@orgplatform.localhost"
    messages = []
    for body in bodies:
        subject, text, html = mail.render("member_joined", {
            "org_id": org_id, "org_name": "Mail Bench", "org_url": "http://127.0.0.1/organizations/" + org_id,
            "settings_url": "http://127.0.0.1/settings", "member_name": body["name"],
            "member_email": body["email"], "role": body["role"], "via_invite": True})
        messages.append(mail.build_message(sender, owner_email, subject, text, html, body["event_id"]))
    before = _mail_files(inst.mail_dir)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as smtp:
        for message in messages:
            smtp.send_message(message, from_addr=sender, to_addrs=[owner_email])
    finished, sent = _wait_for_files(inst.mail_dir, before, COUNT, timeout=60)
    if sent < COUNT:
        raise RuntimeError(f"the sink received only {sent} of {COUNT} mails sent with smtplib")
    baseline_seconds = finished - started
    if arrived < COUNT:  # bounded wait: the ratio is then a lower bound (and misses the goal)
        return Figure("mail_fanout_vs_smtplib", service_seconds / baseline_seconds, "<= 2.0",
                      f"(LOWER BOUND: only {arrived} of {COUNT} mails after {service_seconds:.0f}s through events vs "
                      f"{baseline_seconds:.2f}s bare smtplib)")
    return Figure("mail_fanout_vs_smtplib", service_seconds / baseline_seconds, "<= 2.0",
                  f"({COUNT} mails: {service_seconds:.2f}s through events vs {baseline_seconds:.2f}s bare smtplib)")
