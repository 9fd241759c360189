"""`avokit keys ...` and `avokit usage` called as the typed functions the CLI wraps."""

from __future__ import annotations

from pathlib import Path

import pytest

from avokit.cli import gateway as cli
from avokit.gateway.db.session import make_db_engine, session_factory
from avokit.gateway.errors import ConfigError
from avokit.gateway.services import keys
from avokit.gateway.services.audit import audit_entries

SECRET = "cli-secret-0123456789abcdef"


def test_keys_lifecycle_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AVOKIT_SECRET", SECRET)
    db = f"sqlite:///{tmp_path}/cli.db"
    key = cli.keys_create(name="acme", scope="customer", models=["m"], prices=["m=10:20"],
                          rpm=5, tpm=500, credit=100, expires_days=None, db=db)
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
        with pytest.raises(Exception):  # grace 0: the old key is already expired
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
                        credit=0, expires_days=None, db=db)
