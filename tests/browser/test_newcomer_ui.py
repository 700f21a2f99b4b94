"""The chat page's layout as a newcomer sees it, in Debian's Chromium against ``lichen up``:
aligned settings, privacy choices explained in place, the status next to the answer, a
transcript that grows with the conversation, a linked /privacy.json and an HTML 404."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import LichenProcess
from playwright.sync_api import Page, Route, expect

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


def test_chat_layout_two_answers(up: LichenProcess, page: Page, screenshot: Shot) -> None:
    page.goto(up.url + "/")
    # Model and Privacy labels on one line, whatever help text sits under Privacy.
    model_label, privacy_label = (
        box(page, 'label[for="model"]'),
        box(page, 'label[for="privacy-class"]'),
    )
    assert abs(model_label["y"] - privacy_label["y"]) < 2, (model_label, privacy_label)
    assert abs(box(page, "#model")["y"] - box(page, "#privacy-class")["y"]) < 2

    # The choices are explained in plain words, in place.
    page.locator("#privacy-choices summary").click()
    expect(page.locator("#privacy-choices")).to_contain_text("operator's own computers")
    page.select_option("#privacy-class", "private-net-only")
    expect(page.locator("#privacy-class-help")).to_contain_text("vouches for")
    page.select_option("#privacy-class", "")
    page.locator("#privacy-choices summary").click()

    # Layout, not answer length: keep the sampled answers short (the UI sends no
    # max_tokens, and a rambling answer on a loaded runner can take minutes).
    def short_answers(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        route.continue_(post_data=json.dumps(body | {"max_tokens": 48}))

    page.route("**/v1/chat/completions", short_answers)
    for question in ("Name three colours.", "Now name three animals."):
        page.get_by_label("Message").fill(question)
        page.get_by_label("Message").press("Enter")
        expect(page.locator(".message-assistant").last).to_have_attribute(
            "data-state", "done", timeout=90_000
        )
    answers = page.locator(".message-assistant")
    expect(answers).to_have_count(2)

    transcript = box(page, "#transcript")
    status = box(page, "#chat-status")
    expect(page.locator("#chat-status")).to_have_text("Answer complete.")
    # The status sits right under the transcript (above the composer), near the answer.
    assert 0 <= status["y"] - (transcript["y"] + transcript["height"]) < 40
    assert status["y"] < box(page, "#composer")["y"]
    # The transcript grows: both answers are inside it at full height, nothing scrolls in it.
    assert page.evaluate(
        "(() => { const t = document.getElementById('transcript');"
        " return t.scrollHeight <= t.clientHeight + 1; })()"
    )
    last = box(page, ".message-assistant >> nth=1")
    assert last["y"] + last["height"] <= transcript["y"] + transcript["height"] + 1
    screenshot(page, "newcomer-chat-two-answers")


def test_privacy_json_is_a_link_and_unknown_pages_are_html(
    up: LichenProcess, page: Page, screenshot: Shot
) -> None:
    page.goto(up.url + "/privacy")
    link = page.locator("#policy-json-link")
    expect(link).to_have_attribute("href", "/privacy.json")
    page.goto(up.url + "/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    screenshot(page, "newcomer-not-found")
