"""The console's pages. Each handler reads the session, calls API operations (``calls.call``) and
renders a template; forms post back and redirect (post/redirect/get). Who may do what is decided
by the operations' declared access rules and the services, never here: the page only hides
controls the person could not use, and a forged request meets the API's 403.
"""
import functools
import logging
import re
import time
import uuid
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, g, jsonify, redirect, render_template, request, url_for
from nameko.exceptions import RemoteError
from werkzeug.exceptions import HTTPException

from common import events
from common.errors import DomainError
from gateway.console.calls import call, gather, require
from gateway.console.session import COOKIE, Session
from gateway.rpc import ServiceUnavailable

log = logging.getLogger("gateway.console")

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console-static")

#: the console's pages: scripts, styles, images and fetches from our own origin only; no inline
#: script or style of any kind, no plugins, no framing, forms post only to us
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ROLES = (("member", "Member"), ("dataset_manager", "Dataset manager"), ("admin", "Admin"))
ROLE_LABEL = dict(ROLES)
_RECIPIENT_LABELS = {"initiator": "The person who started the job",
                     "initiator_and_admins": "The person who started it and every admin", "admins": "Every admin"}
AI_JOB_RECIPIENTS = tuple((mode, _RECIPIENT_LABELS[mode]) for mode in events.AI_JOB_RECIPIENTS)
ROLE_RANK, PLAN_NAMES = events.ROLE_RANK, events.PLAN_NAMES
PAID_UNTIL_WARNING_DAYS = 42  # the plan reminder mail's window (six weeks)
SESSION_ENDED = "Your session has ended. Please log in again."
PAGE_SIZE = 20


# -- session, CSRF, headers ------------------------------------------------------------------

@bp.before_request
def open_session():
    stored = current_app.extensions["console_sealer"].open(request.cookies.get(COOKIE))
    g.session = Session(stored)
    if stored is None or "c" not in stored:
        g.session.changed = True  # a new visitor: hand out the CSRF secret with this answer
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
            return refused_form()
        if not g.session.csrf_ok(request.form.get("csrf_token")):
            return refused_form()


def refused_form():
    # a cross-site post arrives without the cookie: answering with a fresh session would replace the
    # person's own (logging them out from another site), so a refusal never sets the cookie
    g.session.changed = False
    return render_template("error.html", title="Form refused",
                           message="This form was sent from another site or has expired. "
                                   "Reload the page and try again."), 403


@bp.after_request
def seal_session(response):
    session = g.get("session")
    if session is not None and request.method == "POST" and response.status_code < 400:
        session.pop("m")  # a change went through: the avatar menu's data is read afresh
    if session is not None and session.changed:
        sealed = current_app.extensions["console_sealer"].seal(dict(session))
        if len(sealed) > COOKIE_BUDGET and "m" in session:  # many organizations: no menu cache
            session.pop("m")
            sealed = current_app.extensions["console_sealer"].seal(dict(session))
        response.set_cookie(COOKIE, sealed, httponly=True,
                            samesite="Lax", path="/",
                            secure=current_app.extensions["console_secure_cookie"] or request.is_secure)
    response.headers["Content-Security-Policy"] = CSP
    # "no-referrer" (the API's) makes Chromium send "Origin: null" with our own form posts, which the
    # Origin check must refuse; same-origin keeps URLs (invite tokens) from ever leaving the site
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    response.vary.add("Cookie")
    return response


@bp.app_template_global()
def csrf_token():
    return g.session.csrf_token


# -- errors: plain-language pages, never a stack trace or raw JSON ---------------------------

FRIENDLY = {
    "forbidden": "You are not allowed to do this.",
    "wrong_organization": "This page belongs to an organization you are not signed in to.",
    "not_a_member": "You are not a member of this organization.",
    "not_found": "We could not find what you were looking for.",
    "organization_gone": "This organization has been deleted or is being deleted.",
    "service_unavailable": "Part of the platform is not answering right now. Try again in a moment.",
    "rate_limited": "Too many attempts. Wait a minute and try again.",
    "internal_error": "Something went wrong on our side. Try again in a moment.",
}


