"""The network policy: one TOML document that every component enforces.

A policy says, for each :class:`DataClass`, whether it is stored, where, for how
long and who may see it; plus how prompts are logged, whether a public feed
exists, what telemetry is accepted, whether the gateway pseudonymizes and screens,
and which node trust levels may serve which privacy class. ``parse_policy``
validates the document and the rules that tie its parts together, so a policy
that contradicts itself never loads.
"""

from __future__ import annotations

import enum
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lichen.errors import ErrorCode, LichenError
from lichen.identity.trust import TrustLevel

POLICY_FILE = "policy.toml"
DEFAULT_PRESET = "private"
PRESETS_DIR = Path(__file__).parent / "presets"


class DataClass(enum.StrEnum):
    """Every kind of data Lichen handles (docs/architecture.md section 10)."""

    PROMPT = "prompt"
    COMPLETION = "completion"
    REQUEST_METADATA = "request_metadata"
    CLIENT_IP = "client_ip"
    ACCOUNT = "account"
    API_KEY = "api_key"
    SESSION_TOKEN = "session_token"
    MODEL_FILE = "model_file"
    NODE_MANIFEST = "node_manifest"
    RECEIPT = "receipt"
    TELEMETRY = "telemetry"


# Other spellings found in tables' ``data_class`` columns.
DATA_CLASS_ALIASES = {"account_data": DataClass.ACCOUNT}


def data_class(value: str) -> DataClass:
    """The data class a table declares, aliases resolved; ValueError if unknown."""
    alias = DATA_CLASS_ALIASES.get(value)
    return alias if alias is not None else DataClass(value)


Location = Literal["gateway", "tracker", "node"]
Audience = Literal["public", "owner", "operator", "node"]
PromptLogging = Literal["none", "metadata", "full"]
PublicFeed = Literal["off", "opt_in", "default_on"]

# The only counters a node may ever send; a policy picks a subset.
TELEMETRY_COUNTERS = ("requests", "tokens", "tokens_per_s", "models", "uptime_s")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def parse_duration(value: str | int) -> int:
    """Seconds in ``value``: an integer, or ``"90s"``, ``"15m"``, ``"24h"``, ``"30d"``, ``"2w"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30d'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return value
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 15m, 24h, 30d, 2w)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def format_duration(seconds: int) -> str:
    """The largest whole unit: 2592000 -> "30 days"."""
    for unit, size in (("week", 604_800), ("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRule(_Strict):
    """What happens to one data class."""

    stored: bool = False
    where: list[Location] = Field(default_factory=list)
    retention: str | int | None = None  # None: kept until deleted
    visible_to: list[Audience] = Field(default_factory=list)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | int | None) -> str | int | None:
        if value is None or value == "forever":
            return None
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataRule:
        if self.stored and not self.where:
            raise ValueError("a stored data class needs `where` (gateway, tracker or node)")
        if not self.stored and self.where:
            raise ValueError("a data class that is not stored cannot have `where`")
        return self

    @property
    def retention_s(self) -> int | None:
        return None if self.retention is None else parse_duration(self.retention)


class TelemetryRules(_Strict):
    """Whether nodes may opt in to sending counters, and exactly which ones."""

    opt_in: bool = True  # False: no telemetry at all. Telemetry is never on by default.
    counters: list[str] = Field(default_factory=lambda: list(TELEMETRY_COUNTERS))

    @field_validator("counters")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(TELEMETRY_COUNTERS))
        if unknown:
            raise ValueError(
                f"unknown telemetry counters {unknown}; allowed: {list(TELEMETRY_COUNTERS)}"
            )
        return value


class ScreeningRules(_Strict):
    """Safety screening of what goes in and what comes out."""

    input: bool = False
    output: bool = False
    screeners: list[str] = Field(default_factory=lambda: ["rules"])
    categories: list[str] = Field(default_factory=list)  # enabled categories
    deny: dict[str, list[str]] = Field(default_factory=dict)  # category -> extra phrases

    @property
    def enabled(self) -> bool:
        return self.input or self.output


class PseudonymizeRules(_Strict):
    """Replace personal data with placeholders before routing; restore it in the answer."""

    enabled: bool = False
    presidio: bool = True  # also use Presidio's NLP recognizers when installed
    entities: list[str] = Field(default_factory=list)  # empty: every entity we detect


class AuditRules(_Strict):
    """Audits of real requests: a share re-scored by the tracker's reference (issue 11)."""

    traffic_share: float = Field(default=0.0, ge=0.0, le=1.0)  # share of real requests
    verifier_trust: str = (
        TrustLevel.OWNER.value
    )  # trust level of the verifier (the operator's tracker)


