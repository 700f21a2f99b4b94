"""What a newcomer meets in the web UI: plain-word privacy choices, a linked /privacy.json,
an HTML 404 for browsers (JSON for API clients), and numbers that agree."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import MODEL, FakeEngine, LocalNetwork, assert_openai_error

from lichen.privacy.document import PolicyDocument, PolicySection, PrivacyClass
from lichen.web import WebDeps, install_web
from lichen.web.pages import plain_privacy_choice

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class TwoClassPolicy:
    """The ``private`` preset's classes, described the way the real policy view does."""

    def summary(self) -> str:
        return "No prompt or answer is stored anywhere."

    def classes(self) -> list[PrivacyClass]:
        return [
            PrivacyClass(
                "private-net-only", "private-net-only", "served by owner and trusted nodes"
            ),
            PrivacyClass("standard", "standard", "served by owner, trusted and community nodes"),
        ]

    def has_public_feed(self) -> bool:
        return False

    def disclosure(self) -> str | None:
        return None

    def document(self) -> PolicyDocument | None:
        return PolicyDocument(
            title="Privacy policy: private",
            sections=[
                PolicySection("In short", paragraphs=["No prompt is stored."]),
                PolicySection(
                    "Check it yourself",
                    paragraphs=[
                        "The file, signed with the network key, is at /privacy.json. <b>x</b>"
                    ],
                ),
            ],
        )


@pytest.fixture
def net(net: LocalNetwork, tmp_path: Path) -> LocalNetwork:
    """The shared ``net`` (tests/integration/conftest.py) with the web UI mounted."""
    install_web(net.app, WebDeps(registry=net.tracker.registry, data_dir=tmp_path / "data"))
    return net


@pytest.fixture
async def private_net(tmp_path: Path) -> AsyncIterator[LocalNetwork]:
    network = await LocalNetwork(tmp_path).start()
    deps = WebDeps(registry=network.tracker.registry, data_dir=tmp_path / "data")
    deps.policy = TwoClassPolicy()
    install_web(network.app, deps)
    try:
        yield network
    finally:
        await network.close()


# --- 404s -----------------------------------------------------------------------------


async def test_a_browser_gets_an_html_404_page(net: LocalNetwork) -> None:
    r = await net.client.get("/no-such-page", headers=BROWSER)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Page not found" in r.text and "<code>/no-such-page</code>" in r.text
    assert '<a href="/network"' in r.text  # the layout's navigation, a way back
    assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_api_clients_keep_the_json_404(net: LocalNetwork) -> None:
    for headers in ({}, {"accept": "application/json"}, {"accept": "*/*"}):
        assert_openai_error(
            await net.client.get("/no-such-page", headers=headers), 404, "not_found"
        )
    # API paths answer JSON even to a browser.
    assert_openai_error(await net.client.get("/v1/nothing", headers=BROWSER), 404, "not_found")
    r = await net.client.get(f"/v1/models/{MODEL}-nope", headers=BROWSER)
    assert_openai_error(r, 404, "model_not_found")


async def test_the_404_page_escapes_a_hostile_path(net: LocalNetwork) -> None:
    r = await net.client.get("/%3Cscript%3Ealert(1)%3C%2Fscript%3E" + "x" * 500, headers=BROWSER)
    assert r.status_code == 404
    assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
    assert "x" * 300 not in r.text  # long paths are cut short


async def test_other_methods_and_errors_stay_json(net: LocalNetwork) -> None:
    r = await net.client.post("/no-such-page", headers=BROWSER, content=b"{}")
    assert r.headers["content-type"].startswith("application/json")
    r = await net.client.delete("/", headers=BROWSER)
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/json")


# --- chat page: privacy choices in plain words ----------------------------------------


async def test_privacy_choices_are_explained_in_plain_words(private_net: LocalNetwork) -> None:
    await private_net.add_node(FakeEngine(), "alpha")
    page = html.unescape((await private_net.client.get("/")).text)
    assert 'id="privacy-choices"' in page and "What do these choices mean?" in page
    assert "Only the network operator's own computers or computers the operator vouches" in page
    assert "volunteers' computers" in page
    assert "network default" in page
    # The status line sits right under the transcript, not below the composer.
    assert (
        page.index('id="transcript"') < page.index('id="chat-status"') < page.index('id="composer"')
    )


@pytest.mark.parametrize(
    ("description", "plain"),
    [
        ("served by owner nodes", "Only the network operator's own computers may answer."),
        (
            "served by owner and trusted nodes",
            "Only the network operator's own computers or computers the operator vouches for "
            "may answer.",
        ),
        ("served by wizards nodes", "served by wizards nodes"),  # unknown level: kept
        ("any node", "any node"),
        ("", ""),
    ],
)
def test_plain_privacy_choice(description: str, plain: str) -> None:
    assert plain_privacy_choice(description) == plain


async def test_privacy_json_is_a_link(private_net: LocalNetwork) -> None:
    page = (await private_net.client.get("/privacy")).text
    assert '<a href="/privacy.json" id="policy-json-link">/privacy.json</a>' in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page  # the rest stays escaped
