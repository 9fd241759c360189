"""The usage API: GET /v1/usage (the key's own account) and GET /v1/admin/usage (admin keys),
checked against the console's usage page and CSV download after scripted traffic."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).parent))
from console_support import csrf_of
from gateway_support import SECRET, InProcess, auth, build_registry

from avokit.gateway.db.models import LedgerEntry
from avokit.gateway.services import admins
from avokit.gateway.services.audit import utcnow
from avokit.gateway.settings import load_settings

PRICE = {"*": {"input": 2_000_000, "output": 6_000_000}}
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reg") / "registry"
    build_registry(root, "avo-tiny")
    build_registry(root, "avo-two")
    return root


def csv_groups(text: str) -> dict[str, dict[str, dict[str, int]]]:
    """The CSV download summed per day, model and key, as the API groups it."""
    out: dict[str, dict[str, dict[str, int]]] = {g: defaultdict(lambda: dict.fromkeys(
        FIELDS, 0)) for g in ("day", "model", "key")}
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows, "the CSV holds the charges"
    for row in rows:
        for group, name in (("day", row["time"][:10]), ("model", row["model"]),
                            ("key", row["key"])):
            sums = out[group][name]
            sums["requests"] += 1
            for f in FIELDS[1:]:
                sums[f] += int(row[f])
    return out


def api_groups(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    groups = {b["group"]: {f: b[f] for f in FIELDS} for b in report["data"]}
    for b in report["data"]:
        assert b["total_tokens"] == b["prompt_tokens"] + b["completion_tokens"]
    return groups


def page_days(html: str) -> dict[str, dict[str, int]]:
    """The console usage page's daily table."""
    days = {}
    for cells in re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td>((?:<td>[\d,]+</td>){4})</tr>", html):
        values = [int(v.replace(",", "")) for v in re.findall(r"<td>([\d,]+)</td>", cells[1])]
        days[cells[0]] = dict(zip(FIELDS, values))
    return days


def stat(html: str, name: str) -> int:
    found = re.search(rf'id="{name}">([\d,]+)<', html)
    assert found, name
    return int(found.group(1).replace(",", ""))


async def _signin(http: httpx.AsyncClient, page: str, post: str, data: dict[str, str]) -> None:
    form = await http.get(page)
    r = await http.post(post, data={**data, "csrf": csrf_of(form.text)})
    assert r.status_code == 303, r.text


def test_usage_api_matches_the_console_and_its_csv(registry: Path, upstream: str,
                                                   tmp_path: Path) -> None:
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream,
                                 alert_delivery=False)
        async with InProcess(settings) as gw:
            k1, one = gw.key(name="one", credit_micros=10**8, prices=PRICE)
            k2, two = gw.key(name="two", account_id=one.account_id, prices=PRICE)
            other, stranger = gw.key(name="other", credit_micros=10**8, prices=PRICE)
            admin_key, _ = gw.key(name="ops", scope="admin", prices=PRICE)
            traffic = [(k1, "avo-tiny", 8)] * 3 + [(k1, "avo-two", 5)] * 2 + [
                (k2, "avo-tiny", 3)] * 2 + [(other, "avo-two", 8)] * 2
            for key, model, max_tokens in traffic:
                r = await gw.http.post("/v1/completions", headers=auth(key), json={
                    "model": model, "prompt": "Hello there", "max_tokens": max_tokens})
                assert r.status_code == 200, r.text
            with gw.sessions.begin() as s:  # two of the account's charges were made 2 days ago
                first_two = [c.id for c in gw.charges(one.account_id)[:2]]
                s.execute(update(LedgerEntry).where(LedgerEntry.id.in_(first_two))
                          .values(created_at=utcnow() - timedelta(days=2)))
                admins.create_admin(s, "root", "correct horse battery staple")

            api = {g: (await gw.http.get(f"/v1/usage?group_by={g}", headers=auth(k1))).json()
                   for g in ("day", "model", "key")}
            assert len(api["day"]["data"]) == 2 and len(api["model"]["data"]) == 2
            assert {b["group"] for b in api["key"]["data"]} == {one.id, two.id}
            # the customer console of the same account: its page and its CSV
            console = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app),
                                        base_url="http://gateway")
            await _signin(console, "/console/signin", "/console/signin", {"key": k2})
            page = (await console.get("/console/usage?days=30")).text
            exported = csv_groups((await console.get("/console/usage.csv?days=30")).text)
            for group in ("day", "model", "key"):
                assert api_groups(api[group]) == exported[group], group
            assert api_groups(api["day"]) == page_days(page)
            total = api["day"]["total"]
            assert total["requests"] == 7 and total == api["model"]["total"]
            assert (stat(page, "spent"), stat(page, "tokens")) == (
                total["cost_micros"], total["total_tokens"])

            # the admin variant: any account with an admin key, the admin console's CSV
            r = await gw.http.get(f"/v1/admin/usage?account_id={one.account_id}&group_by=key",
                                  headers=auth(admin_key))
            assert r.json() == {**api["key"], "end_time": r.json()["end_time"],
                                "start_time": r.json()["start_time"]}
            every = (await gw.http.get("/v1/admin/usage?group_by=key",
                                       headers=auth(admin_key))).json()
            assert every["account_id"] is None and stranger.id in api_groups(every)
            admin = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app),
                                      base_url="http://gateway")
            await _signin(admin, "/console/admin/signin", "/console/admin/signin",
                          {"name": "root", "password": "correct horse battery staple"})
            everything = csv_groups((await admin.get("/console/admin/usage.csv?days=30")).text)
            assert api_groups(every) == everything["key"]
            await console.aclose()
            await admin.aclose()

    asyncio.run(run())


def test_usage_api_refuses_bad_queries(registry: Path, upstream: str, tmp_path: Path) -> None:
    async def run() -> None:
        settings = load_settings(registry=registry, db_url=f"sqlite:///{tmp_path}/g.db",
                                 secret=SECRET, engine="vllm", upstream=upstream,
                                 alert_delivery=False)
        async with InProcess(settings) as gw:
            key, _ = gw.key(prices=PRICE)
            admin_key, info = gw.key(scope="admin", prices=PRICE)
            now = int(utcnow().timestamp())
            for query, param in [("start_time=yesterday", "start_time"),
                                 ("end_time=-5", "end_time"),
                                 (f"start_time={now}&end_time={now}", "start_time"),
                                 (f"start_time={now - 367 * 86400}", "start_time"),
                                 ("end_time=99999999999999", "end_time"),
                                 ("group_by=week", "group_by")]:
                r = await gw.http.get("/v1/usage?" + query, headers=auth(key))
                assert r.status_code == 400, query
                assert r.json()["error"]["param"] == param, (query, r.json())
            assert (await gw.http.get("/v1/usage")).status_code == 401
            r = await gw.http.get("/v1/admin/usage", headers=auth(key))
            assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
            r = await gw.http.get("/v1/admin/usage?account_id=x", headers=auth(admin_key))
            assert (r.status_code, r.json()["error"]["param"]) == (400, "account_id")
            r = await gw.http.get("/v1/admin/usage?account_id=999", headers=auth(admin_key))
            assert (r.status_code, r.json()["error"]["param"]) == (404, "account_id")
            r = await gw.http.get(f"/v1/usage?start_time={now - 86400}&end_time={now}",
                                  headers=auth(key))
            body = r.json()
            assert r.status_code == 200 and (body["start_time"], body["end_time"]) == (
                now - 86400, now)
            assert body["data"] == [] and body["total"]["requests"] == 0
            assert body["account_id"] != info.account_id

    asyncio.run(run())
