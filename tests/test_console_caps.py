"""The admin console sets a key's spend cap and an account's alert webhook (CSRF-checked,
audited, errors naming the field), and the cap holds from the next API request."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from console_support import csrf_of
from gateway_support import SECRET, InProcess, auth

from avokit.gateway.db.models import Account
from avokit.gateway.services import admins, keys, webhooks
from avokit.gateway.services.audit import audit_entries
from avokit.gateway.settings import load_settings

PRICE = {"*": {"input": 1_000_000, "output": 1_000_000}}
CHAT = {"model": "avo-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
PASSWORD = "correct horse battery staple"


def test_admin_console_sets_spend_caps_and_alerts(registry: Path, upstream: str,
                                                  tmp_path: Path) -> None:
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream,
                                 alert_delivery=False)
        async with InProcess(settings) as gw:
            key, info = gw.key(credit_micros=10**6, prices=PRICE)
            with gw.sessions.begin() as s:
                admins.create_admin(s, "root", PASSWORD)
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app),
                                     base_url="http://gateway")
            page = await http.get("/console/admin/signin")
            r = await http.post("/console/admin/signin", data={
                "name": "root", "password": PASSWORD, "csrf": csrf_of(page.text)})
            assert r.status_code == 303
            page = await http.get("/console/admin/keys")
            assert f'action="/console/admin/keys/{info.id}/spend_cap"' in page.text
            csrf = csrf_of(page.text)
            cap_url = f"/console/admin/keys/{info.id}/spend_cap"

            r = await http.post(cap_url, data={"spend_cap_micros": "5", "cap_period": "day"})
            assert r.status_code == 403  # no CSRF token: refused, nothing changed
            for form, field in [({"spend_cap_micros": "lots"}, "spend_cap_micros"),
                                ({"spend_cap_micros": "5", "cap_period": "week"},
                                 "spend_cap_period"),
                                ({"spend_cap_micros": "-1"}, "spend_cap")]:
                r = await http.post(cap_url, data={**form, "csrf": csrf})
                assert r.status_code == 400 and field in r.text, form
            with gw.sessions() as s:
                assert keys.get_key(s, info.id).spend_cap_micros is None

            r = await http.post(cap_url, data={"spend_cap_micros": "5", "cap_period": "day",
                                               "csrf": csrf})
            assert r.status_code == 303
            with gw.sessions() as s:
                row = keys.get_key(s, info.id)
                assert (row.spend_cap_micros, row.spend_cap_period) == (5, "day")
                (entry,) = [e for e in audit_entries(s, info.id) if e.action == "spend_cap"]
                assert entry.actor == "admin:root"
            page = await http.get("/console/admin/keys")
            assert 'value="5"' in page.text
            # the next request on the API is held against it: 8+ tokens never fit 5 micro-units
            r = await gw.http.post("/v1/chat/completions", json=CHAT, headers=auth(key))
            assert r.status_code == 402 and r.json()["error"]["code"] == "spend_cap_exceeded"
            r = await http.post(cap_url, data={"spend_cap_micros": "", "csrf": csrf})
            assert r.status_code == 303
            r = await gw.http.post("/v1/chat/completions", json=CHAT, headers=auth(key))
            assert r.status_code == 200

            alerts_url = f"/console/admin/accounts/{info.account_id}/alerts"
            for form, field in [({"alert_url": "http://example.com/hook"}, "alert_url"),
                                ({"alert_url": "https://example.com/h",
                                  "low_credit_micros": "some"}, "low_credit_micros"),
                                ({"alert_url": "https://example.com/h",
                                  "cap_percents": "80,200"}, "cap_percents")]:
                r = await http.post(alerts_url, data={**form, "csrf": csrf})
                assert r.status_code == 400 and field in r.text, form
            r = await http.post(alerts_url, data={
                "alert_url": "https://example.com/h", "low_credit_micros": "1000",
                "cap_percents": "90,50", "csrf": csrf})
            secret = webhooks.signing_secret(SECRET, info.account_id, 0)
            assert r.status_code == 200 and secret in r.text
            r = await http.post(alerts_url, data={
                "alert_url": "https://example.com/h", "rotate_secret": "on", "csrf": csrf})
            rotated = webhooks.signing_secret(SECRET, info.account_id, 1)
            assert rotated != secret and rotated in r.text and secret not in r.text
            with gw.sessions() as s:
                account = s.get(Account, info.account_id)
                assert account is not None
                assert (account.alert_url, account.alert_low_credit_micros,
                        account.alert_cap_percents) == ("https://example.com/h", None, None)
                details = [json.loads(e.detail) for e in audit_entries(s)
                           if e.action == "alerts"]
            assert [d["cap_percents"] for d in details] == [[50, 90], None]
            r = await http.post(alerts_url, data={"alert_url": "", "csrf": csrf})
            assert r.status_code == 303
            with gw.sessions() as s:
                assert s.get(Account, info.account_id).alert_url is None  # type: ignore
            await http.aclose()

    asyncio.run(run())