class Policy(_Strict):
    """A network's whole data-handling policy."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str = ""
    version: int = 1
    prompt_logging: PromptLogging = "metadata"
    public_feed: PublicFeed = "off"
    disclose: bool = False  # announce the policy in every response header and page
    pseudonymize: PseudonymizeRules = PseudonymizeRules()
    screening: ScreeningRules = ScreeningRules()
    telemetry: TelemetryRules = TelemetryRules()
    default_privacy_class: str = "standard"
    privacy_classes: dict[str, list[str]] = Field(
        default_factory=lambda: {"standard": [level.value for level in TrustLevel]}
    )
    data: dict[DataClass, DataRule] = Field(default_factory=dict)
    audits: AuditRules = AuditRules()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("name must be lower-case letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        missing = [d.value for d in DataClass if d not in self.data]
        if missing:
            raise ValueError(f"policy has no [data.*] rule for: {', '.join(missing)}")
        if self.default_privacy_class not in self.privacy_classes:
            raise ValueError(f"default_privacy_class {self.default_privacy_class!r} is undefined")
        content = self.prompt_logging == "full" or self.public_feed != "off"
        for cls in (DataClass.PROMPT, DataClass.COMPLETION):
            rule = self.data[cls]
            if content and not rule.stored:
                raise ValueError(
                    f"prompt_logging = full or a public feed needs [data.{cls}] stored = true"
                )
            if rule.stored and not content:
                raise ValueError(
                    f"[data.{cls}] is stored but neither prompt_logging = full nor a public feed"
                    " gives a reason to"
                )
            if rule.stored and "gateway" not in rule.where:
                raise ValueError(f"[data.{cls}] can only be stored at the gateway")
        if self.prompt_logging != "none" and not self.data[DataClass.REQUEST_METADATA].stored:
            raise ValueError("prompt_logging = metadata/full needs [data.request_metadata] stored")
        if self.prompt_logging == "none" and self.data[DataClass.REQUEST_METADATA].stored:
            raise ValueError("prompt_logging = none forbids storing [data.request_metadata]")
        if self.data[DataClass.TELEMETRY].stored and not self.telemetry.opt_in:
            raise ValueError("[data.telemetry] is stored but telemetry.opt_in is false")
        return self

    # --- questions the components ask ------------------------------------------------

    def rule(self, cls: DataClass | str) -> DataRule:
        return self.data[data_class(cls)]

    def stores(self, data_class: DataClass | str, where: Location | None = None) -> bool:
        rule = self.rule(data_class)
        return rule.stored and (where is None or where in rule.where)

    def retention_s(self, data_class: DataClass | str) -> int | None:
        return self.rule(data_class).retention_s

    def audit_share(self, privacy_class: str) -> float:
        """Share of real ``privacy_class`` requests the verifier may re-score (0: none)."""
        levels = self.privacy_classes.get(privacy_class) or ()
        return self.audits.traffic_share if self.audits.verifier_trust in levels else 0.0

    def allowed_trust(self, privacy_class: str) -> frozenset[str]:
        """Trust levels allowed to serve ``privacy_class``; raises for an unknown class."""
        levels = self.privacy_classes.get(privacy_class)
        if levels is None:
            known = ", ".join(sorted(self.privacy_classes))
            raise LichenError(
                ErrorCode.INVALID_REQUEST,
                f"unknown privacy class {privacy_class!r}; this network defines: {known}",
                param="lichen_privacy_class",
            )
        return frozenset(levels)

    @property
    def disclosure_header(self) -> str | None:
        """The ``x-lichen-data-policy`` value, for policies that must announce themselves."""
        if not self.disclose:
            return None
        return f"{self.name}; prompts-logged={self.prompt_logging}; public-feed={self.public_feed}"


def parse_policy(text: str | bytes, *, source: str = "policy") -> Policy:
    """Validate a TOML policy document; every problem is a ``LichenError`` naming its place."""
    try:
        raw = tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LichenError(ErrorCode.INVALID_REQUEST, f"{source}: not valid TOML: {exc}") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
        )
        raise LichenError(ErrorCode.INVALID_REQUEST, f"{source}: {problems}") from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_text(name: str) -> str:
    path = PRESETS_DIR / f"{name}.toml"
    if not _NAME.match(name) or not path.is_file():
        raise LichenError(
            ErrorCode.NOT_FOUND,
            f"no policy preset named {name!r}; presets: {', '.join(preset_names())}",
        )
    return path.read_text(encoding="utf-8")


def load_preset(name: str) -> Policy:
    return parse_policy(preset_text(name), source=f"preset {name}")


def load_policy_document(data_dir: Path) -> tuple[Policy, bytes]:
    """The policy in ``<data_dir>/policy.toml`` (or the default preset) and its exact bytes."""
    path = data_dir / POLICY_FILE
    document = path.read_bytes() if path.is_file() else preset_text(DEFAULT_PRESET).encode()
    return parse_policy(document, source=str(path) if path.is_file() else DEFAULT_PRESET), document


def load_policy(data_dir: Path) -> Policy:
    return load_policy_document(data_dir)[0]
