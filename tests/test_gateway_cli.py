"""`avokit keys ...` and `avokit usage` called as the typed functions the CLI wraps."""

from __future__ import annotations

from pathlib import Path

import pytest

from avokit.cli import gateway as cli
from avokit.gateway.db.session import make_db_engine, session_factory
from avokit.gateway.errors import AuthenticationError, ConfigError
from avokit.gateway.services import keys, metering
from avokit.gateway.services.audit import audit_entries

SECRET = "cli-secret-0123456789abcdef"


def test_keys_lifecycle_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AVOKIT_SECRET", SECRET)
    db = f"sqlite:///{tmp_path}/cli.db"
    key = cli.keys_create(name="acme", scope="customer", models=["m"], prices=["m=10:20"],
                          rpm=5, tpm=500, credit=100, expires_days=None, spend_cap=None,
                          cap_period=None, db=db)
    assert key.startswith("sk-avo-")
    sessions = session_factory(make_db_engine(db))
    with sessions() as s:
        info = keys.authenticate(s, SECRET, key)
        (row, account), = keys.list_keys(s)
    assert info.price("m") == (10, 20) and account.credit_micros == 100
    assert row.key_hash != key and key not in str(row.__dict__)  # only the HMAC is stored
    assert cli.keys_topup(info.id, 50, db=db) == 150
    new = cli.keys_rotate(info.id, grace_s=0.0, db=db)
    with sessions() as s:
        assert keys.authenticate(s, SECRET, new).account_id == info.account_id
        with pytest.raises(AuthenticationError):  # grace 0: the old key is already expired
            keys.authenticate(s, SECRET, key)
    with sessions() as s:
        new_id = keys.authenticate(s, SECRET, new).id
    cli.keys_revoke(new_id, db=db)
    with sessions() as s:
        actions = [e.action for e in audit_entries(s)]
    assert actions == ["create", "topup", "topup", "create", "rotate", "revoke"]
    capsys.readouterr()
    cli.usage(key=None, since=None, as_csv=True, db=db)
    assert capsys.readouterr().out.splitlines()[0].startswith("time,key,model")
    with pytest.raises(ConfigError, match="--price"):
        cli.parse_prices(["m=ten:20"])
    with pytest.raises(ConfigError, match="scope"):
        cli.keys_create(name="x", scope="root", models=["*"], prices=[], rpm=1, tpm=1,
                        credit=0, expires_days=None, spend_cap=None, cap_period=None, db=db)


def test_serve_log_options(tmp_path: Path) -> None:
    """`avokit serve` writes one access line per request by default; `--no-access-log`
    writes none (the server's other info lines stay) and still bills every request."""
    import sys

    import httpx

    sys.path.insert(0, str(Path(__file__).parent))
    from gateway_support import SECRET as SERVE_SECRET
    from gateway_support import Server, auth, build_registry

    from avokit.gateway.db.session import run_migrations

    registry = build_registry(tmp_path / "registry").parent
    db = f"sqlite:///{tmp_path}/serve.db"
    run_migrations(db)
    sessions = session_factory(make_db_engine(db))
    with sessions.begin() as s:
        key, info = keys.create_key(s, SERVE_SECRET, name="logs", credit_micros=10_000_000,
                                    prices={"*": {"input": 1_000_000, "output": 1_000_000}})
    body = {"model": "avo-tiny", "prompt": "Hello", "max_tokens": 2}
    for name, flags in [("default", []), ("quiet", ["--no-access-log"])]:
        log = tmp_path / f"{name}.log"
        server = Server({"AVOKIT_SECRET": SERVE_SECRET, "OMP_NUM_THREADS": "1"}, log,
                        cli=["--registry", str(registry), "--db", db, *flags]).start()
        try:
            r = httpx.post(server.url + "/v1/completions", json=body, headers=auth(key),
                           timeout=60)
            assert r.status_code == 200, r.text
        finally:
            server.stop()
        text = log.read_text()
        assert "Uvicorn running on" in text  # info lines are written either way
        assert ('"POST /v1/completions HTTP/1.1" 200' in text) == (name == "default"), text
    with sessions() as s:
        assert len(metering.usage(s, account_id=info.account_id)) == 2  # both billed
