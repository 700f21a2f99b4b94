"""Settings, declared once.

Every field has a description; the same declaration feeds environment variables
(``LICHEN_`` prefix), the optional TOML config file and the CLI's ``--help``.
Precedence, highest first: explicit CLI flags, environment, config file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_PORT = 8470
DEFAULT_MODEL = "smollm2-135m"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lichen"


def _config_file() -> Path | None:
    explicit = os.environ.get("LICHEN_CONFIG")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("LICHEN_DATA_DIR")
    candidate = (Path(data_dir) if data_dir else default_data_dir()) / "config.toml"
    return candidate if candidate.is_file() else None


class Settings(BaseSettings):
    """All Lichen settings. Each role reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="LICHEN_", extra="ignore", validate_default=True)

    # common
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for keys, models, database and config (mode 0700).",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Where models are stored (default: <data_dir>/models); may be shared.",
    )
    log_level: str = Field(default="INFO", description="Logging level (DEBUG, INFO, WARNING).")

    # gateway
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="HTTP port.")
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest accepted request body, in bytes (413)."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Deadline for one inference request, in seconds."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; defaults to SQLite (WAL) under the data dir.",
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS URL of a cluster's message bus (several trackers and gateways on "
        "one network share it): trackers publish their nodes and relay gateways' jobs; a "
        "`lichen gateway` schedules from it (default: none, a single-process network).",
    )
    cluster_beat_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between a cluster process's liveness beats on the bus; a tracker "
        "or gateway silent for three beats is taken as gone.",
    )

    # accounts, quotas and credits (gateway)
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for rate-limit counters shared by several gateway and tracker "
        "processes: requests, tokens, requests in flight, sign-in attempts, form posts, "
        "node admissions (default: counters in this process).",
    )
    limits_fail_closed: bool = Field(
        default=False,
        description="When the rate-limit store (Redis) cannot be reached, refuse requests "
        "(503 service_unavailable) instead of serving them unlimited (the default).",
    )
    allow_anonymous: bool = Field(
        default=True,
        description="Serve inference without an API key, bounded by the per-address limits.",
    )
    require_credits: bool = Field(
        default=False,
        description="Charge signed-in users for inference and refuse (402) when they have "
        "no credits; nodes' owners are paid from the charge.",
    )
    audit_window_s: int = Field(
        default=600,
        ge=0,
        le=30 * 86400,
        description="Seconds a job's credits stay in escrow (pending) before its node's owner "
        "is paid; a failed audit in that window forfeits them to the payer (0 = pay at once).",
    )
    key_requests_per_minute: int = Field(
        default=60, ge=0, description="Requests per minute per API key or account (0 = no limit)."
    )
    key_tokens_per_day: int = Field(
        default=1_000_000, ge=0, description="Tokens per day per API key or account (0 = no limit)."
    )
    anonymous_requests_per_minute: int = Field(
        default=20, ge=0, description="Requests per minute per client address without a key."
    )
    anonymous_tokens_per_day: int = Field(
        default=100_000, ge=0, description="Tokens per day per client address without a key."
    )
    limit_loopback: bool = Field(
        default=False,
        description="Apply the per-address limits for anonymous use to loopback clients too; "
        "turn on when a reverse proxy on this host forwards public traffic.",
    )
    auth_attempts_per_minute: int = Field(
        default=10, ge=0, description="Sign-up, sign-in and refresh attempts per minute per IP."
    )

    # hostile clients: request bounds, body caps, concurrency (gateway; docs/security.md)
    limit_max_tokens: int = Field(
        default=32_768, ge=1, description="Largest max_tokens / num_predict a request may ask for."
    )
    limit_stop_sequences: int = Field(
        default=4, ge=0, description="Most stop sequences per request (every API dialect)."
    )
    limit_stop_chars: int = Field(
        default=256, ge=1, description="Most characters in one stop sequence."
    )
    limit_messages: int = Field(default=1_024, ge=1, description="Most messages in one chat.")
    limit_tools_bytes: int = Field(
        default=131_072, ge=1024, description="Largest tools array, in bytes of JSON."
    )
    schema_max_bytes: int = Field(
        default=16_384,
        ge=256,
        description="Largest JSON schema (response_format, tool parameters).",
    )
    schema_max_nodes: int = Field(
        default=1_024, ge=16, description="Most nodes (objects, arrays, values) in a JSON schema."
    )
    schema_max_depth: int = Field(default=16, ge=2, description="Deepest nesting in a JSON schema.")
    schema_max_enum: int = Field(
        default=32, ge=1, description="Most enum values in one JSON schema, all enums together."
    )
    schema_max_properties: int = Field(
        default=64, ge=1, description="Most object properties in one JSON schema, all together."
    )
    schema_max_alternatives: int = Field(
        default=16, ge=1, description="Most members of one schema anyOf / oneOf / allOf."
    )
    schema_max_repetition: int = Field(
        default=256, ge=1, description="Largest schema minItems/maxItems/minLength/maxLength."
    )
    schema_max_pattern_chars: int = Field(
        default=256, ge=1, description="Longest schema pattern (regular expression)."
    )
    max_form_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest body for routes other than inference (sign-up, forms, telemetry).",
    )
    body_read_timeout_s: float = Field(
        default=15.0, gt=0, description="Refuse (408) a request body that stalls this long."
    )
    form_posts_per_minute: int = Field(
        default=60,
        ge=0,
        description="State-changing requests per minute per client address on non-inference "
        "routes, counted before the body is read (0 = no limit).",
    )
    key_concurrent_requests: int = Field(
        default=8, ge=0, description="Requests in flight per API key or account (0 = no limit)."
    )
    anonymous_concurrent_requests: int = Field(
        default=1,
        ge=0,
        description="Requests in flight per client address without a key (0 = no limit).",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names the gateway answers to besides loopback names, "
        "IP addresses and public_url's host ('*' = any; empty on a public bind = any).",
    )

    # node
    model: str = Field(
        default=DEFAULT_MODEL, description="Model to serve: catalog name, GGUF path or URL."
    )
    threads: int = Field(default=0, ge=0, description="Generation threads (0 = all cores).")
    batch_threads: int = Field(
        default=0, ge=0, description="Prompt-processing threads (0 = same as threads)."
    )
    parallel: int = Field(
        default=8, ge=1, le=64, description="Parallel slots (continuous batching) per model."
    )
    ctx_size: int = Field(
        default=16384, ge=256, description="Total context size shared by all slots, in tokens."
    )
    kv_unified: bool = Field(
        default=False,
        description="One KV cache shared by all slots: one request may use the whole ctx_size "
        "(long agent prompts) instead of ctx_size / parallel.",
    )
    node_name: str | None = Field(default=None, description="Human-readable node name.")
    local_model: bool = Field(
        default=True,
        description="Serve a local GGUF model; false (with an upstream) serves only the upstream.",
    )
    embeddings: bool = Field(
        default=False,
        description="Also load local models for embeddings (/v1/embeddings, mean pooling).",
    )
    upstream_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible upstream whose models the node also serves.",
    )
    upstream_key_secret: str | None = Field(
        default=None,
        description="Name of the secret (`lichen secret set`) holding the upstream's API key.",
    )
    upstream_refresh_s: float = Field(
        default=10.0, gt=0, description="How often the upstream's model list is re-checked (s)."
    )
    upstream_slots: int = Field(
        default=4, ge=1, le=256, description="Parallel requests offered per upstream model."
    )
    upstream_embeddings: bool = Field(
        default=False, description="Advertise the upstream's models for embeddings too."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Standalone node: serve Prometheus /metrics on this loopback port.",
    )

    # tracker (membership and node links)
    network_mode: Literal["private", "public"] = Field(
        default="private",
        description="private: new nodes wait for `lichen network approve`; public: auto-admit.",
    )
    public_url: str | None = Field(
        default=None,
        description="URL nodes dial to reach this tracker (in invites); default: bound address.",
    )
    admissions_per_ip_hour: int = Field(
        default=10, ge=1, description="Public networks: new devices admitted per IP per hour."
    )
    chunk_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Node: also serve model chunks straight to peers on this port (0 = any "
        "free port; bound to `host`); unset: share only through the tracker's relay.",
    )
    model_uploaders: str = Field(
        default="",
        description="Tracker: usernames (or account ids), comma-separated, allowed to upload "
        "models to the network catalog; empty: nobody.",
    )
    model_upload_quota_bytes: int = Field(
        default=4_000_000_000,
        ge=0,
        description="Tracker: bytes of uploaded models (and uploads in progress) per account.",
    )
    heartbeat_s: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between node heartbeats (tracker-set)."
    )
    membership_poll_s: float = Field(
        default=1.0, gt=0, description="How often the tracker re-reads revocations from its DB."
    )
    first_token_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Tracker: a node silent this long before its first token (or between two "
        "chunks, or before its embeddings) has failed (failover; counts against it).",
    )
    stall_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Tracker: a job whose client has not read a delivered chunk this long is "
        "cancelled on its node (the stream ends with a timeout error).",
    )
    affinity: bool = Field(
        default=True,
        description="Tracker: prefix affinity; a request goes to the node that was sent the "
        "longest prefix of its prompt (tracked as hashes, never text) unless that node's wait "
        "exceeds the prompt processing it saves. false: rank by load and speed only.",
    )
    queue_per_slot: float | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Tracker: jobs per slot a node may be sent beyond its slots; when every "
        "node is that busy, a request is refused at once (503 with Retry-After) instead of "
        "queueing, so admitted requests keep their TTFT under overload. 0: only free slots. "
        "Unset: each node's own bounded queue decides.",
    )
    queue_wait_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Tracker: a node whose slots are all busy is sent a job only if one of its "
        "running jobs is expected to end within this many seconds (from its measured speed "
        "and the tokens each job has left), so a slot that frees is refilled at once while "
        "admitted requests wait at most about this long; with queue_per_slot, both apply. "
        "Unset: no such check.",
    )

    # privacy (policy file: <data_dir>/policy.toml, default preset "private")
    telemetry: bool | None = Field(
        default=None,
        description="Send opted-in telemetry counters to the tracker (default: the saved setting,"
        " off unless turned on).",
    )
    refuse_policies: str = Field(
        default="",
        description="Comma-separated network policies this node refuses to join"
        " (e.g. 'open,dataset'; 'unsigned' refuses trackers without a policy).",
    )
    telemetry_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between telemetry messages (when opted in)."
    )
    retention_sweep_s: float = Field(
        default=60.0, gt=0, description="Seconds between retention sweeps of expired rows."
    )

    # audits (issue 11): probes re-scored by the tracker's reference copy of the model
    audits: bool | None = Field(
        default=None,
        description="Tracker: send probe jobs to nodes and re-score their answers with a "
        "reference copy of each model installed in the tracker's models dir (default: on for "
        "a public network, off for a private one).",
    )
    audit_budget: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Share of each node's measured capacity spent on probe jobs.",
    )
    audit_quarantine_after: int = Field(
        default=2, ge=1, description="Failed audits after which a node gets no more jobs."
    )
    audit_sanction: Literal["quarantine", "revoke"] = Field(
        default="quarantine",
        description="What happens at audit_quarantine_after failures: 'quarantine' (no jobs, "
        "still connected, until `lichen network audits PEER --release`) or 'revoke' (also "
        "revoke the membership, as `lichen network revoke` does).",
    )
    audit_threads: int = Field(
        default=1, ge=1, description="Threads of the tracker's reference engine for audits."
    )

    # deployment: TLS, proxies, slow clients, operator surfaces, engine health (issue 10)
    tls_certfile: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS/WSS with; nodes then dial wss://.",
    )
    tls_keyfile: Path | None = Field(
        default=None,
        description="PEM private key for tls_certfile (omit if the certificate file holds it).",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="Node: extra PEM CA bundle to trust for the tracker's wss:// certificate "
        "(a private CA); the system's CAs stay trusted.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated proxy addresses or CIDRs whose X-Forwarded-For/-Proto are "
        "believed ('*' = any); empty (default): X-Forwarded-* headers are ignored.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Close a connection whose request headers are not complete within this many"
        " seconds (slow-loris defence).",
    )
    http_keepalive_s: float = Field(
        default=5.0, gt=0, description="Close an idle keep-alive HTTP connection after this long."
    )
    operator_surfaces: Literal["auto", "open", "operator"] = Field(
        default="auto",
        description="Who may read /docs, /openapi.json, /metrics, /v1/network, /ui/api/node: "
        "open (anyone), operator (the operator token), auto (operator on public networks).",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM, how long running jobs may finish before the process exits "
        "anyway (even with a stuck engine).",
    )
    engine_stall_s: float = Field(
        default=60.0,
        gt=0,
        description="An engine with work but no progress for this long is reported stalled "
        "(/health 503, heartbeats draining).",
    )
    grammar_budget_s: float = Field(
        default=2.0,
        gt=0,
        description="Node: most seconds spent turning one request's JSON schema into a "
        "grammar; longer is refused (400, param response_format).",
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def uploaders(self) -> frozenset[str]:
        """``model_uploaders`` as a set (usernames are case-insensitive)."""
        return frozenset(u.strip().lower() for u in self.model_uploaders.split(",") if u.strip())

    def resolved_threads(self) -> tuple[int, int]:
        """(generation threads, batch threads) with 0 meaning 'all cores'."""
        threads = self.threads or (os.cpu_count() or 1)
        return threads, self.batch_threads or threads

    @property
    def models_path(self) -> Path:
        return (self.models_dir or self.data_dir / "models").expanduser()

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'lichen.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from env and config file, with CLI overrides (None means 'not given')."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
