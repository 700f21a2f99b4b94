"""The network's privacy policy as a document people read: sections of plain language
and the privacy classes a request may pick. :mod:`lichen.privacy.summary` builds it
from the enforced policy; the web UI (:mod:`lichen.web.policy_view`) and ``lichen
policy show`` render it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PrivacyClass:
    value: str  # sent with the request
    label: str  # shown in the selector
    description: str = ""


@dataclass(frozen=True)
class PolicySection:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PolicyDocument:
    title: str
    sections: list[PolicySection]
    source: str = ""  # the policy file as written (TOML), shown for reference
