"""Test support for the web console: a real `avokit serve` with a tiny released model (or a
real release, :class:`Console`'s ``release``), its customers and an administrator (created
through the CLI command), and HTTP sign-ins."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from gateway_support import SECRET, Server, build_registry

ADMIN_NAME = "root"
ADMIN_PASSWORD = "correct horse battery staple"
# micro-units per 1M tokens: 2 and 6 per token, so an answer costs a few hundred
PRICES = {"*": {"input": 2_000_000, "output": 6_000_000}}


def csrf_of(html: str) -> str:
    """The CSRF token a console page carries (its meta tag)."""
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]*)"', html)
    assert found, html[:500]
    return found.group(1)


def _with_evaluation(model_dir: Path) -> None:
    """Give the test release a per-domain evaluation, a pretrained start and two teachers, as a
    real release has (release.json lists no checksum of itself, so the release stays servable)."""
    from avokit.contracts.metrics import TeacherLineage
    from avokit.contracts.release import read_release_manifest

    manifest = read_release_manifest(model_dir)
    teachers = [TeacherLineage(name="gemma-3-270m", kind="registry", license="Gemma",
                               upstream="google/gemma-3-270m", fingerprint="a" * 64),
                TeacherLineage(name="qwen2.5-coder-0.5b", kind="registry", license="Apache-2.0",
                               upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct", fingerprint="b" * 64)]
    start = TeacherLineage(name="smollm2-135m", kind="registry", license="Apache-2.0",
                           upstream="HuggingFaceTB/SmolLM2-135M-Instruct", fingerprint="c" * 64)
    evaluation = manifest.eval.model_copy(update={
        "bpb": {"student": 1.82, "baseline": 1.95},
        "domain_bpb": {"student": {"code": 1.41, "english": 1.90, "german": 2.12},
                       "baseline": {"code": 1.55, "english": 2.01, "german": 2.30}},
        "tasks": {"toy": 0.5}})
    lineage = manifest.lineage.model_copy(update={"teachers": teachers, "pretrained_start": start})
    manifest.model_copy(update={"eval": evaluation, "lineage": lineage}).write(model_dir)


def _served_release(registry: Path, release: Path) -> str:
    """Link a real release (``REGISTRY/<name>`` from `avokit release`) into ``registry`` under
    its manifest's name, unchanged (the gateway checks every file's sha256); returns the name."""
    from avokit.contracts.release import read_release_manifest

    name = read_release_manifest(release).name
    registry.mkdir(parents=True, exist_ok=True)
    (registry / name).symlink_to(release.resolve(), target_is_directory=True)
    return name


class Console:
    """One served gateway with two customer accounts and one administrator.

    It serves the tiny random fixture release ``avo-tiny`` (fake lineage and figures), or with
    ``release`` a real release directory instead; ``model`` is the served release's name and
    ``manifest`` its release.json, so tests assert what that release says, not fixed values.
    """

    def __init__(self, tmp: Path, release: Path | None = None, **env: str) -> None:
        from typer.testing import CliRunner

        from avokit.cli.main import build_app
        from avokit.contracts.release import read_release_manifest
        from avokit.gateway.db.session import make_db_engine, run_migrations, session_factory

        self.real = release is not None
        if release is not None:
            self.registry = tmp / "registry"
            self.model = _served_release(self.registry, release)
        else:
            self.registry = build_registry(tmp / "registry").parent
            self.model = "avo-tiny"
            _with_evaluation(self.registry / self.model)
        self.manifest = read_release_manifest(self.registry / self.model)
        self.db_url = f"sqlite:///{tmp}/console.db"
        run_migrations(self.db_url)
        self.sessions = session_factory(make_db_engine(self.db_url))
        self.alice, self.alice_info = self.key("alice", credit_micros=5_000_000)
        self.bob, self.bob_info = self.key("bob", credit_micros=5_000_000)
        # the administrator through the CLI command, the password on stdin (never argv)
        out = CliRunner().invoke(build_app(), ["admin", "create", "--name", ADMIN_NAME,
                                           "--password-stdin", "--db", self.db_url],
                                 input=ADMIN_PASSWORD + "\n", env={"AVOKIT_SECRET": SECRET})
        assert out.exit_code == 0, out.output
        self.log = tmp / "serve.log"
        self.server = Server({"AVOKIT_SECRET": SECRET, "OMP_NUM_THREADS": "1", **env}, self.log,
                             cli=["--registry", str(self.registry), "--db", self.db_url]).start()
        self.url = self.server.url

    def key(self, name: str, **kw: Any) -> tuple[str, Any]:
        """A new key with its own account, priced for every model."""
        from avokit.gateway.services import keys

        kw.setdefault("prices", PRICES)
        with self.sessions.begin() as s:
            return keys.create_key(s, SECRET, name=name, **kw)

    def credit(self, account_id: int) -> int:
        """The account's spendable credit (credit - reserved)."""
        from avokit.gateway.db.models import Account

        with self.sessions() as s:
            acc = s.get(Account, account_id)
            assert acc is not None
            return acc.credit_micros - acc.reserved_micros

    def client(self) -> httpx.Client:
        """A cookie-keeping client that does not follow redirects."""
        return httpx.Client(base_url=self.url, timeout=120, follow_redirects=False)

    def signin(self, key: str) -> tuple[httpx.Client, str]:
        """A customer session for ``key``; returns the client and the pages' CSRF token."""
        http = self.client()
        page = http.get("/console/signin")
        r = http.post("/console/signin", data={"key": key, "csrf": csrf_of(page.text)})
        assert r.status_code == 303 and r.headers["location"] == "/console/playground", r.text
        return http, csrf_of(http.get("/console/keys").text)

    def admin_signin(self, name: str = ADMIN_NAME, password: str = ADMIN_PASSWORD
                     ) -> tuple[httpx.Client, httpx.Response]:
        """An admin sign-in attempt; returns the client and the sign-in response."""
        http = self.client()
        page = http.get("/console/admin/signin")
        return http, http.post("/console/admin/signin", data={
            "name": name, "password": password, "csrf": csrf_of(page.text)})

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()
