"""Reservations of a dead serving process are reclaimed when it is known dead (at the next
start on the same host, or when its lease runs out), not after a fixed delay."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import openai
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, Server, build_registry, fresh_db, run_mock_upstream

from avokit.gateway.db.models import Instance, LedgerEntry, Reservation
from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory
from avokit.gateway.services import keys, leases, metering
from avokit.gateway.services.audit import as_utc, utcnow
from avokit.gateway.services.keys import KeyInfo

ROOT = Path(__file__).resolve().parents[1]
MODEL = "avo-tiny"
PRICE = {"*": {"input": 1000, "output": 3000}}


def _migrated_with_key(db: str) -> tuple[Engine, sessionmaker[Session], str, KeyInfo]:
    """The database at ``db`` migrated, its engine and sessions, and one priced key ``k``."""
    run_migrations(db)
    engine = make_db_engine(db)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        key, info = keys.create_key(s, SECRET, name="k", prices=PRICE, credit_micros=10**7)
    return engine, sessions, key, info


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from run_mock_upstream(tmp_path_factory.mktemp("upstream"))


def test_restart_reclaims_a_killed_process_reservations_at_once(tmp_path: Path,
                                                                upstream: str) -> None:
    """kill -9 mid-stream, restart at once with hour-long stale and lease settings: the new
    process settles its dead predecessor's reservation during start-up."""
    root = tmp_path / "registry"
    build_registry(root, MODEL)
    db = f"sqlite:///{tmp_path}/g.db"
    engine, sessions, key, info = _migrated_with_key(db)
    env = {"AVOKIT_REGISTRY": str(root), "AVOKIT_DB_URL": db, "AVOKIT_SECRET": SECRET,
           "AVOKIT_ENGINE": "vllm", "AVOKIT_UPSTREAM": upstream,
           "AVOKIT_RESERVATION_STALE_S": "3600", "AVOKIT_LEASE_S": "3600",
           "AVOKIT_RECONCILE_INTERVAL_S": "3600"}
    first = Server(env, tmp_path / "first.log").start()
    client = openai.OpenAI(base_url=first.url + "/v1", api_key=key, max_retries=0)
    got = 0
    for chunk in client.completions.create(model=MODEL, prompt="Hello", max_tokens=40,
                                           stream=True):
        got += 1 if chunk.choices and chunk.choices[0].text else 0
        if got == 6:
            break
    time.sleep(0.2)
    first.kill9()
    with sessions() as s:
        (res,) = s.scalars(select(Reservation).where(Reservation.key_id == info.id))
        assert res.status == "open" and res.delivered_tokens >= 6
    second = Server(env, tmp_path / "second.log").start()  # returns once /health answers
    try:
        with sessions() as s:
            done = s.get(Reservation, res.id)
            assert done is not None and done.status == "settled"
            charge = s.scalars(select(LedgerEntry).where(
                LedgerEntry.reservation_id == res.id)).one()
            assert charge.completion_tokens == done.delivered_tokens
            assert [i.pid for i in s.scalars(select(Instance))] == [second.proc.pid]
    finally:
        second.stop()
    with sessions() as s:  # a clean stop removes its own lease
        assert list(s.scalars(select(Instance))) == []
    engine.dispose()


