"""``avokit serve``, ``avokit keys ...``, ``avokit usage`` and ``avokit admin ...``: thin views
over the gateway services."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from avokit.gateway.errors import ConfigError
from avokit.gateway.settings import GatewaySettings, load_settings

DB_HELP = "database URL (default AVOKIT_DB_URL or sqlite:///avokit-gateway.db)"


def _settings(db: str | None, env_file: Path | None = None) -> GatewaySettings:
    return load_settings(env_file, db_url=db)


def _sessions(settings: GatewaySettings) -> Any:
    from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory

    run_migrations(settings.db_url)
    return session_factory(make_db_engine(settings.db_url))


def parse_prices(items: list[str]) -> dict[str, dict[str, int]]:
    """``MODEL=IN:OUT`` (micro-units per 1M tokens; MODEL may be ``*``) into the price table."""
    prices: dict[str, dict[str, int]] = {}
    for item in items:
        try:
            model, pair = item.split("=", 1)
            price_in, price_out = (int(x) for x in pair.split(":"))
        except ValueError as err:
            raise ConfigError(f"--price {item!r}: expected MODEL=IN:OUT with integers") from err
        prices[model] = {"input": price_in, "output": price_out}
    return prices or {"*": {"input": 0, "output": 0}}


class LogLevel(str, Enum):
    """uvicorn's log levels (the gateway's own loggers follow them)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def serve(
    registry: Path = typer.Option(None, "--registry", help="model registry directory"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(1, "--workers", min=1),
    engine: str | None = typer.Option(None, "--engine", help="transformers | vllm"),
    upstream: str | None = typer.Option(None, "--upstream", help="vLLM server URL"),
    dtype: str | None = typer.Option(
        None, "--dtype", help="in-process engine: auto (bf16 where the CPU or GPU computes it "
        "natively, else float32; default AVOKIT_DTYPE) | float32 | bfloat16 | float16"),
    redis: str | None = typer.Option(
        None, "--redis", help="Redis URL: rpm/tpm limits shared by every replica using it "
        "(default AVOKIT_REDIS_URL; unset = per-process limits)"),
    max_body_bytes: int | None = typer.Option(
        None, "--max-body-bytes", help="largest request body; larger ones get 413"),
    env_file: Path | None = typer.Option(None, "--env-file", help="settings file"),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", case_sensitive=False,
                                       help="server log level"),
    access_log: bool = typer.Option(
        True, "--access-log/--no-access-log",
        help="one log line per HTTP request, ending with its request id (the ledger records "
        "every billed request either way)"),
    metrics_bind: str | None = typer.Option(
        None, "--metrics-bind", help="HOST:PORT of a separate, token-less Prometheus listener "
        "summing every worker (default AVOKIT_METRICS_BIND; bind it to an admin network)"),
) -> None:
    """Run the OpenAI-compatible gateway (FastAPI + uvicorn)."""
    import os

    import uvicorn

    from avokit.gateway import metrics_admin
    from avokit.gateway.db.session import run_migrations

    settings = load_settings(env_file, registry=registry, db_url=db, engine=engine,
                             upstream=upstream, redis_url=redis, max_body_bytes=max_body_bytes,
                             dtype=dtype, metrics_bind=metrics_bind)
    settings.require_secret()
    run_migrations(settings.db_url)  # once, before workers start
    # before the app (and prometheus-client) is imported: several workers write their
    # metrics to files that each exposition sums; one keeps them in the process
    if workers > 1:
        path = metrics_admin.prepare_multiprocess_dir()
        if settings.metrics_bind:
            metrics_admin.serve_admin_metrics(settings.metrics_bind,
                                              metrics_admin.multiprocess_registry(path))
    else:
        metrics_admin.single_process_values()
    from avokit.gateway.app import create_app

    logging: dict[str, Any] = {"log_level": log_level.value, "access_log": access_log,
               "log_config": _log_config()}
    if workers == 1:
        app = create_app(settings)
        if settings.metrics_bind:  # metrics are on: settings refuse a listener without them
            metrics_admin.serve_admin_metrics(settings.metrics_bind, app.state.metrics.registry)
        uvicorn.run(app, host=host, port=port, **logging)
        return
    # worker processes rebuild the app from the environment
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            os.environ[f"AVOKIT_{name.upper()}"] = str(value)
    for name in ("secret", "metrics_token"):  # model_dump masks secrets
        os.environ[f"AVOKIT_{name.upper()}"] = getattr(settings, name).get_secret_value()
    uvicorn.run("avokit.gateway.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, **logging)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with each access line ending in its request id."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["request_id"] = {
        "()": "avokit.gateway.requestid.RequestIdFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("request_id")
    access = config["formatters"]["access"]
    access["fmt"] = access["fmt"] + " %(request_id)s"
    return config


def keys_create(
    name: str = typer.Option(..., "--name"),
    scope: str = typer.Option("customer", "--scope", help="customer | eval | admin"),
    models: list[str] = typer.Option(["*"], "--model", help="allowed model (repeat); * = all"),
    prices: list[str] = typer.Option([], "--price", help="MODEL=IN:OUT micro-units per 1M tokens"),
    rpm: int = typer.Option(60, "--rpm"),
    tpm: int = typer.Option(100_000, "--tpm"),
    credit: int = typer.Option(0, "--credit", help="initial prepaid credit, micro-units"),
    expires_days: float | None = typer.Option(None, "--expires-days"),
    spend_cap: int | None = typer.Option(
        None, "--spend-cap", help="most this key may be charged per --cap-period, micro-units"),
    cap_period: str | None = typer.Option(
        None, "--cap-period", help="day | month (UTC calendar) for --spend-cap"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> str:
    """Create a key; the key is printed once and never stored."""
    from avokit.gateway.services import keys

    if credit and not prices:
        raise ConfigError("--price: a key with --credit needs its prices (MODEL=IN:OUT, or "
                          "'*=0:0' for a free key on purpose)")
    if spend_cap is not None and cap_period is None:
        cap_period = "month"
    settings = _settings(db)
    expires = (datetime.now(timezone.utc) + timedelta(days=expires_days)) if expires_days else None
    with _sessions(settings).begin() as session:
        plaintext, info = keys.create_key(
            session, settings.require_secret(), name=name, scope=scope,  # type: ignore[arg-type]
            models=list(models), prices=parse_prices(list(prices)), rpm=rpm, tpm=tpm,
            credit_micros=credit, expires_at=expires, spend_cap_micros=spend_cap,
            spend_cap_period=cap_period)
    if not prices:  # parse_prices made it free on purpose: say so, it is never implied silently
        Console(stderr=True).print("no --price given: this key is free for every model "
                                   "('*'=0:0)")
    Console(stderr=True).print(f"created {info.id} ({info.scope}); the key is shown only once:")
    print(plaintext)
    return plaintext


def keys_update(
    key_id: str = typer.Argument(...),
    spend_cap: int | None = typer.Option(
        None, "--spend-cap", help="most this key may be charged per --cap-period, micro-units"),
    cap_period: str = typer.Option("month", "--cap-period", help="day | month (UTC calendar)"),
    no_spend_cap: bool = typer.Option(False, "--no-spend-cap", help="remove the key's cap"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Change a key's spend cap (applies from the next request, on every replica)."""
    from avokit.gateway.services import keys

    if no_spend_cap == (spend_cap is not None):
        raise ConfigError("give either --spend-cap MICROS (with --cap-period) or --no-spend-cap")
    with _sessions(_settings(db)).begin() as session:
        keys.set_spend_cap(session, key_id, spend_cap, None if no_spend_cap else cap_period)
    Console(stderr=True).print(f"{key_id}: " + ("no spend cap" if no_spend_cap else
                                                f"spend cap {spend_cap} per {cap_period}"))


def keys_list(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """List keys (ids, never secrets) with their account balance."""
    from avokit.gateway.services import keys

    with _sessions(_settings(db))() as session:
        rows = keys.list_keys(session)
    table = Table(title="API keys")
    for col in ("id", "name", "scope", "models", "rpm", "tpm", "credit", "reserved", "state"):
        table.add_column(col)
    for key, account in rows:
        state = "revoked" if key.revoked_at else ("expires " + str(key.expires_at)[:19]
                                                  if key.expires_at else "active")
        table.add_row(key.id, key.name, key.scope, ",".join(key.allowed_models), str(key.rpm),
                      str(key.tpm), str(account.credit_micros), str(account.reserved_micros), state)
    Console().print(table)


def keys_revoke(key_id: str = typer.Argument(...),
                db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Revoke a key now (all replicas)."""
    from avokit.gateway.services import keys

    with _sessions(_settings(db)).begin() as session:
        keys.revoke(session, key_id)
    Console().print(f"revoked {key_id}")


def keys_rotate(key_id: str = typer.Argument(...),
                grace_s: float = typer.Option(3600.0, "--grace-s", help="old key stays valid"),
                db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> str:
    """Issue a replacement key; the old one expires after the grace period."""
    from avokit.gateway.services import keys

    settings = _settings(db)
    with _sessions(settings).begin() as session:
        plaintext, info = keys.rotate(session, settings.require_secret(), key_id, grace_s)
    Console(stderr=True).print(f"{key_id} -> {info.id}; the new key is shown only once:")
    print(plaintext)
    return plaintext


def keys_topup(key_id: str = typer.Argument(...),
               amount: int = typer.Argument(..., help="micro-units"),
               db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> int:
    """Add prepaid credit to the key's account."""
    from avokit.gateway.services import metering

    with _sessions(_settings(db)).begin() as session:
        balance = metering.topup(session, key_id, amount)
    Console().print(f"{key_id}: balance {balance} micro-units")
    return balance


def usage(
    key: str | None = typer.Option(None, "--key", help="key id"),
    since: datetime | None = typer.Option(None, "--since", help="ISO date/time (UTC)"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    # Annotated, so a direct call (tests, scripts) that leaves it out gets None, not an Option
    account: Annotated[int | None, typer.Option(
        "--account", help="account id (every key of it)")] = None,
) -> None:
    """Billed usage from the ledger."""
    from avokit.gateway.services import metering
    from avokit.gateway.services.usage import CSV_HEADER, usage_values, write_usage_csv

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    with _sessions(_settings(db))() as session:
        rows = metering.usage(session, key, since, account_id=account)
    if as_csv:  # the same function as the web console's CSV download
        write_usage_csv(rows, sys.stdout)
        return
    table = Table(title="usage")
    for col in CSV_HEADER:
        table.add_column(col)
    for row in usage_values(rows):
        table.add_row(*(str(v) for v in row))
    total = sum(r.cost_micros for r in rows)
    table.caption = f"{len(rows)} requests, {total} micro-units"
    Console().print(table)


def admin_create(
    name: str = typer.Option(..., "--name", help="administrator name for the web console"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from the first line of stdin "
        "(scripts); otherwise it is prompted for, twice, without echo"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Create a web-console administrator (/console/admin); there is no default one."""
    from avokit.gateway.services import admins

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _sessions(_settings(db)).begin() as session:
        admins.create_admin(session, name, password)
    Console(stderr=True).print(f"created administrator {name!r}: sign in at /console/admin")


ADMIN_NAME_OPTION = typer.Option(..., "--name", help="the administrator's name")


def admin_list(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Web-console administrators: name, created, disabled."""
    from avokit.gateway.services import admins

    table = Table(title="administrators")
    for col in ("name", "created", "disabled"):
        table.add_column(col)
    with _sessions(_settings(db))() as session:
        for a in admins.list_admins(session):
            table.add_row(a.name, a.created_at.isoformat(timespec="seconds"),
                          a.disabled_at.isoformat(timespec="seconds") if a.disabled_at else "")
    Console().print(table)


def _set_admin_disabled(name: str, db: str | None, disabled: bool) -> None:
    from avokit.gateway.services import admins

    with _sessions(_settings(db)).begin() as session:
        admins.set_disabled(session, name, disabled)
    Console(stderr=True).print(f"{'disabled' if disabled else 'enabled'} administrator {name!r}")


def admin_disable(name: str = ADMIN_NAME_OPTION,
                  db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Disable an administrator: sign-ins refused, open sessions end at their next page."""
    _set_admin_disabled(name, db, True)


def admin_enable(name: str = ADMIN_NAME_OPTION,
                 db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Re-enable a disabled administrator."""
    _set_admin_disabled(name, db, False)


def register(app: typer.Typer) -> None:
    """Add ``serve``, the ``keys`` group and ``usage`` to the avokit CLI."""
    app.command("serve")(serve)
    group = typer.Typer(help="Gateway API keys: create, list, revoke, rotate, top up.",
                        no_args_is_help=True)
    group.command("create")(keys_create)
    group.command("list")(keys_list)
    group.command("update")(keys_update)
    group.command("revoke")(keys_revoke)
    group.command("rotate")(keys_rotate)
    group.command("topup")(keys_topup)
    app.add_typer(group, name="keys")
    app.command("usage")(usage)
    admin = typer.Typer(help="Web-console administrators.", no_args_is_help=True)
    admin.command("create")(admin_create)
    admin.command("list")(admin_list)
    admin.command("disable")(admin_disable)
    admin.command("enable")(admin_enable)
    app.add_typer(admin, name="admin")
