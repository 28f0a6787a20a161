"""Runtime configuration, read from the environment once per process.

Every setting is documented in docs/configuration.md, which a test keeps in step with
this model.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class IdempotencyBackend(StrEnum):
    """Where "this Stripe event is already stored" is remembered."""

    MEMORY = "memory"
    REDIS = "redis"


class ConfigError(Exception):
    """Configuration is invalid; the message is one line meant for an operator."""


class Settings(BaseSettings):
    """Settings of one bridge process (a function or the dev server)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Webhook signing secret(s) `whsec_...`; comma-separated during rotation.",
    )
    stripe_signature_tolerance: int = Field(
        default=300, ge=1, le=86400, description="Max age (and future skew) of a signature, s."
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s).")
    nats_creds: str | None = Field(default=None, description="Path to a NATS .creds file.")
    nats_user: str | None = Field(default=None, description="NATS user (user/password auth).")
    nats_password: SecretStr | None = Field(default=None, description="NATS password.")
    nats_stream: str = Field(
        default="STRIPE", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream stream name."
    )
    nats_subject_prefix: str = Field(
        default="stripe",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Subjects are `<prefix>.<live|test>.<event type>`.",
    )
    nats_connect_timeout: float = Field(
        default=2.0, gt=0, le=30, description="Max wait for one NATS connect attempt, s."
    )
    publish_timeout: float = Field(
        default=5.0, gt=0, le=20, description="Max wait for a JetStream PubAck, s."
    )
    idempotency_backend: IdempotencyBackend = Field(
        default=IdempotencyBackend.MEMORY,
        description="`memory` (one process) or `redis` (shared by all replicas).",
    )
    redis_url: str | None = Field(default=None, description="Redis URL for the redis backend.")
    idempotency_lease_seconds: float = Field(
        default=30.0, gt=0, le=600, description="How long a claim blocks other deliveries, s."
    )
    idempotency_done_ttl_seconds: int = Field(
        default=4 * 86400,
        ge=3 * 86400,
        description="How long a stored event is remembered (over Stripe's 3-day retries), s.",
    )
    idempotency_memory_max_entries: int = Field(
        default=100_000, ge=100, description="Bound of the memory backend (LRU beyond it)."
    )
    pushgateway_url: str | None = Field(default=None, description="Unset: metrics are not pushed.")
    pushgateway_min_interval: float = Field(
        default=15.0,
        ge=0,
        le=300,
        description="At most one push per this many seconds; keep it at or above the "
        "Pushgateway's scrape interval (docs/observability.md).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Larger request bodies get 413.",
    )
    retry_after_seconds: int = Field(
        default=30, ge=1, le=3600, description="`Retry-After` sent with 409 and 503 answers."
    )
    function_name: str | None = Field(
        default=None, description="Name of this function in metrics; derived when unset."
    )
    instance_id: str | None = Field(
        default=None, description="Pushgateway instance label; HOSTNAME-pid when unset."
    )
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level."
    )

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("stripe_webhook_secret")
    @classmethod
    def _secrets_look_like_stripe(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            if not secret.get_secret_value().startswith("whsec_"):
                raise ValueError("every secret must start with 'whsec_'")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("must be nats://, tls://, ws:// or wss:// URLs")
        return value

    @model_validator(mode="after")
    def _redis_needs_url(self) -> Settings:
        if self.idempotency_backend is IdempotencyBackend.REDIS and not self.redis_url:
            raise ValueError("IDEMPOTENCY_BACKEND=redis needs REDIS_URL")
        return self

    @model_validator(mode="after")
    def _lease_outlives_publish(self) -> Settings:
        # A lease that expires while its holder still waits for the PubAck lets a second
        # delivery publish too; only JetStream's duplicate window would then save us.
        budget = self.nats_connect_timeout + self.publish_timeout
        if self.idempotency_lease_seconds <= budget:
            raise ValueError(
                f"IDEMPOTENCY_LEASE_SECONDS must exceed NATS_CONNECT_TIMEOUT + PUBLISH_TIMEOUT"
                f" ({budget:g} s)"
            )
        return self

    def secrets(self) -> list[bytes]:
        """The signing secrets as bytes, in the order given."""
        return [s.get_secret_value().encode() for s in self.stripe_webhook_secret]

    def instance(self) -> str:
        """A label unique to this process, stable for its lifetime."""
        return self.instance_id or f"{os.environ.get('HOSTNAME', 'local')}-{os.getpid()}"


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_model(model: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``model`` from the environment; raise ConfigError with one clear line if invalid.

    Problems are named by their environment variable (prefix included), as operators set them.
    """
    try:
        return model(**overrides)
    except ValidationError as exc:
        prefix = str(model.model_config.get("env_prefix") or "")
        problems = "; ".join(
            f"{(prefix + '.'.join(str(p) for p in err['loc'])).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def load_settings(**overrides: object) -> Settings:
    """The bridge's Settings from the environment (see ``load_model``)."""
    return load_model(Settings, **overrides)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
