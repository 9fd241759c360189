"""``avokit accounts ...`` (an account's alert webhook and thresholds) and ``avokit alerts ...``
(the outbox: list it, deliver it): thin views over the gateway's alert services."""

from __future__ import annotations

import asyncio
import secrets

import typer
from rich.console import Console
from rich.table import Table

from avokit.cli.gateway import DB_HELP, _sessions, _settings
from avokit.gateway.errors import ConfigError


def accounts_list(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Accounts: balance, held credit and alert settings."""
    from sqlalchemy import select

    from avokit.gateway.db.models import Account

    with _sessions(_settings(db))() as session:
        rows = list(session.scalars(select(Account).order_by(Account.id)))
    table = Table(title="accounts")
    for col in ("id", "name", "credit", "reserved", "alert_url", "low credit", "cap %"):
        table.add_column(col)
    for a in rows:
        table.add_row(str(a.id), a.name, str(a.credit_micros), str(a.reserved_micros),
                      a.alert_url or "", "" if a.alert_low_credit_micros is None
                      else str(a.alert_low_credit_micros),
                      ",".join(str(p) for p in a.alert_cap_percents or []) or
                      ("80,100 (default)" if a.alert_url else ""))
    Console().print(table)


def accounts_alerts(
    account_id: int = typer.Argument(..., help="account id (avokit accounts list)"),
    url: str | None = typer.Option(
        None, "--url", help="webhook the alerts are POSTed to: https:// (http:// only to "
        "localhost)"),
    off: bool = typer.Option(False, "--off", help="turn the account's alerts off"),
    low_credit: int | None = typer.Option(
        None, "--low-credit", help="alert when a charge takes the balance below this many "
        "micro-units"),
    cap_percents: str | None = typer.Option(
        None, "--cap-percents", help="alert when a capped key's period spend reaches these "
        "percents of its cap (default 80,100)"),
    rotate_secret: bool = typer.Option(False, "--rotate-secret",
                                       help="derive a new signing secret (the old one stops)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Set where an account's alerts go and when they fire; prints the signing secret."""
    from avokit.gateway.services import alerts, webhooks

    if off == (url is not None):
        raise ConfigError("give either --url URL (with its thresholds) or --off")
    if off and (low_credit is not None or cap_percents is not None):
        raise ConfigError("--off: takes no thresholds")
    percents = alerts.parse_percents(cap_percents) if cap_percents is not None else None
    settings = _settings(db)
    with _sessions(settings).begin() as session:
        account = alerts.configure(session, account_id, url=url, low_credit_micros=low_credit,
                                   cap_percents=percents, rotate_secret=rotate_secret)
        version = account.alert_secret_version
    err = Console(stderr=True)
    if off:
        err.print(f"account {account_id}: alerts off")
        return
    err.print(f"account {account_id}: alerts to {url}; verify each POST with this signing "
              "secret (webhook-signature header, Standard Webhooks scheme):")
    print(webhooks.signing_secret(settings.require_secret(), account_id, version))


def alerts_list(
    account: int | None = typer.Option(None, "--account", help="only this account"),
    status: str | None = typer.Option(
        None, "--status", help="pending | delivered | failed | dropped"),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """The newest alerts in the outbox with their delivery state."""
    from avokit.gateway.db.session import make_db_engine, run_migrations
    from avokit.gateway.services import webhooks

    if status is not None and status not in webhooks.STATUSES:
        raise ConfigError(f"--status: must be one of {', '.join(webhooks.STATUSES)}, "
                          f"not {status!r}")
    settings = _settings(db)
    run_migrations(settings.db_url)
    engine = make_db_engine(settings.db_url)
    try:
        rows = webhooks.outbox(engine, account, status, limit)
    finally:
        engine.dispose()
    table = Table(title="alert outbox")
    for col in ("id", "created (UTC)", "account", "key", "kind", "status", "attempts",
                "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.id, str(r.created_at)[:19], str(r.account_id), r.key_id or "", r.kind,
                      r.status, str(r.attempts), r.last_error or "")
    Console().print(table)


def alerts_deliver(
    once: bool = typer.Option(False, "--once", help="one pass over the due rows, then exit"),
    poll_s: float | None = typer.Option(None, "--poll-s", help="seconds between passes"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Post due alerts to their webhooks (beside or instead of `avokit serve`'s own worker;
    any number may run at once)."""
    from avokit.gateway.db.session import make_db_engine, run_migrations
    from avokit.gateway.services.webhooks import AlertDelivery

    settings = _settings(db)
    run_migrations(settings.db_url)
    engine = make_db_engine(settings.db_url)
    worker = AlertDelivery(engine, settings.require_secret(), "cli_" + secrets.token_hex(8),
                           settings.delivery_policy())
    try:
        if once:
            counts = asyncio.run(worker.run_once())
            Console(stderr=True).print(", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                       or "nothing due")
        else:
            asyncio.run(worker.run(poll_s or settings.alert_poll_s))
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    """Add the ``accounts`` and ``alerts`` groups to the avokit CLI."""
    accounts = typer.Typer(help="Gateway accounts: list them, set their alerts.",
                           no_args_is_help=True)
    accounts.command("list")(accounts_list)
    accounts.command("alerts")(accounts_alerts)
    app.add_typer(accounts, name="accounts")
    group = typer.Typer(help="Spend alerts: the outbox and its webhook delivery.",
                        no_args_is_help=True)
    group.command("list")(alerts_list)
    group.command("deliver")(alerts_deliver)
    app.add_typer(group, name="alerts")
