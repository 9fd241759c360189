"""Process leases: which serving process holds which reservations, and which processes died.

Every serving process registers an :class:`~avokit.gateway.db.models.Instance` row at
start-up and renews its heartbeat every ``lease_s / 3``; each reservation it makes names it
as owner. A process is dead when

* it ran on this host (same hostname and boot) and its pid is gone, or now belongs to a
  process that started at another time: known at once, so a restarted server settles its
  predecessor's reservations during its own start-up; or
* it ran on another host (or on this one without procfs, where the start time cannot be
  checked) and its heartbeat is older than ``lease_s``.

A process on this host whose pid is alive with the start time it registered is never dead,
however old its heartbeat: a worker still starting up, or one whose renewals a loaded machine
delays, keeps its reservations (settling them at what was delivered so far would charge its
running requests for their prompt only).

The reservations of dead processes are settled (billing what they delivered) and their rows
removed; a process that stops cleanly removes its own row. A process that finds its row gone
at its next renewal registers it again under the same id.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, select, update

from avokit.gateway.db.models import Instance, Reservation
from avokit.gateway.db.session import read_connection, write_transaction
from avokit.gateway.services import metering
from avokit.gateway.services.audit import as_utc, utcnow

log = logging.getLogger("avokit.gateway")
_INST, _RES = cast(Table, Instance.__table__), cast(Table, Reservation.__table__)  # typed FromClause


def _host() -> str:
    # the boot id tells apart a rebooted host (whose old pids are all dead) from this boot
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "-"
    return f"{socket.gethostname()}/{boot}"[:300]


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot), or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no procfs: alive if signal 0 reaches it
            try:
                os.kill(pid, 0)
                return "?"
            except ProcessLookupError:
                return None
            except OSError:
                return "?"
        return None
    # the command name (field 2) may hold spaces or parentheses: split after its last ')'
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Lease:
    """This process's registration."""

    id: str
    host: str
    pid: int
    # a renewal still running when the process stops cleanly must not register it again
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False,
                                      compare=False)


def _insert(conn: Connection, lease: Lease) -> None:
    now = utcnow()
    conn.execute(_INST.insert().values(id=lease.id, host=lease.host, pid=lease.pid,
                                       proc_start=_proc_start(lease.pid) or "?",
                                       started_at=now, heartbeat_at=now))


def register(db: Engine) -> Lease:
    """Register this process; its reservations name the returned lease's id."""
    lease = Lease("inst_" + secrets.token_hex(12), _host(), os.getpid())
    with write_transaction(db) as conn:
        _insert(conn, lease)
    return lease


def heartbeat(db: Engine, lease: Lease) -> bool:
    """Renew the lease; True if its row was gone and had to be registered again."""
    with lease._lock, write_transaction(db) as conn:
        if lease._stopped.is_set():
            return False
        renewed = conn.execute(update(_INST).where(_INST.c.id == lease.id)
                               .values(heartbeat_at=utcnow())).rowcount
        if renewed:
            return False
        # another process took this one for dead: without its row every later reclaim would
        # settle this live process's reservations as orphans
        _insert(conn, lease)
    log.warning("the lease of this serving process (%s) was reclaimed while it was alive; "
                "registered again (reservations it held may have been settled elsewhere)",
                lease.id)
    return True


def unregister(db: Engine, lease: Lease) -> None:
    """Remove the lease at a clean stop (after its requests were settled)."""
    with lease._lock, write_transaction(db) as conn:
        lease._stopped.set()
        conn.execute(delete(_INST).where(_INST.c.id == lease.id))


def dead_instances(db: Engine, lease_s: float, me: Lease | None = None) -> list[str]:
    """Ids of registered processes that are dead (see the module docstring)."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    host = _host()
    with read_connection(db) as conn:
        rows = list(conn.execute(select(_INST.c.id, _INST.c.host, _INST.c.pid,
                                        _INST.c.proc_start, _INST.c.heartbeat_at)))
        # owners with no row left (a process that stopped with a request still open): a
        # process registers before it reserves, so a live owner always has its row
        orphans = list(conn.scalars(
            select(_RES.c.owner).distinct().where(
                _RES.c.status == "open", _RES.c.owner.is_not(None),
                _RES.c.owner.not_in(select(_INST.c.id)))))
    dead = list(orphans)
    for inst_id, inst_host, pid, proc_start, beat in rows:
        if me is not None and inst_id == me.id:
            continue
        if inst_host == host:
            started = _proc_start(pid)
            if started not in (proc_start, "?"):  # gone, or the pid now names another process
                dead.append(inst_id)
                continue
            if started != "?":  # alive, and the very process that registered: a heartbeat
                continue        # late only because start-up or load delayed it proves nothing
        beat_at = as_utc(beat)
        if beat_at is not None and beat_at < cutoff:
            dead.append(inst_id)
    return dead


def reclaim(db: Engine, lease_s: float, stale_s: float, me: Lease | None = None) -> int:
    """Settle the reservations of dead processes (and stale ownerless ones); returns how many."""
    dead = dead_instances(db, lease_s, me)
    settled = metering.reconcile(db, stale_s, owners=dead)
    if dead:
        # ids that never had a row (orphans) simply match nothing here
        with write_transaction(db) as conn:
            conn.execute(delete(_INST).where(_INST.c.id.in_(dead)))
        log.warning("reclaimed the leases of %d stopped serving processes (%d reservations "
                    "settled)", len(dead), settled)
    return settled
