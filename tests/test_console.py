"""The web console over HTTP against a real `avokit serve` (one server for the module): sign-in
and sessions, CSRF, account isolation, the admin console and its audit trail, the usage CSV,
the playground's billing, model cards and sign-in rate limits. The browser scenarios are in
test_console_browser.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from console_support import ADMIN_NAME, Console, csrf_of
from gateway_support import SECRET, auth

SIGNINS_PER_MINUTE = 12


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    served = Console(tmp_path_factory.mktemp("console"),
                     AVOKIT_CONSOLE_SIGNINS_PER_MINUTE=str(SIGNINS_PER_MINUTE))
    yield served
    served.stop()


def test_without_a_session_console_asks_to_sign_in(console: Console) -> None:
    http = console.client()
    r = http.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    page = http.get("/console/signin")
    assert page.status_code == 200 and 'name="key"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    for path in ["/console/usage", "/console/keys", "/console/playground", "/console/models"]:
        r = http.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/console/signin", path
    r = http.get("/console/admin")
    assert r.status_code == 303 and r.headers["location"] == "/console/admin/signin"
    assert http.post("/console/api/chat", json={}).status_code == 401


def test_the_key_becomes_a_signed_httponly_session(console: Console) -> None:
    http = console.client()
    page = http.get("/console/signin")
    r = http.post("/console/signin", data={"key": console.alice, "csrf": csrf_of(page.text)})
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                  and v.startswith("avokit_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure is set when served over HTTPS
    assert console.alice not in cookie and console.alice not in r.headers.get("location", "")
    for path in ["/console/playground", "/console/usage", "/console/keys", "/console/models"]:
        page = http.get(path)
        assert page.status_code == 200 and console.alice not in page.text, path
    assert f"<code>{console.alice[:11]}…</code>" in http.get("/console/keys").text  # its prefix
    # a wrong key is refused with a message naming the field, and no session
    bad = console.client()
    page = bad.get("/console/signin")
    r = bad.post("/console/signin", data={"key": "sk-avo-nope", "csrf": csrf_of(page.text)})
    assert r.status_code == 401 and "key:" in r.text and "avokit_console" not in bad.cookies
    # a tampered cookie is no session; signing out ends the session for good
    forged = console.client()
    forged.cookies.set("avokit_console", http.cookies["avokit_console"][:-2] + "xx",
                       path="/console")
    assert forged.get("/console/usage").status_code == 303
    stolen = http.cookies["avokit_console"]
    assert http.post("/console/signout", data={"csrf": csrf_of(http.get("/console/keys").text)}
                     ).status_code == 303
    replay = console.client()
    replay.cookies.set("avokit_console", stolen, path="/console")
    assert replay.get("/console/usage").status_code == 303
    assert console.alice not in console.log.read_text()


def test_posts_without_the_csrf_token_are_refused(console: Console) -> None:
    http, csrf = console.signin(console.alice)
    before = http.get("/console/keys").text.count("data-key-id")
    for data in ({"name": "x"}, {"name": "x", "csrf": "0" * 64}):
        r = http.post("/console/keys", data=data)
        assert r.status_code == 403 and r.json()["error"]["param"] == "csrf"
    assert http.get("/console/keys").text.count("data-key-id") == before
    r = http.post("/console/api/chat", json={"model": "avo-tiny", "messages": [
        {"role": "user", "content": "hi"}]})
    assert r.status_code == 403
    # the sign-in form carries one too
    fresh = console.client()
    fresh.get("/console/signin")
    assert fresh.post("/console/signin", data={"key": console.alice}).status_code == 403
    assert http.post("/console/keys", data={"name": "ok", "models": "*", "csrf": csrf}
                     ).status_code == 200


def test_a_customer_sees_only_its_own_account(console: Console) -> None:
    http, csrf = console.signin(console.alice)
    bob_key = console.bob_info.id
    assert bob_key not in http.get("/console/keys").text
    assert http.get(f"/console/usage?key={bob_key}").status_code == 404
    assert http.get(f"/console/usage.csv?key={bob_key}").status_code == 404
    for action in ("revoke", "rotate"):
        r = http.post(f"/console/keys/{bob_key}/{action}", data={"csrf": csrf})
        assert r.status_code == 400 and f"no key with id &#39;{bob_key}&#39;" in r.text
    assert httpx.get(console.url + "/v1/models", headers=auth(console.bob)).status_code == 200
    # the admin console ignores a customer session: its pages redirect, its posts are 401
    r = http.get("/console/admin")
    assert r.status_code == 303 and r.headers["location"] == "/console/admin/signin"
    assert http.get("/console/admin/audit").status_code == 303
    r = http.post(f"/console/admin/keys/{bob_key}/revoke", data={"csrf": csrf})
    assert r.status_code == 401
    assert httpx.get(console.url + "/v1/models", headers=auth(console.bob)).status_code == 200


def _chat(http: httpx.Client, csrf: str, max_tokens: int, **extra: object
          ) -> list[dict[str, object]]:
    r = http.post("/console/api/chat", headers={"X-CSRF-Token": csrf}, json={
        "model": "avo-tiny", "messages": [{"role": "user", "content": "Hello fox"}],
        "temperature": 0, "max_tokens": max_tokens, **extra})
    assert r.status_code == 200, r.text
    return [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: ")]


def test_playground_bills_its_answer_and_the_csv_matches_the_cli(
        console: Console, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from avokit.cli import gateway as cli

    http, csrf = console.signin(console.alice)
    account = console.alice_info.account_id
    before = console.credit(account)
    events = _chat(http, csrf, 7)
    assert [e["type"] for e in events[:-1]] == ["delta"] * (len(events) - 1)
    done = events[-1]
    assert done["type"] == "done" and done["completion_tokens"] == 7
    expected = int(done["prompt_tokens"]) * 2 + 7 * 6  # type: ignore[call-overload]
    assert done["cost_micros"] == expected == before - console.credit(account)
    # a request over the key's caps is the API's own 400, naming the field
    r = http.post("/console/api/chat", headers={"X-CSRF-Token": csrf}, json={
        "model": "avo-tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 9})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    csv_text = http.get("/console/usage.csv").text
    monkeypatch.setenv("AVOKIT_SECRET", SECRET)
    capsys.readouterr()
    cli.usage(key=None, since=None, as_csv=True, db=console.db_url, account=account)
    assert csv_text.replace("\r\n", "\n") == capsys.readouterr().out.replace("\r\n", "\n")
    assert csv_text.count("\n") >= 2 and console.bob_info.id not in csv_text


def test_playground_json_mode_switch(console: Console) -> None:
    """The switch sends response_format json_object: the answer opens a JSON object, where
    the same request without it does not."""
    http, csrf = console.signin(console.alice)
    assert 'id="json_mode"' in http.get("/console/playground").text

    def text(**extra: object) -> str:
        return "".join(str(e["text"]) for e in _chat(http, csrf, 12, **extra)
                       if e["type"] == "delta")

    assert text(json_mode=True).startswith("{")
    assert not text(json_mode=False).startswith("{")


def test_model_card_shows_lineage_gate_and_evaluation(console: Console) -> None:
    http, _ = console.signin(console.alice)
    page = http.get("/console/models/avo-tiny")
    assert page.status_code == 200
    for text in ("Lineage", "qwen2.5-coder-0.5b", "Apache-2.0", "must_beat_baseline", "passed",
                 "<th>german</th>", "<svg"):
        assert text in page.text, text
    # the pretrained start, its licence the release inherits, and its weights
    start = page.text.split('<p id="start">', 1)[1].split("</p>", 1)[0]
    for text in ("<code>smollm2-135m</code>", "HuggingFaceTB/SmolLM2-135M-Instruct", "licence Apache-2.0",
                 "inherits its terms", "c" * 16):
        assert text in start, (text, start)
    assert http.get("/console/models/not-a-model").status_code == 404
    narrow, _ = console.key("narrow", models=["other-model"])
    other, _ = console.signin(narrow)
    assert other.get("/console/models/avo-tiny").status_code == 404
    assert "avo-tiny" not in other.get("/console/models").text


def test_admin_console_actions_are_audited(console: Console) -> None:
    _, r = console.admin_signin(password="not the password at all")
    assert r.status_code == 401
    http, r = console.admin_signin()
    assert r.status_code == 303 and r.headers["location"] == "/console/admin"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                  and v.startswith("avokit_admin="))
    assert "HttpOnly" in cookie and "Path=/console/admin" in cookie
    page = http.get("/console/admin")
    csrf = csrf_of(page.text)
    account = console.bob_info.account_id
    before = console.credit(account)
    assert http.post(f"/console/admin/accounts/{account}/topup",
                     data={"amount_micros": "1234"}).status_code == 403
    r = http.post(f"/console/admin/accounts/{account}/topup",
                  data={"amount_micros": "1234", "csrf": csrf})
    assert r.status_code == 303 and console.credit(account) == before + 1234
    r = http.post(f"/console/admin/accounts/{account}/topup",
                  data={"amount_micros": "lots", "csrf": csrf})
    assert r.status_code == 400 and "amount_micros" in r.text
    victim, victim_info = console.key("victim")
    assert http.post(f"/console/admin/keys/{victim_info.id}/revoke",
                     data={"csrf": csrf}).status_code == 303
    assert httpx.get(console.url + "/v1/models", headers=auth(victim)).status_code == 401
    r = http.post("/console/admin/accounts", data={
        "name": "carol", "price_in": "5", "price_out": "7", "credit_micros": "99",
        "csrf": csrf})
    assert r.status_code == 200 and 'id="new-key"' in r.text
    for path in ["/console/admin/keys", "/console/admin/usage", "/console/admin/models",
                 "/console/admin/models/avo-tiny", "/console/admin/usage.csv"]:
        assert http.get(path).status_code == 200, path
    card = http.get("/console/admin/models/avo-tiny").text
    assert "avo-tiny" in card and "Lineage" in card
    assert http.get("/console/admin/models/avo-nope").status_code == 404
    audit = http.get("/console/admin/audit").text
    actor = f"admin:{ADMIN_NAME}"
    for action in ("signin", "topup", "revoke", "create"):
        assert f"<td>{actor}</td><td>{action}</td>" in audit, action
    # the admin session is not a customer session
    assert http.get("/console/usage").status_code == 303


def test_usage_pages_show_a_window_of_days(console: Console) -> None:
    """The usage pages and CSVs (customer and admin) cover the last 30 days unless ``days``
    says otherwise; a bad ``days`` is a 400 naming it."""
    from datetime import timedelta

    from avokit.gateway.db.models import LedgerEntry

    key, info = console.key("dora")
    now = datetime.now(timezone.utc)
    with console.sessions.begin() as s:  # one charge 40 days old, one of today
        for age, model in ((40, "old-model"), (0, "new-model")):
            s.add(LedgerEntry(account_id=info.account_id, key_id=info.id, kind="charge",
                              amount_micros=-5, model=model, prompt_tokens=1,
                              completion_tokens=1, created_at=now - timedelta(days=age)))
    http, _ = console.signin(key)
    month = http.get("/console/usage.csv").text
    assert "new-model" in month and "old-model" not in month
    quarter = http.get("/console/usage.csv?days=90").text
    assert "new-model" in quarter and "old-model" in quarter
    page = http.get("/console/usage?days=90")
    assert page.status_code == 200 and "in 90 days" in page.text
    assert 'href="/console/usage.csv?days=90"' in page.text
    for bad in ("0", "367", "abc", "-5"):
        r = http.get(f"/console/usage?days={bad}")
        assert r.status_code == 400 and "days: must be a whole number" in r.text, bad
        assert "Sign out" in r.text  # the refusal is a console page for the signed-in customer
        r = http.get(f"/console/usage.csv?days={bad}")
        assert r.status_code == 400 and "days: must be a whole number" in r.text, bad
    admin, r = console.admin_signin()
    assert r.status_code == 303
    assert "old-model" not in admin.get("/console/admin/usage.csv").text
    assert "old-model" in admin.get("/console/admin/usage.csv?days=366").text
    for path in ("/console/admin/usage?days=x", "/console/admin/usage.csv?days=0"):
        r = admin.get(path)
        assert r.status_code == 400 and "days: must be a whole number" in r.text and "Sign out" in r.text


def test_signin_attempts_are_rate_limited(console: Console) -> None:
    http = console.client()
    page = http.get("/console/signin")
    codes = [http.post("/console/signin", data={"key": "sk-avo-wrong",
                                                "csrf": csrf_of(page.text)}).status_code
             for _ in range(SIGNINS_PER_MINUTE + 1)]
    assert codes[-1] == 429 and set(codes[:-1]) <= {401, 429}
    # the limit covers the admin sign-in too, and a right password does not get past it
    _, r = console.admin_signin()
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_admin_create_refuses_weak_or_taken_and_stores_only_a_hash(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from avokit.cli.main import build_app
    from avokit.gateway.db.session import make_db_engine, session_factory
    from avokit.gateway.services import admins

    db = f"sqlite:///{tmp_path}/admins.db"
    env = {"AVOKIT_SECRET": SECRET}

    def create(name: str, password: str) -> object:
        return CliRunner().invoke(build_app(), ["admin", "create", "--name", name, "--db", db],
                                  input=f"{password}\n{password}\n", env=env)

    ok = create("ops", "a long enough password")
    assert ok.exit_code == 0, ok.output  # type: ignore[attr-defined]
    short = create("ops2", "short")
    assert short.exit_code != 0 and "password" in str(short.exception)  # type: ignore[attr-defined]
    taken = create("ops", "another long password")
    assert taken.exit_code != 0 and "already exists" in str(taken.exception)  # type: ignore[attr-defined]
    with session_factory(make_db_engine(db))() as s:
        (row,) = admins.list_admins(s)
        assert "a long enough password" not in row.password_hash
        assert admins.verify_admin(s, "ops", "a long enough password") is not None
        assert admins.verify_admin(s, "ops", "a long enough passwore") is None
        assert admins.verify_admin(s, "nobody", "a long enough password") is None


def test_admin_disable_ends_sessions_and_enable_restores(tmp_path: Path) -> None:
    """`avokit admin disable` refuses the administrator's sign-ins and ends its open sessions
    (checked on every page); `enable` restores sign-in; both are audited; `list` shows it."""
    from sqlalchemy import select
    from typer.testing import CliRunner

    from avokit.cli.main import build_app
    from avokit.gateway.console.auth import Sessions
    from avokit.gateway.db.models import AuditEntry
    from avokit.gateway.db.session import make_db_engine, session_factory
    from avokit.gateway.services import admins

    db = f"sqlite:///{tmp_path}/admins.db"
    password = "a long enough password"

    def cli(*args: str, stdin: str = "") -> Any:
        return CliRunner().invoke(build_app(), ["admin", *args, "--db", db], input=stdin,
                                  env={"AVOKIT_SECRET": SECRET})

    assert cli("create", "--name", "ops", stdin=f"{password}\n{password}\n").exit_code == 0
    engine = make_db_engine(db)
    sessions = Sessions(SECRET, 3600)
    with session_factory(engine)() as s:
        admin = admins.verify_admin(s, "ops", password)
    assert admin is not None
    cookie = sessions.signed(sessions.start(engine, "admin", admin=admin))
    assert sessions.load(engine, cookie, "admin") is not None

    assert cli("disable", "--name", "ops").exit_code == 0
    assert sessions.load(engine, cookie, "admin") is None
    with session_factory(engine)() as s:
        assert admins.verify_admin(s, "ops", password) is None
    listed = cli("list")
    assert listed.exit_code == 0 and "ops" in listed.output
    assert listed.output.count(str(datetime.now(timezone.utc).year)) == 2  # created, disabled

    assert cli("enable", "--name", "ops").exit_code == 0
    with session_factory(engine)() as s:
        assert admins.verify_admin(s, "ops", password) is not None
        actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["admin_create", "admin_disable", "admin_enable"]
    unknown = cli("disable", "--name", "nobody")
    assert unknown.exit_code != 0 and "name: no administrator named 'nobody'" in str(
        unknown.exception)
