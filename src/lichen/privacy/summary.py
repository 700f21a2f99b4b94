"""The policy in plain language, generated from the same document that is enforced.

:func:`policy_document` gives the sections the ``/privacy`` page and ``lichen policy
show`` render; :class:`PrivacyPolicyView` hands them to the web UI through its
``PolicyView`` protocol.
"""

from __future__ import annotations

from lichen.privacy.document import PolicyDocument, PolicySection, PrivacyClass
from lichen.privacy.policy import DataClass, DataRule, Policy, format_duration

LABELS: dict[DataClass, str] = {
    DataClass.PROMPT: "What you send (prompts)",
    DataClass.COMPLETION: "The answers you get",
    DataClass.REQUEST_METADATA: (
        "Request metadata (time, model, token counts, latency, which node served it)"
    ),
    DataClass.CLIENT_IP: "Your IP address",
    DataClass.ACCOUNT: "Account data",
    DataClass.API_KEY: "API keys (kept as hashes)",
    DataClass.SESSION_TOKEN: "Session tokens",
    DataClass.MODEL_FILE: "Model files",
    DataClass.NODE_MANIFEST: "Node descriptions (hardware, models served)",
    DataClass.RECEIPT: "Signed receipts of served work",
    DataClass.TELEMETRY: "Node telemetry counters",
}

_AUDIENCE = {
    "public": "anyone",
    "owner": "you",
    "operator": "the network operator",
    "node": "the serving node",
}

_LOGGING = {
    "none": "Nothing about your requests is recorded, not even metadata.",
    "metadata": "Only request metadata is recorded; prompts and answers are not.",
    "full": "Every prompt and every answer is recorded in full.",
}


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe_rule(data_class: DataClass, rule: DataRule) -> str:
    label = LABELS[data_class]
    if not rule.stored:
        if data_class is DataClass.CLIENT_IP:
            return f"{label}: held in memory only for a rate-limit window, never written to disk."
        return f"{label}: never stored."
    kept = (
        f"kept for {format_duration(rule.retention_s)}"
        if rule.retention_s is not None
        else "kept until deleted"
    )
    who = _join([_AUDIENCE[a] for a in rule.visible_to]) or "nobody"
    return f"{label}: stored at the {_join(list(rule.where))}, {kept}, visible to {who}."


def headline(policy: Policy) -> str:
    """One or two sentences: the policy at a glance."""
    parts = [policy.description or _LOGGING[policy.prompt_logging]]
    if policy.disclose:
        parts.append(
            f"This network logs prompts in full ({policy.name} policy); do not send anything"
            " you would not want recorded."
        )
    return " ".join(parts)


def disclosure_banner(policy: Policy) -> str | None:
    """The notice every page shows under a policy that must disclose itself, else None."""
    if not policy.disclose:
        return None
    return (
        f"Notice: this network's policy is '{policy.name}': prompts are logged "
        f"({policy.prompt_logging}). See /privacy."
    )


def _handling(policy: Policy) -> list[str]:
    items = [_LOGGING[policy.prompt_logging]]
    if policy.public_feed == "opt_in":
        items.append(
            "A public feed shows prompts and answers only from requests whose sender opted in"
            " (`lichen_public: true` or the `x-lichen-public: 1` header); senders can delete"
            " their posts with the token returned in `x-lichen-deletion-token`."
        )
    elif policy.public_feed == "default_on":
        items.append(
            "Requests appear on a public feed unless the sender opts out (`lichen_public: false`)."
        )
    if policy.prompt_logging == "full":
        items.append(
            "You can delete everything recorded for you (DELETE /privacy/data with your API key"
            " or your deletion token)."
        )
    return items