def sentence(text):
    text = str(text or "").strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def error_page(status, code, message=None):
    return render_template("error.html", title="Sorry", message=FRIENDLY.get(code) or sentence(message),
                           status=status), status


@bp.errorhandler(DomainError)
def domain_error(error):
    if error.status == 401:
        g.session.log_out()
        g.session.flash(SESSION_ENDED, "error")
        return redirect(url_for("console.login"))
    headers = {"Retry-After": "1"} if error.status in (429, 503) else {}
    if error.code == "wrong_organization":
        switch_to = member_of((request.view_args or {}).get("org_id"))
        if switch_to:  # one of the person's other organizations: offer the switch (the API's rule stands)
            return render_template("error.html", title="Another organization", status=403, switch_to=switch_to,
                                   message=f'You are signed in to another organization. Switch to {switch_to["name"]} '
                                           'to see this page.'), 403
    body, status = error_page(error.status, error.code, error.message)
    return body, status, headers


def member_of(org_id):
    """The person's membership of ``org_id`` from the avatar menu's data, or None."""
    try:
        return next((o for o in whoami()["organizations"] if o["id"] == org_id), None) if org_id else None
    except Exception:  # an error page must not fail on its own: no offer then
        return None


@bp.errorhandler(ServiceUnavailable)
def unavailable(error):
    log.warning("console: %s", error)
    body, status = error_page(503, "service_unavailable")
    return body, status, {"Retry-After": "1"}


@bp.errorhandler(HTTPException)
def http_error(error):
    return error_page(error.code, "not_found" if error.code == 404 else None, error.description)


@bp.errorhandler(RemoteError)
@bp.errorhandler(Exception)
def unexpected(error):
    log.exception("console: unhandled error")
    return error_page(500, "internal_error")


def form_errors(error, fields):
    """``{field: message}`` next to the form's fields, and ``_form`` for the rest (top of the form)."""
    errors = {}
    for field, messages in (error.details or {}).items():
        text = messages
        while isinstance(text, (list, dict)) and text:
            if isinstance(text, dict):
                key, text = next(iter(text.items()))
                if field == "emails" and str(key).isdigit():
                    errors.setdefault(field, f"Address {int(key) + 1}: ")
            else:
                text = text[0]
        text = sentence(str(text).replace("Missing data for required field", "This field is required")
                        .replace("Not a valid email address", "Enter a valid email address"))
        if field in fields:
            errors[field] = errors.get(field, "") + text
        elif field not in ("retry_after", "bulkhead", "service"):
            errors["_form"] = text
    if not errors or error.code != "validation_failed":
        errors.setdefault("_form", FRIENDLY.get(error.code) or sentence(error.message))
    return errors


# -- who is here -----------------------------------------------------------------------------

def sign_in(pair):
    """A new identity in this browser (log-in, sign-up, joining by invitation): a new CSRF secret
    too, so nothing handed out before the log-in carries over to the signed-in session. A session
    this browser still held (another account) is logged out first, not just forgotten."""
    if g.session.get("a"):
        try:
            call("logout", g.session["a"])
        except (DomainError, ServiceUnavailable):
            pass  # expired or revoked already, or membership is busy: it lapses with its refresh token
    g.session.log_out()
    g.session.pop("f")
    store_pair(pair)


def store_pair(pair):
    g.session["a"] = pair["access_token"]
    g.session["r"] = pair["refresh_token"]
    g.session["n"] = (pair.get("user") or {}).get("name") or g.session.get("n")
    g.claims_cache = None


def signed_in():
    """The session's claims, refreshing the access token server-side when it expired or was revoked
    (a role change revokes it; the refresh then states the new role). A refresh that fails (the
    member was removed, logged out elsewhere, the password changed) ends the console session."""
    if g.get("claims_cache"):
        return g.claims_cache
    token = g.session.get("a")
    if not token:
        return None
    verifier = current_app.extensions["verifier"]
    try:
        claims = verifier.verify(token)
    except DomainError as error:
        if error.code not in ("token_expired", "token_revoked") or not g.session.get("r"):
            return end_session()
        try:
            store_pair(call("refresh", body={"refresh_token": g.session["r"]}))
        except DomainError as refused:
            if refused.status >= 500 or refused.status == 429:
                raise
            return end_session()
        claims = verifier.verify(g.session["a"])
    g.claims_cache = claims
    return claims


