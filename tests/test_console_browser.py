"""The web console in a real browser: Playwright driving Debian's chromium against a real
`avokit serve` (one server and one browser for the module).

It serves the tiny random fixture release by default (fast; fake lineage, noise answers). With
$AVOKIT_CONSOLE_RELEASE set to a real release (``REGISTRY/<name>`` from `avokit release`) it
serves that one instead, and every assertion about the model reads what its release.json says.
Screenshots of the main pages are written to $AVOKIT_CONSOLE_SHOTS, else to a temp dir; the
README's come from a real release:

    AVOKIT_CONSOLE_RELEASE=registry/NAME AVOKIT_CONSOLE_SHOTS=docs/console \
        python -m pytest tests/test_console_browser.py
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from console_support import ADMIN_NAME, ADMIN_PASSWORD, Console
from gateway_support import auth

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; "
                "scripts/setup.sh --dev does it as root) to run the console's browser tests",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: bash scripts/setup.sh --dev")


RELEASE = os.environ.get("AVOKIT_CONSOLE_RELEASE")
# a real model on a shared CPU: its first answer may take much longer than the fixture's
ANSWER_TIMEOUT_MS = 300_000 if RELEASE else 30_000


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    release = Path(RELEASE) if RELEASE else None
    if release is not None and not (release / "release.json").is_file():
        pytest.fail(f"AVOKIT_CONSOLE_RELEASE={RELEASE}: no release.json there (give REGISTRY/<name> "
                    "of an `avokit release`)")
    served = Console(tmp_path_factory.mktemp("console-browser"), release=release)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("AVOKIT_CONSOLE_SHOTS") or tmp_path_factory.mktemp("shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def tab(chromium: Any, console: Console) -> Iterator[Any]:
    context = chromium.new_context(base_url=console.url, viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    pg = context.new_page()
    # a CSP violation or a script error shows up here: the page must run clean
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def signin(tab: Any, key: str) -> None:
    tab.goto("/console")
    assert tab.url.endswith("/console/signin")
    tab.fill("input[name=key]", key)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/console/playground")


def number(tab: Any, selector: str) -> int:
    return int(tab.inner_text(selector).replace(",", ""))


def test_signin_stream_a_chat_and_see_usage_change_by_the_bill(
        tab: Any, console: Console, shots: Path) -> None:
    tab.goto("/console/signin")
    tab.screenshot(path=str(shots / "signin.png"))
    signin(tab, console.alice)
    assert console.alice not in tab.content()
    tab.goto("/console/usage")
    spent, remaining = number(tab, "#spent"), number(tab, "#remaining")
    tab.goto("/console/playground")
    # a real model gets room for a sentence or two; the fixture never stops early (no eos)
    max_tokens = 64 if console.real else 24
    tab.select_option("#model", console.model)
    tab.fill("#max_tokens", str(max_tokens))
    tab.fill("#temperature", "0")
    tab.fill("#prompt", "Tell me about the quick brown fox." if console.real else "Tell me about the quick brown fox")
    with tab.expect_response("**/console/api/chat", timeout=ANSWER_TIMEOUT_MS) as reply:
        tab.click("#send")
    assert reply.value.headers["content-type"].startswith("text/event-stream")
    tab.wait_for_selector(".msg.assistant[data-cost]", timeout=ANSWER_TIMEOUT_MS)
    answer = tab.locator(".msg.assistant")
    # streamed: the page's reader got the answer as many events (one per token), not one body
    assert int(answer.get_attribute("data-deltas") or "0") > 1
    cost = int(answer.get_attribute("data-cost") or "-1")
    text = answer.locator(".text").inner_text()
    assert cost > 0, cost
    # the published shot shows an answer in words: a greedy answer of only whitespace or symbols
    # (a student that learnt too little) fails here, naming what it wrote
    assert text.strip() and (not console.real or re.search(r"[^\W\d_]{2,}", text)), \
        f"{console.model} wrote no words at temperature 0: {text[:200]!r}"
    meta = answer.locator(".meta").inner_text()
    found = re.search(r"(\d+) completion tokens", meta)
    assert found, meta
    written = int(found.group(1))
    # the fixture writes exactly max_tokens; a real model may end its answer sooner
    assert (1 < written <= max_tokens) if console.real else written == max_tokens
    print(f"\n{console.model} answered ({written} tokens): {text!r}")
    tab.screenshot(path=str(shots / "playground.png"))
    tab.goto("/console/usage")
    assert number(tab, "#spent") - spent == cost
    assert remaining - number(tab, "#remaining") == cost
    assert tab.locator("svg.chart").count() == 2
    tab.screenshot(path=str(shots / "usage.png"), full_page=True)


def test_create_rotate_and_revoke_a_key(tab: Any, console: Console, shots: Path) -> None:
    signin(tab, console.alice)
    tab.goto("/console/keys")
    tab.fill("#create-key input[name=name]", "ci-bot")
    tab.fill("#create-key input[name=rpm]", "30")
    tab.click("#create-key button[type=submit]")
    created = tab.input_value("#new-key")
    assert httpx.get(console.url + "/v1/models", headers=auth(created)).status_code == 200
    key_id = tab.locator(".newkey code").inner_text()
    row = tab.locator(f"tr[data-key-id={key_id}]")
    row.locator("input[name=grace_hours]").fill("0")
    row.locator("text=Rotate").click()
    rotated = tab.input_value("#new-key")
    assert rotated != created
    assert httpx.get(console.url + "/v1/models", headers=auth(created)).status_code == 401
    assert httpx.get(console.url + "/v1/models", headers=auth(rotated)).status_code == 200
    new_id = tab.locator(".newkey code").inner_text()
    tab.locator(f"tr[data-key-id={new_id}]").locator("text=Revoke").click()
    tab.wait_for_url("**/console/keys")
    assert tab.locator(f"tr[data-key-id={new_id}] .state").inner_text() == "revoked"
    assert httpx.get(console.url + "/v1/models", headers=auth(rotated)).status_code == 401
    tab.screenshot(path=str(shots / "keys.png"), full_page=True)


def test_a_customer_cannot_reach_other_accounts_or_the_admin_console(
        tab: Any, console: Console) -> None:
    signin(tab, console.alice)
    r = tab.goto(f"/console/usage?key={console.bob_info.id}")
    assert r.status == 404 and console.bob_info.id in tab.inner_text(".error")
    tab.goto("/console/admin")
    assert tab.url.endswith("/console/admin/signin")
    assert tab.locator("input[name=password]").count() == 1


def test_a_form_post_without_its_csrf_token_is_refused(tab: Any, console: Console) -> None:
    signin(tab, console.alice)
    tab.goto("/console/keys")
    rows = tab.locator("tr[data-key-id]").count()
    tab.evaluate("document.querySelector('#create-key input[name=csrf]').remove()")
    tab.fill("#create-key input[name=name]", "no-csrf")
    with tab.expect_response("**/console/keys") as reply:
        tab.click("#create-key button[type=submit]")
    assert reply.value.status == 403
    tab.goto("/console/keys")
    assert tab.locator("tr[data-key-id]").count() == rows


def test_model_card_shows_the_lineage(tab: Any, console: Console, shots: Path) -> None:
    m = console.manifest
    signin(tab, console.alice)
    tab.goto("/console/models")
    tab.click(f"a:text-is('{console.model}')")
    tab.wait_for_url(f"**/console/models/{console.model}")
    lineage = tab.inner_text("#lineage")
    assert m.lineage.teachers, "a release without teachers shows no lineage"
    for t in m.lineage.teachers:  # every teacher with its licence and weights fingerprint
        for text in (t.name, t.license, (t.fingerprint or "not known")[:16]):
            assert text in lineage, text
    start = m.lineage.pretrained_start
    if start is not None:
        assert start.name in tab.inner_text("#start") and start.license in tab.inner_text("#start")
    else:
        assert tab.locator("#start").count() == 0
    gate = tab.inner_text("#gate")
    assert ("passed" if m.gate.passed else "failed") in gate
    assert all(c.name in gate for c in m.gate.checks)
    table = tab.inner_text("#evaluation table")  # the per-domain table
    domains = {d for per in m.eval.domain_bpb.values() for d in per}
    assert domains and all(d in table for d in domains)
    assert f"{m.eval.bpb['student']:.4f}" in table
    charts = 1 + bool(domains) + bool(m.eval.tasks)  # overall, per domain, tasks
    assert tab.locator("#evaluation svg.chart").count() == charts
    tab.screenshot(path=str(shots / "model-card.png"), full_page=True)


def test_admin_console(tab: Any, console: Console, shots: Path) -> None:
    tab.goto("/console/admin")
    assert tab.url.endswith("/console/admin/signin")
    tab.fill("input[name=name]", ADMIN_NAME)
    tab.fill("input[name=password]", ADMIN_PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/console/admin")
    account = console.bob_info.account_id
    before = console.credit(account)
    row = tab.locator(f"tr[data-account-id='{account}']")
    row.locator("input[name=amount_micros]").fill("5000")
    row.locator("text=Top up").click()
    tab.wait_for_url("**/console/admin")
    assert console.credit(account) == before + 5000
    tab.screenshot(path=str(shots / "admin-accounts.png"), full_page=True)
    tab.goto("/console/admin/audit")
    assert f"admin:{ADMIN_NAME}" in tab.inner_text("#audit")
    tab.screenshot(path=str(shots / "admin-audit.png"))
    tab.goto("/console/admin/usage")
    tab.screenshot(path=str(shots / "admin-usage.png"), full_page=True)