def _pipeline(policy: Policy) -> list[str]:
    items = []
    if policy.pseudonymize.enabled:
        items.append(
            "Personal data (emails, phone and card numbers, IBANs, IP addresses, API keys,"
            " names) is replaced by placeholders before your request leaves the gateway and"
            " restored in the answer; nodes never see it."
        )
    else:
        items.append("Your request reaches the serving node as you wrote it.")
    screening = policy.screening
    if screening.enabled:
        sides = _join(
            [s for s, on in (("requests", screening.input), ("answers", screening.output)) if on]
        )
        cats = _join(screening.categories) or "configured categories"
        items.append(f"Safety screening checks {sides} for: {cats}.")
    else:
        items.append("No safety screening is applied.")
    return items


def _classes(policy: Policy) -> list[str]:
    items = []
    for name, levels in sorted(policy.privacy_classes.items()):
        default = " (default)" if name == policy.default_privacy_class else ""
        items.append(f"{name}{default}: served only by {_join(levels)} nodes.")
    return items


def _audits(policy: Policy) -> list[str]:
    share = policy.audits.traffic_share
    if share <= 0:
        return [
            "Nodes are checked with test prompts that ship with Lichen; your requests are"
            " never re-checked."
        ]
    classes = _join(sorted(c for c in policy.privacy_classes if policy.audit_share(c) > 0))
    return [
        f"To catch dishonest nodes, about {share:.1%} of requests ({classes or 'none'}) are"
        f" re-scored by the network's own {policy.audits.verifier_trust} verifier, which sees the"
        " prompt and the answer; the evidence keeps no text unless answers are stored."
    ]


def _telemetry(policy: Policy) -> list[str]:
    if not policy.telemetry.opt_in:
        return ["No telemetry is collected."]
    return [
        "Telemetry is off unless a node operator opts in; then only these counters go to the"
        f" tracker: {_join(policy.telemetry.counters)}. Never prompts, answers or addresses."
    ]


def policy_document(policy: Policy, source: str = "") -> PolicyDocument:
    """The whole policy as titled sections of plain sentences."""
    stored = [describe_rule(dc, policy.rule(dc)) for dc in DataClass]
    sections = [
        PolicySection("In short", paragraphs=[headline(policy)]),
        PolicySection("Prompts and answers", items=_handling(policy)),
        PolicySection("Before your request reaches a node", items=_pipeline(policy)),
        PolicySection("What is stored, where, for how long", items=stored),
        PolicySection("Who may serve your request", items=_classes(policy) + _audits(policy)),
        PolicySection("Telemetry", items=_telemetry(policy)),
        PolicySection(
            "Check it yourself",
            paragraphs=[
                "This page is generated from the policy file the network enforces. The file,"
                " signed with the network key, is at /privacy.json."
            ],
        ),
    ]
    return PolicyDocument(title=f"Privacy policy: {policy.name}", sections=sections, source=source)


def policy_text(policy: Policy) -> str:
    """The plain-language policy as text (``lichen policy show``)."""
    lines: list[str] = []
    doc = policy_document(policy)
    lines.append(doc.title)
    for section in doc.sections:
        lines.append("")
        lines.append(section.heading)
        lines.extend(f"  {p}" for p in section.paragraphs)
        lines.extend(f"  - {item}" for item in section.items)
    return "\n".join(lines)


class PrivacyPolicyView:
    """The web UI's ``PolicyView`` backed by the enforced policy."""

    def __init__(self, policy: Policy, source: str = "") -> None:
        self.policy = policy
        self.source = source

    def summary(self) -> str:
        return headline(self.policy)

    def classes(self) -> list[PrivacyClass]:
        if len(self.policy.privacy_classes) < 2:
            return []
        return [
            PrivacyClass(value=name, label=name, description=f"served by {_join(levels)} nodes")
            for name, levels in sorted(self.policy.privacy_classes.items())
        ]

    def has_public_feed(self) -> bool:
        return self.policy.public_feed != "off"

    def document(self) -> PolicyDocument | None:
        return policy_document(self.policy, self.source)

    def disclosure(self) -> str | None:
        """The notice every page must show (``dataset``-like policies), else None."""
        return disclosure_banner(self.policy)