def test_expired_and_orphaned_leases_are_reclaimed_live_ones_kept(tmp_path: Path) -> None:
    engine, sessions, _, info = _migrated_with_key(f"sqlite:///{tmp_path}/g.db")
    with sessions.begin() as s:
        now = utcnow()
        for inst_id, beat in [("inst_elsewhere_dead", now - timedelta(seconds=120)),
                              ("inst_elsewhere_live", now)]:
            s.add(Instance(id=inst_id, host="another-host/boot", pid=1, proc_start="1",
                           started_at=now, heartbeat_at=beat))
    holds = {owner: metering.reserve(engine, account_id=info.account_id, key_id=info.id,
                                     model=MODEL, prompt_tokens=5, max_tokens=5, price_in=1000,
                                     price_out=3000, owner=owner)
             for owner in ("inst_elsewhere_dead", "inst_elsewhere_live", "inst_gone")}
    me = leases.register(engine)
    assert leases.reclaim(engine, lease_s=30, stale_s=3600, me=me) == 2
    with sessions() as s:
        status = {o: s.get(Reservation, h.id).status for o, h in holds.items()}  # type: ignore
        alive = {i.id for i in s.scalars(select(Instance))}
    assert status == {"inst_elsewhere_dead": "settled", "inst_elsewhere_live": "open",
                      "inst_gone": "settled"}
    assert alive == {"inst_elsewhere_live", me.id}
    engine.dispose()


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_live_process_here_keeps_its_lease_however_old_its_heartbeat(tmp_path: Path,
                                                                       kind: str) -> None:
    """A sibling still starting up (or whose renewals a loaded machine delays) is alive: its
    running request is not settled at what it delivered so far; a gone pid, a pid that now
    names another process and a stale lease on another host are reclaimed."""
    engine, sessions, _, info = _migrated_with_key(fresh_db(kind, tmp_path))
    sibling = leases.register(engine)  # this live process, as a worker not yet renewed
    here, stale = sibling.host, utcnow() - timedelta(seconds=120)
    assert leases._proc_start(sibling.pid) not in (None, "?")  # the start time is checked
    with sessions.begin() as s:
        s.get_one(Instance, sibling.id).heartbeat_at = stale
        for inst_id, host, pid, start in [("inst_gone_here", here, _exited_pid(), "1"),
                                          ("inst_pid_reused", here, sibling.pid, "1"),
                                          ("inst_elsewhere", "another-host/boot", 1, "1")]:
            s.add(Instance(id=inst_id, host=host, pid=pid, proc_start=start,
                           started_at=stale, heartbeat_at=stale))
    holds = {owner: metering.reserve(engine, account_id=info.account_id, key_id=info.id,
                                     model=MODEL, prompt_tokens=5, max_tokens=5, price_in=1000,
                                     price_out=3000, owner=owner)
             for owner in (sibling.id, "inst_gone_here", "inst_pid_reused", "inst_elsewhere")}
    me = leases.register(engine)
    assert leases.reclaim(engine, lease_s=30, stale_s=3600, me=me) == 3
    with sessions() as s:
        status = {o: s.get_one(Reservation, h.id).status for o, h in holds.items()}
        alive = {i.id for i in s.scalars(select(Instance))}
    assert status == {sibling.id: "open", "inst_gone_here": "settled",
                      "inst_pid_reused": "settled", "inst_elsewhere": "settled"}
    assert alive == {sibling.id, me.id}
    assert metering.settle_hold(engine, holds[sibling.id], 5) is not None  # its owner bills it
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_process_whose_row_was_removed_registers_again_at_its_next_heartbeat(
        tmp_path: Path, kind: str) -> None:
    engine, sessions, _, info = _migrated_with_key(fresh_db(kind, tmp_path))
    lease = leases.register(engine)
    with sessions.begin() as s:
        s.get_one(Instance, lease.id).heartbeat_at = utcnow() - timedelta(seconds=120)
    renewed_again = leases.heartbeat(engine, lease)  # an ordinary renewal
    with sessions() as s:
        beat = as_utc(s.get_one(Instance, lease.id).heartbeat_at)
        assert beat is not None and beat > utcnow() - timedelta(seconds=60)
    with sessions.begin() as s:  # as a sibling's mistaken reclaim would
        s.delete(s.get_one(Instance, lease.id))
    registered_again = leases.heartbeat(engine, lease)
    with sessions() as s:
        row = s.get(Instance, lease.id)
        assert row is not None and (row.host, row.pid) == (lease.host, lease.pid)
    assert (renewed_again, registered_again) == (False, True)
    # its later reservations are no orphans for the next reclaim
    hold = metering.reserve(engine, account_id=info.account_id, key_id=info.id, model=MODEL,
                            prompt_tokens=5, max_tokens=5, price_in=1000, price_out=3000,
                            owner=lease.id)
    assert leases.reclaim(engine, lease_s=30, stale_s=3600, me=leases.register(engine)) == 0
    with sessions() as s:
        assert s.get_one(Reservation, hold.id).status == "open"
    leases.unregister(engine, lease)  # a clean stop: a renewal after it registers nothing
    assert leases.heartbeat(engine, lease) is False
    with sessions() as s:
        assert s.get(Instance, lease.id) is None
    engine.dispose()