def end_session():
    g.session.log_out()
    g.session.flash(SESSION_ENDED, "error")
    return None


def token():
    return g.session["a"]


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if signed_in() is None:
            return redirect(url_for("console.login"))
        return view(*args, **kwargs)
    return wrapped


MENU_SECONDS = 60
COOKIE_BUDGET = 3800  # browsers keep cookies up to 4096 bytes


def whoami():
    """The caller, their role here and their organizations (``GET /me``), for the avatar menu and the
    page's role. Kept in the sealed session for up to ``MENU_SECONDS``, tied to the access token it
    was read with: every change of role, ownership or membership revokes that token, so the first
    request after it (which refreshes the token) reads ``me`` afresh; any form post drops it too.
    What may be stale for a minute: another organization's new name or a new membership elsewhere
    in the menu. Saves the overview a second round trip (``make bench``: console_overview_vs_api)."""
    claims = signed_in()
    cached = g.session.get("m")
    if (isinstance(cached, dict) and cached.get("j") == claims.get("jti")
            and 0 <= time.time() - cached.get("t", 0) < MENU_SECONDS):
        return cached["v"]
    found = call("me", token())
    g.session["m"] = {"j": claims.get("jti"), "t": time.time(), "v": found}
    return found


def render(template, status=200, **context):
    """Every signed-in page shows the avatar menu: the caller and their organizations (``me``)."""
    claims = signed_in()
    if claims is not None and "me" not in context:
        context["me"] = whoami()
    context.setdefault("claims", claims)
    context.setdefault("flash", g.session.take_flash())
    context.setdefault("errors", {})
    context.setdefault("form", {})
    return render_template(template, **context), status


def org_context(org_id, **context):
    """What every organization tab knows: the caller's role there (``me``)."""
    me = context.pop("me", None) or whoami()
    here = me["organization"] and me["organization"]["id"] == org_id
    role = me["role"] if here else None
    context.update(me=me, org_id=org_id, role=role, is_admin=ROLE_RANK.get(role, 0) >= ROLE_RANK["admin"],
                   is_owner=bool(here and me["is_owner"]), is_superuser=me["user"]["is_superuser"])
    return context


# -- formatting helpers for templates --------------------------------------------------------

