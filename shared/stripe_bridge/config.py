"""Runtime configuration, read from the environment once per process.

Every setting is documented in docs/configuration.md, which a test keeps in step with
this model.
"""

from __future__ import annotations

import os
import secrets
import sys
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import StripeBridgeError
from .exitcodes import ExitCode
from .logsetup import LogFormat

#: Pause between nats-py's connection attempts (also bounds how often a dead NATS is retried).
RECONNECT_WAIT_SECONDS = 0.5


class IdempotencyBackend(StrEnum):
    """Where "this Stripe event is already stored" is remembered."""

    MEMORY = "memory"
    REDIS = "redis"


class LogDeliveries(StrEnum):
    """Which answered webhook deliveries and billing requests get their one log line."""

    ALL = "all"
    FAILURES = "failures"  # only answers that are not 2xx


class ConfigError(StripeBridgeError):
    """Configuration is invalid: nothing was done (a process stops at start, exit CONFIG)."""

    exit_code = ExitCode.CONFIG


def report_config_error(program: str, exc: ConfigError) -> int:
    """Print ``exc`` as ``program``'s one line on stderr; return the exit code to stop with."""
    print(exc.line(program), file=sys.stderr)
    return exc.exit_code


class EnvModel(BaseModel):
    """A flat model read from environment variables named like its fields, in any case.

    A field's variable is ``env_prefix`` + its name, or, if it has a ``validation_alias``
    (one name or ``AliasChoices`` of names), the first of those names that is set, without
    the prefix. Keyword arguments win over the environment; values are validated from their
    strings as pydantic validates any input (no JSON decoding: a list field splits its own
    string). This is what pydantic-settings does for such a model, without its import
    (~30 modules, ~30 ms of CPU on top of pydantic's) in every function's cold start.
    """

    # populate_by_name: an aliased field given by its name as a keyword is kept, not dropped.
    model_config = ConfigDict(extra="ignore", validate_default=True, populate_by_name=True)

    #: Put before every field's name (not before an alias) to name its variable.
    env_prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        environ = {key.lower(): value for key, value in os.environ.items()}
        found: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            keys = _env_names(type(self).env_prefix, name, field.validation_alias)
            if name in values or any(key in values for key in keys):
                continue
            # An aliased field is passed under its alias, so pydantic's errors name it.
            set_keys = [key for key in keys if key.lower() in environ]
            if set_keys:
                key = set_keys[0] if field.validation_alias else name
                found[key] = environ[set_keys[0].lower()]
        super().__init__(**found, **values)

    @classmethod
    def variables(cls) -> set[str]:
        """Every environment variable the model reads, upper case (each alias of a field)."""
        return {
            key.upper()
            for name, field in cls.model_fields.items()
            for key in _env_names(cls.env_prefix, name, field.validation_alias)
        }

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field`` (a name or an alias), upper case."""
        aliased = field not in cls.model_fields
        return (field if aliased else cls.env_prefix + field).upper()


def _env_names(prefix: str, name: str, alias: str | AliasPath | AliasChoices | None) -> list[str]:
    if alias is None:
        return [prefix + name]
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    if not all(isinstance(choice, str) for choice in choices):
        raise TypeError(f"{name}: an environment alias must be a plain name")
    return [str(choice) for choice in choices]


class Settings(EnvModel):
    """Settings of one bridge process (a function or the dev server)."""

    stripe_webhook_secret: list[SecretStr] = Field(
        default_factory=list,
        description="Webhook signing secret(s) `whsec_...`; comma-separated during rotation.",
    )
    stripe_signature_tolerance: int = Field(
        default=300, ge=1, le=86400, description="Max age (and future skew) of a signature, s."
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s).")
    nats_creds: str | None = Field(default=None, description="Path to a NATS .creds file.")
    nats_user: str | None = Field(
        default=None,
        description="NATS user (user/password auth). Replies (PubAcks, fetches, KV reads) come "
        "on `_INBOX_<user>.>`, the one inbox nats.conf lets that user subscribe to; `_INBOX.>` "
        "without a user.",
    )
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
    nats_start_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Billing consumers: how long to keep trying to reach NATS and bind at"
        " start before exiting 3, s.",
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
        default=100_000,
        ge=100,
        description="Bound of the memory backend (beyond it the oldest written goes first).",
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
        description="Larger request bodies get 413 `body_too_large`. Events whose CloudEvent "
        "is over the NATS server's `max_payload` get 413 `event_too_large`.",
    )
    body_read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="Max time to receive a request body; slower uploads get 408.",
    )
    stopping_body_grace_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="After SIGTERM, how long a body still arriving may take before it gets 503"
        " `shutting_down`, s; the server waits this plus PUBLISH_TIMEOUT for in-flight requests.",
    )
    retry_after_seconds: int = Field(
        default=30, ge=1, le=3600, description="`Retry-After` sent with 409 and 503 answers."
    )
    function_name: str | None = Field(
        default=None, description="Name of this function in metrics; derived when unset."
    )
    instance_id: str | None = Field(
        default=None,
        description="Pushgateway instance label; HOSTNAME-pid-<random per start> when unset.",
    )
    environment: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Pushgateway `environment` label (the Knative profile sets it), so that "
        "environments sharing a Pushgateway stay apart in alerts and dashboards.",
    )
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level."
    )
    log_deliveries: LogDeliveries = Field(
        default=LogDeliveries.ALL,
        description="`all`: one line per answered webhook delivery or billing request (INFO, "
        "WARNING for 5xx; the entitlements function's 2xx at DEBUG); `failures`: only for "
        "answers that are not 2xx (saves ~10 us of CPU per event).",
    )
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description="`text` (one line per record) or `json` (one JSON object per line: time, "
        "level, logger, message).",
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
        budget = self.publish_budget()
        if self.idempotency_lease_seconds <= budget:
            raise ValueError(
                "IDEMPOTENCY_LEASE_SECONDS must exceed the worst case of connecting to every"
                f" NATS server twice plus PUBLISH_TIMEOUT ({budget:g} s)"
            )
        return self

    def publish_budget(self) -> float:
        """Worst-case seconds from a request's first NATS call to its PubAck or failure.

        A first connect tries each server at most twice (``max_reconnect_attempts=1``).
        """
        servers = len(self.nats_url.split(","))
        connect = 2 * servers * (self.nats_connect_timeout + RECONNECT_WAIT_SECONDS)
        return connect + self.publish_timeout

    def secrets(self) -> list[bytes]:
        """The signing secrets as bytes, in the order given."""
        return [s.get_secret_value().encode() for s in self.stripe_webhook_secret]

    def instance(self) -> str:
        """A label unique to this process start; call once per process (it is random).

        The server is PID 1 in its container, so a container restart in the same pod
        repeats ``HOSTNAME-pid``: the random part keeps the restarted process's counters,
        which start from 0 again, out of the old series.
        """
        host = os.environ.get("HOSTNAME", "local")
        return self.instance_id or f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


EnvModelT = TypeVar("EnvModelT", bound=EnvModel)


def load_model(model: type[EnvModelT], **overrides: Any) -> EnvModelT:
    """Build ``model`` from the environment; raise ConfigError with one clear line if invalid.

    Problems are named by their environment variable (prefix included), as operators set them.
    """
    try:
        return model(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(model, err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def _variable(model: type[EnvModel], loc: tuple[int | str, ...]) -> str:
    # A model validator's error has no location: it is about the settings as a whole.
    if not loc:
        return "settings"
    return model.env_name(str(loc[0])) + "".join(f".{part}" for part in loc[1:]).upper()


def load_settings(**overrides: object) -> Settings:
    """The bridge's Settings from the environment (see ``load_model``)."""
    return load_model(Settings, **overrides)
