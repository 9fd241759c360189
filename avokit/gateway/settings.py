"""Gateway settings: read from ``AVOKIT_*`` environment variables or an env file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from avokit.gateway.services.webhooks import DeliveryPolicy


class GatewaySettings(BaseSettings):
    """Everything `avokit serve` needs; one instance per process, passed to ``create_app``."""

    model_config = SettingsConfigDict(env_prefix="AVOKIT_", env_file=None, extra="ignore")

    registry: Path = Field(Path("registry"), description="model registry directory")
    db_url: str = Field("sqlite:///avokit-gateway.db", description="SQLAlchemy database URL")
    secret: SecretStr = Field(
        SecretStr(""), description="server secret for the HMAC of API keys (required)"
    )
    engine: Literal["transformers", "vllm"] = "transformers"
    upstream: str | None = Field(None, description="vLLM OpenAI server base URL (engine=vllm)")
    device: str = "cpu"
    # the in-process engine's dtype: `auto` is bf16 where the device computes it natively
    # (CUDA with bf16, a CPU with AMX or AVX512-BF16; AVOKIT_CPU_BF16=0/1 overrides), else float32
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    # Each process holds a lease on its reservations, renewed every lease_s / 3: those of a
    # process that stopped (its pid gone on this host, or, on another host, its lease ran
    # out; a live pid here is never expired) are settled. Reservations without an owner
    # (older rows) fall back to reservation_stale_s.
    lease_s: float = Field(15.0, gt=0)
    reservation_stale_s: float = Field(60.0, ge=0)
    reconcile_interval_s: float = Field(30.0, gt=0)
    # Largest request body accepted; a larger one is answered 413 before it is parsed.
    max_body_bytes: int = Field(4 * 2**20, ge=1024)
    # Shared rate limits across replicas (redis://host:port/db). None: per-process limits.
    redis_url: str | None = Field(None, description="Redis URL for limits shared by replicas")
    # SQLite only: how often committed WAL pages are checkpointed (and synced to disk) from
    # a background thread, instead of inside a request's commit.
    checkpoint_interval_s: float = Field(1.0, gt=0)
    max_tokens_default: int = Field(256, ge=1)
    # Web console (/console): how long a signed-in session lasts, and how many sign-in
    # attempts one client address may make per minute (customer and admin sign-ins together).
    console_session_s: float = Field(8 * 3600.0, gt=0)
    console_signins_per_minute: int = Field(10, ge=1)
    # Prometheus metrics: /metrics on the API port answers this bearer token only (unset: 404
    # there); `avokit serve --metrics-bind HOST:PORT` serves them on a separate admin address.
    metrics_token: SecretStr = Field(SecretStr(""), description="bearer token for /metrics")
    metrics_bind: str | None = Field(None, description="HOST:PORT of the metrics listener")
    # label spend by a keyed hash of the account id (off: one series per model only)
    metrics_account_labels: bool = False
    # off: no metric is kept or served (no /metrics, no listener): for operators who scrape
    # nothing, and the "metrics off" arm of bench/gateway/metrics_cost.py
    metrics_enabled: bool = True
    # /health/ready: how long one check may take; how long an engine check's result is kept
    ready_timeout_s: float = Field(5.0, gt=0)
    ready_engine_interval_s: float = Field(10.0, ge=0)

    # alert webhooks (services/webhooks.py): every `avokit serve` process delivers the outbox
    # (several share it safely); off: deliver with `avokit alerts deliver` instead
    alert_delivery: bool = True
    alert_poll_s: float = Field(2.0, gt=0, description="how often the outbox is polled")
    alert_retry_base_s: float = Field(5.0, gt=0, description="first retry delay")
    alert_retry_max_s: float = Field(3600.0, gt=0, description="longest retry delay")
    alert_max_attempts: int = Field(15, ge=1, description="attempts before a row is failed")
    alert_timeout_s: float = Field(10.0, gt=0, description="one POST's time limit")
    alert_lease_s: float = Field(60.0, gt=0, description="how long a claimed row is held")

    def delivery_policy(self) -> DeliveryPolicy:
        """The alert delivery worker's retry policy from these settings."""
        from avokit.gateway.services.webhooks import DeliveryPolicy

        return DeliveryPolicy(base_s=self.alert_retry_base_s,
                              max_backoff_s=self.alert_retry_max_s,
                              max_attempts=self.alert_max_attempts,
                              timeout_s=self.alert_timeout_s, lease_s=self.alert_lease_s)

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or unset)")
        return value

    @field_validator("metrics_bind")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_bind(value)
        return value

    @field_validator("metrics_enabled")
    @classmethod
    def _listener_needs_metrics(cls, value: bool, info: ValidationInfo) -> bool:
        # declared after metrics_bind, so that one is already validated here
        if not value and info.data.get("metrics_bind") is not None:
            raise ValueError("off, but metrics_bind (AVOKIT_METRICS_BIND) asks for a metrics "
                             "listener: unset one of the two")
        return value

    def require_secret(self) -> str:
        """The HMAC secret; refuses to run with an empty or short one."""
        value = self.secret.get_secret_value()
        if len(value) < 16:
            from avokit.gateway.errors import ConfigError

            raise ConfigError("AVOKIT_SECRET must be set to at least 16 characters")
        return value


def split_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as ``(host, port)``; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def load_settings(env_file: Path | None = None, **overrides: object) -> GatewaySettings:
    """Settings from the environment, an optional env file, and explicit overrides (CLI flags).

    A bad value raises :class:`~avokit.gateway.errors.ConfigError` naming the setting and
    the environment variable it is read from."""
    from pydantic import ValidationError

    clean: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        if env_file is not None:
            return GatewaySettings(_env_file=env_file, **clean)
        return GatewaySettings(**clean)
    except ValidationError as err:
        from avokit.gateway.errors import ConfigError

        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])} (AVOKIT_{str(e['loc'][0]).upper()}): "
                             f"{e['msg']}" for e in err.errors())
        raise ConfigError(f"bad gateway setting: {problems}") from None
