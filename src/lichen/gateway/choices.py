"""Bounds on how many answers and log probabilities one request may ask for."""

from __future__ import annotations

MAX_CHOICES = 8  # the most ``n`` one request may ask for (each choice is its own job)
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on ``top_logprobs`` (and legacy ``logprobs``)