def parse_moment(text):
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@bp.app_template_filter("moment")
def format_moment(text):
    moment = parse_moment(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


@bp.app_template_filter("day")
def format_day(text):
    moment = parse_moment(text)
    return moment.astimezone(UTC).strftime("%Y-%m-%d") if moment else "—"


@bp.app_template_filter("credits")
def format_credits(milli):
    whole, part = divmod(abs(int(milli or 0)), 1000)
    text = f"{whole:,}" + (f".{part:03d}").rstrip("0").rstrip(".")
    return ("−" if int(milli or 0) < 0 else "") + text


@bp.app_template_filter("bytes")
def format_bytes(count):
    if count is None:
        return "unlimited"
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return (f"{value} {unit}") if unit == "bytes" else (f"{value:.1f} {unit}")
        value /= 1000


@bp.app_template_filter("role")
def format_role(role):
    return ROLE_LABEL.get(role, role)


@bp.app_template_filter("details")
def format_details(details):
    """An audit entry's details as a reader wants them: ``[(label, text)]``, yes/no for flags, roles
    by their names, moments as the page shows them; internal ids (``*_id``) and nested values are
    left out (the page names people already)."""
    shown = []
    for key, value in (details or {}).items():
        if value is None or isinstance(value, (dict, list)) or key == "id" or key.endswith("_id"):
            continue
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif key.endswith("role"):
            text = format_role(value)
        elif key.endswith("_at"):
            text = format_moment(value)
        else:
            text = str(value)
        shown.append((key.replace("_", " "), text))
    return shown


def plan_warning(paid_until):
    """A visible warning when the paid period ends within the reminder window or has ended."""
    moment = parse_moment(paid_until)
    if moment is None:
        return None
    days = (moment - datetime.now(UTC)).total_seconds() / 86400
    if days < 0:
        return f"The paid period ended on {format_day(paid_until)}."
    if days <= PAID_UNTIL_WARNING_DAYS:
        return f"The paid period ends on {format_day(paid_until)} (in {int(days)} days)."
    return None


# -- sign up, log in, log out, password ------------------------------------------------------

@bp.get("/")
def home():
    claims = signed_in()
    if claims is None:
        return redirect(url_for("console.login"))
    if claims.get("org"):
        return redirect(url_for("console.overview", org_id=claims["org"]))
    return render("home.html")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render("login.html")
    form = {"email": request.form.get("email", "")}
    try:
        pair = call("login", body={"email": form["email"], "password": request.form.get("password", "")})
    except DomainError as error:
        if error.status >= 500:
            raise
        errors = form_errors(error, ("email", "password"))
        if error.code == "invalid_credentials":
            errors = {"_form": "That email and password do not match an account."}
        return render("login.html", status=error.status, form=form, errors=errors)
    sign_in(pair)
    return after_sign_in(pair)


def after_sign_in(pair):
    """Back to the invitation that sent the person here, else the organization the token is for."""
    pending = g.session.pop("i")
    if pending:
        return redirect(url_for("console.invite", invite_token=pending))
    org = pair.get("organization") or {}
    return redirect(url_for("console.overview", org_id=org["id"]) if org.get("id") else url_for("console.home"))


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if request.method == "GET":
        return render("signup.html", claims=None)
    form = {key: request.form.get(key, "") for key in ("email", "name", "organization_name")}
    try:
        pair = call("signup", body=dict(form, password=request.form.get("password", "")))
    except DomainError as error:
        if error.status >= 500:
            raise
        return render("signup.html", status=error.status, claims=None, form=form,
                      errors=form_errors(error, ("email", "name", "organization_name", "password")))
    sign_in(pair)
    return redirect(url_for("console.overview", org_id=pair["organization"]["id"]))


@bp.post("/logout")
def logout():
    if signed_in() is not None:
        try:
            call("logout", token())
        except DomainError:
            pass  # already revoked: logging out is done either way
    g.session.log_out()
    g.session.flash("You are logged out.")
    return redirect(url_for("console.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    if request.method == "GET":
        return render("password.html")
    new = request.form.get("new_password", "")
    if new != request.form.get("confirm_password", ""):
        return render("password.html", status=422, errors={"confirm_password": "The two new passwords differ."})
    try:
        pair = call("change_password", token(), body={"current_password": request.form.get("current_password", ""),
                                                      "new_password": new})
    except DomainError as error:
        if error.status >= 500 or error.code in ("token_revoked", "token_expired", "invalid_token"):
            raise
        errors = form_errors(error, ("current_password", "new_password"))
        if error.code == "invalid_credentials" or "current_password" in errors:
            errors = {"current_password": "This is not your current password."}
        return render("password.html", status=error.status, errors=errors)
    store_pair(pair)
    g.session.flash("Your password is changed. Every other session has been logged out.")
    return redirect(url_for("console.home"))


@bp.post("/organizations")
@login_required
def create_organization():
    name = request.form.get("name", "")
    try:
        created = call("create_organization", token(), body={"name": name})
    except DomainError as error:
        if error.status >= 500:
            raise
        return render("home.html", status=error.status, form={"name": name}, errors=form_errors(error, ("name",)))
    store_pair(call("switch", token(), body={"organization_id": created["id"]}))
    return redirect(url_for("console.overview", org_id=created["id"]))


@bp.post("/switch")
@login_required
def switch():
    """The API's switch: a new session scoped to the chosen organization, the old one revoked; the
    membership service remembers it as the last used, which the next login opens."""
    org_id = request.form.get("organization_id", "")
    store_pair(call("switch", token(), body={"organization_id": org_id}))
    return redirect(url_for("console.overview", org_id=org_id))


@bp.get("/organizations/<org_id>")
def mail_org_link(org_id):
    """The organization link of notification mail."""
    return redirect(url_for("console.overview", org_id=org_id))


@bp.get("/organizations/<org_id>/settings/notifications")
def mail_settings_link(org_id):
    """The "who gets these messages" link of notification mail."""
    return redirect(url_for("console.notifications", org_id=org_id))


# -- invitations -----------------------------------------------------------------------------

@bp.get("/invites/<invite_token>")
def invite(invite_token):
    """The link the invitation mail carries."""
    try:
        preview = call_preview(invite_token)
    except DomainError as error:
        if error.status != 404:
            raise
        return render("invite_gone.html", status=404, claims=signed_in())
    return render("invite.html", preview=preview, invite_token=invite_token)


def call_preview(invite_token):
    return call("preview_invite", token=invite_token)


@bp.post("/invites/<invite_token>/accept")
def accept_invite(invite_token):
    if signed_in() is None:
        g.session["i"] = invite_token  # back here after logging in (kept in the sealed cookie, not a URL)
        return redirect(url_for("console.login"))
    try:
        pair = call("accept_invite", token(), token=invite_token)
    except DomainError as error:
        if error.status >= 500 or error.status == 401:
            raise
        preview = call_preview(invite_token)
        errors = form_errors(error, ())
        if error.code == "forbidden":
            errors = {"_form": 'This invitation was mailed to another address than '
                               f'{call("me", token())["user"]["email"]}. Log in with the account of the invited '
                               'address.'}
        return render("invite.html", status=error.status, preview=preview, invite_token=invite_token,
                      errors=errors, wrong_address=error.code == "forbidden")
    store_pair(pair)
    g.session.flash(f'Welcome to {pair["organization"]["name"]}.')
    return redirect(url_for("console.overview", org_id=pair["organization"]["id"]))


@bp.post("/invites/<invite_token>/login")
def login_for_invite(invite_token):
    g.session.log_out()
    g.session["i"] = invite_token
    return redirect(url_for("console.login"))


@bp.post("/invites/<invite_token>/signup")
def signup_with_invite(invite_token):
    form = {key: request.form.get(key, "") for key in ("email", "name")}
    try:
        pair = call("signup", body=dict(form, password=request.form.get("password", ""), invite_token=invite_token))
    except DomainError as error:
        if error.status >= 500:
            raise
        errors = form_errors(error, ("email", "name", "password"))
        if error.code == "forbidden":
            errors = {"email": "This invitation is for another email address."}
        if error.code == "not_found":
            return render("invite_gone.html", status=404, claims=None)
        return render("invite.html", status=error.status, claims=None, preview=call_preview(invite_token),
                      invite_token=invite_token, form=form, errors=errors)
    sign_in(pair)
    g.session.flash(f'Welcome to {pair["organization"]["name"]}.')
    return redirect(url_for("console.overview", org_id=pair["organization"]["id"]))


# -- the organization page: Overview ---------------------------------------------------------

def overview_context(org_id, **extra):
    """The overview is one round trip (the API's ``GET /organizations/{id}``); the avatar menu's data
    comes from the session (:func:`me`) or alongside it. The ledger (admins) is its own request
    (:func:`credits`), which the page's script embeds: its database read would otherwise set the
    page's pace."""
    calls = {"org": ("get_organization", token(), {"org_id": org_id})}
    cached = g.session.get("m")
    if not (isinstance(cached, dict) and cached.get("j") == signed_in().get("jti")):
        calls["me"] = ("me", token(), {})
    found = gather(**calls)
    if "me" in found:
        g.session["m"] = {"j": signed_in().get("jti"), "t": time.time(), "v": found["me"]}
    context = org_context(org_id, **extra)
    org = found["org"]
    context.update(org=org, warning=plan_warning(org["plan"]["paid_until"]), tab="overview")
    return context


@bp.get("/orgs/<org_id>")
@login_required
def overview(org_id):
    return render("overview.html", **overview_context(org_id))


@bp.get("/orgs/<org_id>/credits")
@login_required
def credits(org_id):
    """The credit ledger, newest first, paginated (admins; the Overview embeds the first page)."""
    ledger = call("get_ledger", token(), query={"limit": 10, "cursor": request.args.get("cursor")}, org_id=org_id)
    if request.args.get("fragment"):
        return render_template("_ledger.html", ledger=ledger, org_id=org_id)
    return render("credits.html", **org_context(org_id, ledger=ledger, tab="overview"))


@bp.post("/orgs/<org_id>/name")
@login_required
def rename(org_id):
    name = request.form.get("name", "")
    try:
        call("rename_organization", token(), body={"name": name}, org_id=org_id)
    except DomainError as error:
        if error.status in (401, 403, 404, 410) or error.status >= 500:
            raise
        return render("overview.html", status=error.status, form={"name": name},
                      errors=form_errors(error, ("name",)), **overview_context(org_id))
    g.session.flash("The organization is renamed.")
    return redirect(url_for("console.overview", org_id=org_id))


# -- Members ---------------------------------------------------------------------------------

def members_context(org_id, **extra):
    context = org_context(org_id, **extra)
    q = request.args.get("q", "")
    page = call("list_members", token(), query={"limit": request.args.get("limit") or PAGE_SIZE,
                                                "cursor": request.args.get("cursor"), "q": q}, org_id=org_id)
    context.update(members=page, q=q, tab="members")
    if context["is_admin"]:
        context["invites"] = call("list_invites", token(), org_id=org_id)["items"]
    return context


@bp.get("/orgs/<org_id>/members")
@login_required
def members(org_id):
    return render("members.html", **members_context(org_id))


def member_action(org_id, operation, done, **kwargs):
    """Run a members-tab action; a refusal the person can act on shows at the top of the tab."""
    try:
        call(operation, token(), org_id=org_id, **kwargs)
    except DomainError as error:
        if error.status in (401, 403, 410) or error.status >= 500:
            raise
        return render("members.html", status=error.status, errors=form_errors(error, ("emails", "role")),
                      form=request.form.to_dict(), **members_context(org_id))
    g.session.flash(done)
    return redirect(url_for("console.members", org_id=org_id))


@bp.post("/orgs/<org_id>/members/<user_id>/role")
@login_required
def change_role(org_id, user_id):
    role = request.form.get("role", "")
    return member_action(org_id, "change_member", f"The role is changed to {ROLE_LABEL.get(role, role)}.",
                         user_id=user_id, body={"role": role})


@bp.post("/orgs/<org_id>/members/<user_id>/remove")
@login_required
def remove_member(org_id, user_id):
    return member_action(org_id, "remove_member", "The member is removed.", user_id=user_id)


@bp.post("/orgs/<org_id>/ownership")
@login_required
def transfer_ownership(org_id):
    return member_action(org_id, "transfer_ownership", "Ownership is transferred.",
                         body={"user_id": request.form.get("user_id", "")})


@bp.post("/orgs/<org_id>/leave")
@login_required
def leave(org_id):
    claims = signed_in()
    try:
        call("remove_member", token(), org_id=org_id, user_id=claims["sub"])
    except DomainError as error:
        if error.code != "owner_protected":
            raise
        return render("members.html", status=error.status, errors={
            "_form": "As the owner you cannot leave. Transfer ownership to another admin first."},
            **members_context(org_id))
    # leaving ended this session (its membership is gone): log in again to reach other organizations
    g.session.log_out()
    g.session.flash("You left the organization. Log in to continue with your other organizations.")
    return redirect(url_for("console.login"))


@bp.post("/orgs/<org_id>/invites")
@login_required
def create_invites(org_id):
    emails = [e for e in re.split(r"[\s,;]+", request.form.get("emails", "")) if e]
    role = request.form.get("role", "")
    try:
        result = call("create_invites", token(), body={"emails": emails, "role": role}, org_id=org_id)
    except DomainError as error:
        if error.status in (401, 403, 410) or error.status >= 500:
            raise
        if not emails:
            error = DomainError("validation_failed", "invalid input", {"emails": ["Enter at least one email address."]})
        return render("members.html", status=error.status, errors=form_errors(error, ("emails", "role")),
                      form=request.form.to_dict(), **members_context(org_id))
    message = f'Invited {", ".join(i["email"] for i in result["items"])}.' if result["items"] else "Nobody new invited."
    if result["skipped"]:
        message += f' Already members: {", ".join(s["email"] for s in result["skipped"])}.'
    g.session.flash(message)
    return redirect(url_for("console.members", org_id=org_id))


@bp.post("/orgs/<org_id>/invites/<invite_id>/revoke")
@login_required
def revoke_invite(org_id, invite_id):
    return member_action(org_id, "revoke_invite", "The invitation is revoked; its link no longer works.",
                         invite_id=invite_id)


# -- Activity (the audit log) ------------------------------------------------------------------

#: how the Activity tab names an action (``services/audit/entries.py`` lists them)
ACTIVITY = {
    "organization.created": "created the organization", "organization.renamed": "renamed the organization",
    "plan.changed": "changed the plan", "notification_settings.changed": "changed who gets which mail",
    "member.joined": "joined", "member.left": "left", "member.removed": "removed a member",
    "member.role_changed": "changed a role", "deletion_right.granted": "granted the right to delete",
    "deletion_right.revoked": "took back the right to delete", "ownership.transferred": "transferred ownership",
    "invite.created": "invited", "invite.revoked": "revoked an invitation", "invite.accepted": "accepted an invitation",
    "credits.granted": "granted credits", "credits.reserved": "reserved credits", "credits.settled": "settled a job",
    "credits.refunded": "was refunded credits", "credits.expired": "credits expired",
    "storage.limit_exceeded": "exceeded the storage limit", "organization.deletion_requested": "asked to delete it",
}


@bp.get("/orgs/<org_id>/activity")
@login_required
def activity(org_id):
    """Who did what, newest first (admins): the API's audit-log operation, a page at a time."""
    found = gather(log=("list_audit_log", token(), {"query": {"limit": PAGE_SIZE, "cursor": request.args.get("cursor")},
                                                    "org_id": org_id}),
                   members=("list_members", token(), {"query": {"limit": 200}, "org_id": org_id}))
    # entries name people by id (the log keeps no profile); today's members are shown by name
    names = {m["user_id"]: m["name"] for m in found["members"]["items"]}
    return render("activity.html", **org_context(org_id, log=found["log"], actions=ACTIVITY, names=names,
                                                 tab="activity"))


# -- Notifications ---------------------------------------------------------------------------

def notifications_context(org_id, **extra):
    context = org_context(org_id, **extra)
    context.update(settings=call("get_notification_settings", token(), org_id=org_id),
                   deliveries=call("list_deliveries", token(), query={"limit": PAGE_SIZE,
                                                                      "cursor": request.args.get("cursor")},
                                   org_id=org_id),
                   recipients=AI_JOB_RECIPIENTS, tab="notifications")
    return context


@bp.get("/orgs/<org_id>/notifications")
@login_required
def notifications(org_id):
    return render("notifications.html", **notifications_context(org_id))


@bp.post("/orgs/<org_id>/notifications")
@login_required
def save_notifications(org_id):
    form = {key: request.form.get(key, "").strip() for key in ("plan_email", "new_user_email", "ai_job_recipients")}
    body = {"plan_email": form["plan_email"] or None, "new_user_email": form["new_user_email"] or None,
            "ai_job_recipients": form["ai_job_recipients"]}
    try:
        call("put_notification_settings", token(), body=body, org_id=org_id)
    except DomainError as error:
        if error.status in (401, 403, 410) or error.status >= 500:
            raise
        return render("notifications.html", status=error.status, form=form,
                      errors=form_errors(error, tuple(form)), **notifications_context(org_id))
    g.session.flash("Notification settings saved.")
    return redirect(url_for("console.notifications", org_id=org_id))


# -- Delete ----------------------------------------------------------------------------------

def delete_context(org_id, **extra):
    require("delete_organization", token(), org_id=org_id)  # admins only, as the API's DELETE
    context = org_context(org_id, **extra)
    org = call("get_organization", token(), org_id=org_id)
    claims = signed_in()
    mine = [m for m in call("list_members", token(), query={"limit": 200, "q": context["me"]["user"]["email"]},
                            org_id=org_id)["items"] if m["user_id"] == claims["sub"]]
    context.update(org=org, tab="delete", can_delete=bool(
        context["is_owner"] or (context["is_admin"] and mine and mine[0]["can_delete_organization"])))
    return context


@bp.get("/orgs/<org_id>/delete")
@login_required
def delete_page(org_id):
    return render("delete.html", **delete_context(org_id))


@bp.get("/orgs/<org_id>/export")
@login_required
def export(org_id):
    return call("export_organization", token(), org_id=org_id)


@bp.post("/orgs/<org_id>/delete")
@login_required
def delete(org_id):
    confirm = request.form.get("confirm_name", "")
    try:
        accepted = call("delete_organization", token(), body={"confirm_name": confirm}, org_id=org_id)
    except DomainError as error:
        if error.status in (401, 403, 410) or error.status >= 500:
            raise
        errors = form_errors(error, ("confirm_name",))
        if error.status == 422 and "confirm_name" not in errors:
            errors = {"confirm_name": "Type the organization's name exactly as shown."}
        return render("delete.html", status=error.status, errors=errors, form={"confirm_name": confirm},
                      **delete_context(org_id))
    # the deletion revoked this session's token; the receipt (kept sealed in the cookie, never in a
    # URL) lets the person follow it to the end
    g.session.log_out()
    g.session["d"] = accepted["receipt_url"].rsplit("/", 1)[1]
    g.session["dn"] = confirm
    return redirect(url_for("console.deletion"))


def deletion_status():
    receipt = g.session.get("d")
    if not receipt:
        abort(404)
    return call("get_deletion_by_receipt", receipt=receipt)


@bp.get("/deletion")
def deletion():
    return render("deletion.html", status_doc=deletion_status(), name=g.session.get("dn"), claims=signed_in())


@bp.get("/deletion/status")
def deletion_status_json():
    """What the progress page's script polls (same data as the page)."""
    return jsonify(deletion_status())


# -- platform operators ----------------------------------------------------------------------

def operator_context(**extra):
    org_id = (request.values.get("org_id") or "").strip()
    require("set_plan", token(), org_id=org_id)  # platform operators only, as the API's plan and grants
    context = dict(extra, org_id=org_id, plan_names=PLAN_NAMES, org=None, idempotency_key=uuid.uuid4().hex)
    if org_id:
        try:
            context["org"] = call("get_organization", token(), org_id=org_id)
        except DomainError as error:
            if error.status not in (404, 410, 422):
                raise
            context["lookup_error"] = ("No organization has this id." if error.status != 410 else
                                       FRIENDLY["organization_gone"])
    return context


@bp.get("/operator")
@login_required
def operator():
    return render("operator.html", **operator_context())


def operator_write(operation, body, done, fields):
    org_id = (request.form.get("org_id") or "").strip()
    try:
        call(operation, token(), body=body, org_id=org_id)
    except DomainError as error:
        if error.status in (401, 403) or error.status >= 500:
            raise
        return render("operator.html", status=error.status, errors=form_errors(error, fields),
                      form=request.form.to_dict(), **operator_context())
    g.session.flash(done)
    return redirect(url_for("console.operator", org_id=org_id))


def number_or_none(text, scale=1):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(round(float(text) * scale))
    except ValueError:
        return text  # the API's schema names it: "Not a valid integer."


@bp.post("/operator/plan")
@login_required
def operator_plan():
    paid = (request.form.get("paid_until") or "").strip()
    body = {"name": request.form.get("name", ""),
            "included_users": number_or_none(request.form.get("included_users")),
            "included_storage_bytes": number_or_none(request.form.get("included_storage_gb"), 10 ** 9),
            "paid_until": (paid + "T00:00:00+00:00") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", paid) else (paid or None)}
    return operator_write("set_plan", body, "The plan is set.", ("name", "included_users", "included_storage_bytes",
                                                                "paid_until"))


@bp.post("/operator/credits")
@login_required
def operator_credits():
    body = {"amount": number_or_none(request.form.get("credits"), 1000),
            "comment": request.form.get("comment") or None,
            "idempotency_key": request.form.get("idempotency_key") or uuid.uuid4().hex}
    if body["amount"] is None:
        body.pop("amount")
    return operator_write("grant_credits", body, "Credits granted.", ("amount", "comment"))


@bp.app_template_global()
def now_year():
    return time.gmtime().tm_year
