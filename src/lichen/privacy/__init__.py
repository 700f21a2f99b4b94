"""Privacy as code (docs/architecture.md section 10): one policy file, enforced everywhere.

``policy`` (model, presets), ``signing`` (the tracker's signature), ``guard``
(storage refuses forbidden writes), ``retention`` (sweeper), ``audit``, ``content``
(dataset log and public feed), ``pipeline`` with ``screening``, ``pseudonymize`` and
``recognizers`` (the gateway's request pipeline), ``telemetry`` and ``node_side``
(opt-in counters, policy checks on join), ``summary`` (plain language), ``routes``
(HTTP) and ``runtime`` (wiring for the composition roots).
"""
