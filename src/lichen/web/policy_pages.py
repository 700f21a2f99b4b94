"""The one renderer of ``/privacy`` and ``/feed``.

The web UI serves these pages inside its layout (:class:`lichen.web.pages.WebUI`), and
a tracker without the gateway and web UI (``gateway=False``) still publishes them,
because a network's policy is public (:func:`lichen.web.privacy_routes.install_privacy`).
Both go through :class:`PolicyPages`: the same templates and the same content for the
same policy; only the layout's navigation differs (:func:`standalone_pages` links just
these pages).
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from lichen.web.policy_view import FeedSource, PolicyView
from lichen.web.templating import NavItem, Renderer, datetime_ms

FEED_LIMIT = 100  # posts on the feed page, newest first


class PageRender(Protocol):
    """Renders ``template`` inside the layout (the web UI's ``WebUI.page``, or a bare one)."""

    async def __call__(
        self, request: Request, template: str, *, page: str, title: str, **ctx: Any
    ) -> Response: ...


def feed_entry(post: dict[str, Any]) -> dict[str, Any]:
    """A feed post for the template: messages as a list either way, a readable UTC time."""
    prompt = post.get("prompt")
    if isinstance(prompt, list):
        messages = [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
            for m in prompt
            if isinstance(m, dict)
        ]
    else:
        messages = [{"role": "prompt", "content": str(prompt or "")}]
    return {
        "id": str(post.get("id", "")),
        "model": str(post.get("model", "")),
        "created": datetime_ms(int(post.get("created_ms", 0))),
        "messages": messages,
        "completion": str(post.get("completion", "")),
    }


class PolicyPages:
    """``/privacy`` (the policy in plain language) and ``/feed`` (the public posts)."""

    def __init__(self, policy: PolicyView, feed: FeedSource | None, render: PageRender) -> None:
        self.policy = policy
        self.feed_source = feed
        self.render = render

    async def privacy(self, request: Request) -> Response:
        return await self.render(
            request,
            "privacy.html",
            page="privacy",
            title="Privacy",
            document=self.policy.document(),
            policy_summary=self.policy.summary(),
            privacy_classes=self.policy.classes(),
        )

    async def feed(self, request: Request) -> Response:
        posts = []
        if self.feed_source is not None and self.policy.has_public_feed():
            found = await self.feed_source.feed(FEED_LIMIT)
            posts = [feed_entry(p.feed_json()) for p in found]
        return await self.render(
            request,
            "feed.html",
            page="feed",
            title="Public feed",
            posts=posts,
            policy_summary=self.policy.summary(),
        )


def standalone_pages(policy: PolicyView, feed: FeedSource | None) -> PolicyPages:
    """The pages for a process without the web UI: the same layout, linking only them."""
    renderer = Renderer()
    nav = [NavItem("privacy", "Privacy", "/privacy")]
    if policy.has_public_feed():
        nav.append(NavItem("feed", "Public feed", "/feed"))

    async def render(
        request: Request, template: str, *, page: str, title: str, **ctx: Any
    ) -> Response:
        return renderer.render(
            request,
            template,
            page=page,
            title=title,
            nav=nav,
            disclosure=policy.disclosure(),
            home="/privacy",  # there is no chat page here
            api_docs=False,  # nor an API
            **ctx,
        )

    return PolicyPages(policy, feed, render)
