"""Audits: probes indistinguishable from traffic, teacher-forced re-scoring, verdicts.

See docs/verification.md for the threat model, the method and its calibration.
"""
