"""Jinja2 rendering with the shared layout, security headers and the CSRF token.

Templates live in ``web/templates`` and static assets in ``web/static`` (both
package data). Pages load no inline script or style, so the Content Security
Policy can forbid both; data for scripts travels in ``data-`` attributes.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from lichen import __version__
from lichen.http import csrf

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    key: str
    label: str
    href: str


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``4 min 10 s`` or ``12 s``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def datetime_ms(value: int | None) -> str:
    """Unix milliseconds as ``2026-11-22 19:05 UTC`` ("" for none)."""
    if not value:
        return ""
    moment = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def thousands(value: int | float) -> str:
    return f"{value:,.0f}".replace(",", "\u202f")


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


@functools.cache
def environment() -> Environment:
    """The one Jinja environment of every HTML page Lichen serves."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=duration, thousands=thousands, percent=percent, datetime_ms=datetime_ms
    )
    return env


class Renderer:
    """Renders a page inside the layout; ``nav`` is recomputed per request."""

    def __init__(self) -> None:
        self.env = environment()

    def render(
        self,
        request: Request,
        template: str,
        *,
        page: str,
        title: str,
        nav: list[NavItem],
        user: Any = None,
        accounts_enabled: bool = False,
        disclosure: str | None = None,
        status_code: int = 200,
        home: str = "/",
        api_docs: bool = True,
        **context: Any,
    ) -> HTMLResponse:
        """``home``: where the brand links; ``api_docs``: link the API docs in the footer
        (a tracker without the gateway serves only the privacy pages: neither exists)."""
        token = csrf.token(request)
        html = self.env.get_template(template).render(
            page=page,
            title=title,
            nav=nav,
            user=user,
            accounts_enabled=accounts_enabled,
            disclosure=disclosure,
            home=home,
            api_docs=api_docs,
            csrf_token=token,
            csrf_field=csrf.FIELD,
            version=__version__,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code, headers=dict(SECURITY_HEADERS))
        csrf.remember(request, response)
        return response
