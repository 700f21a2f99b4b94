"""The web UI in Debian's Chromium against a real ``lichen up`` serving the real model.

Tests run in file order and share one ``lichen up``; the two-node dashboard test
comes last because its second node changes where requests are routed.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import Harness, LichenProcess, LogReady, lichen_argv
from openai import AuthenticationError, OpenAI
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from lichen.privacy.policy import preset_text

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]

PASSWORD = "lichen moss on a warm stone"
LONG_PROMPT = "Count from 1 to 300, writing every number in words, one per line."

# Records, for the newest answer, the text length after each change while it streams.
WATCH_STREAM = """
() => {
  window.__lengths = [];
  const transcript = document.getElementById("transcript");
  new MutationObserver(() => {
    const answers = transcript.querySelectorAll(".message-assistant");
    const last = answers[answers.length - 1];
    if (last && last.dataset.state === "streaming") {
      window.__lengths.push(last.querySelector(".message-text").textContent.length);
    }
  }).observe(transcript, { childList: true, subtree: true, characterData: true });
}
"""


def network(up: LichenProcess) -> dict:  # type: ignore[type-arg]
    return httpx.get(up.url + "/ui/api/network", timeout=10).json()  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def test_chat_streams_tokens_and_names_the_serving_node(
    up: LichenProcess, page: Page, screenshot: Shot
) -> None:
    page.goto(up.url + "/")
    expect(page).to_have_title("Chat · Lichen")
    model = page.get_by_label("Model")
    expect(model.locator("option")).to_have_count(2)  # auto + the served model
    assert model.input_value() == "auto"
    expect(model.locator('option[value="smollm2-135m"]')).to_have_count(1)
    expect(page.locator("#policy-summary")).to_contain_text(re.compile("prompt", re.I))

    page.evaluate(WATCH_STREAM)
    send(page, "Write a short poem about moss on a stone wall.")
    answer = page.locator(".message-assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=90_000)

    text = answer.locator(".message-text").inner_text()
    lengths = page.evaluate("window.__lengths")
    growing = sorted({n for n in lengths if n > 0})
    assert len(growing) >= 3, f"the answer did not stream in pieces: {lengths}"
    assert growing[-1] <= len(text)
    peer = network(up)["nodes"][0]["peer_id"]
    assert answer.get_attribute("data-node") == peer  # from the x-lichen-node header
    meta = answer.locator(".message-meta")
    expect(meta).to_contain_text("served by first")
    expect(meta).to_contain_text("first token")
    expect(page.locator("#chat-status")).to_have_text("Answer complete.")
    expect(page.get_by_label("Message")).to_be_focused()
    screenshot(page, "chat")

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "chat-phone")


def _answer_being_stopped(page: Page, stop: Locator, attempts: int = 3) -> Locator:
    """Ask for a long answer and press Stop while it streams. The model (sampling) may
    finish a count early, before the click lands: then ask again, a bounded number of
    times. Returns the answer that was stopped."""
    for _ in range(attempts):
        send(page, LONG_PROMPT)
        answer = page.locator(".message-assistant").last
        expect(stop).to_be_enabled()

        def begun(a: Locator = answer) -> bool:
            streaming = a.get_attribute("data-state") == "streaming"
            return not streaming or len(a.locator(".message-text").inner_text()) > 40

        wait_until(begun, 60, "the first tokens")
        if answer.get_attribute("data-state") == "streaming":
            with contextlib.suppress(PlaywrightTimeout):
                stop.click(timeout=10_000)
        expect(answer).not_to_have_attribute("data-state", "streaming", timeout=90_000)
        if answer.get_attribute("data-state") == "stopped":
            return answer
    raise AssertionError(f"every one of {attempts} answers ended before Stop could be pressed")


def test_stop_button_aborts_the_generation(up: LichenProcess, page: Page) -> None:
    page.goto(up.url + "/")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_disabled()
    answer = _answer_being_stopped(page, stop)
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".message-meta")).to_contain_text("stopped")
    expect(stop).to_be_disabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    stopped_at = answer.locator(".message-text").inner_text()
    # The gateway cancels the job on the node: its slot frees long before 300 numbers.
    wait_until(lambda: network(up)["nodes"][0]["inflight"] == 0, 10, "the job to be cancelled")
    # A later answer that completes is the barrier: anything still in flight for the
    # stopped one would have landed by then.
    answers = page.locator(".message-assistant")
    before = answers.count()
    stopped = answers.nth(before - 1)  # .last would follow the next answer
    send(page, "Say hi.")
    expect(answers).to_have_count(before + 1)
    expect(answers.last).to_have_attribute("data-state", "done", timeout=90_000)
    assert stopped.locator(".message-text").inner_text() == stopped_at  # nothing more arrived


def test_telemetry_toggle_is_off_by_default_and_persists(
    up: LichenProcess, page: Page, screenshot: Shot
) -> None:
    page.goto(up.url + "/node")
    expect(page.get_by_role("heading", level=1)).to_have_text("Node: first")
    expect(page.locator("#node-served")).not_to_have_text("")
    toggle = page.get_by_role("switch", name="Share telemetry with the network")
    expect(toggle).not_to_be_checked()
    toggle.focus()
    page.keyboard.press("Space")  # keyboard operable
    expect(page.locator("#telemetry-status")).to_have_text("Saved: telemetry is on.")
    page.reload()
    expect(toggle).to_be_checked()
    screenshot(page, "node")

    toggle.click()
    expect(page.locator("#telemetry-status")).to_have_text("Saved: telemetry is off.")
    page.reload()
    expect(toggle).not_to_be_checked()


def test_privacy_page_states_the_policy(up: LichenProcess, page: Page, screenshot: Shot) -> None:
    page.goto(up.url + "/")
    summary = page.locator("#policy-text").inner_text()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Privacy").click()
    expect(page).to_have_url(up.url + "/privacy")
    expect(page.get_by_role("heading", level=1)).to_have_text("Privacy policy: private")
    expect(page.locator("main")).to_contain_text(summary)  # the chat's summary, same words
    expect(page.get_by_role("heading", name="What is stored, where, for how long")).to_be_visible()
    page.locator("summary", has_text="The policy file").click()  # <details>: the file itself
    expect(page.locator("details pre")).to_contain_text('name = "private"')
    screenshot(page, "privacy")


def test_public_feed_when_the_policy_has_one(
    harness: Harness, page: Page, screenshot: Shot
) -> None:
    data_dir = harness.root / "opennet" / "data"  # where the harness puts this process's data
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / "policy.toml").write_text(preset_text("open"), encoding="utf-8")
    opennet = harness.up("opennet", env={"LICHEN_PARALLEL": "1", "LICHEN_CTX_SIZE": "1024"})
    try:
        page.goto(opennet.url + "/")
        expect(page.locator("#policy-text")).to_contain_text("public feed")
        publish = page.get_by_label("Publish this conversation on the public feed")
        expect(publish).not_to_be_checked()  # nothing is published unless asked
        send(page, "Name one kind of moss.")  # not ticked: stays private
        expect(page.locator(".message-assistant").last).to_have_attribute(
            "data-state", "done", timeout=90_000
        )
        page.get_by_role("button", name="New chat").click()  # publish only what follows
        publish.check()
        send(page, "Why does moss grow on stones?")
        answer = page.locator(".message-assistant").last
        expect(answer).to_have_attribute("data-state", "done", timeout=90_000)
        expect(answer).to_contain_text("Published on the public feed")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Public feed").click()
        expect(page).to_have_url(opennet.url + "/feed")
        posts = page.locator("article.feed-entry")
        expect(posts).to_have_count(1)
        expect(posts.first).to_contain_text("Why does moss grow on stones?")
        expect(page.locator("main")).not_to_contain_text("Name one kind of moss.")
        screenshot(page, "feed")
    finally:
        opennet.stop()


def test_account_sign_up_key_for_openai_client_export_revoke_delete(
    up: LichenProcess, page: Page, screenshot: Shot
) -> None:
    page.goto(up.url + "/")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill("mossfan")
    page.get_by_label("Email").fill("mossfan@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    screenshot(page, "signup")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".notice")).to_contain_text("Welcome to Lichen")
    expect(page).to_have_url(up.url + "/account")  # the welcome note is for this view only
    expect(page.get_by_role("link", name="Account (mossfan)")).to_be_visible()

    page.get_by_label("Name").fill("script")
    page.get_by_role("button", name="Create key").click()
    secret_box = page.locator("#new-key-secret")
    expect(secret_box).to_have_text(re.compile(r"\S{20,}"))
    secret = secret_box.inner_text()
    row = page.locator("#keys-body tr", has_text="script")
    expect(row).to_have_count(1)
    assert secret not in row.inner_text()  # listed by prefix only
    screenshot(page, "account-new-key")

    client = OpenAI(base_url=up.url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert answer.choices[0].message.content
    page.reload()
    assert secret not in page.content()  # never shown again
    expect(page.locator(".notice")).to_have_count(0)  # not repeated on reload
    expect(page.locator("#usage-requests")).to_have_text("1")
    screenshot(page, "account")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data").click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    flat = json.dumps(exported)
    assert "mossfan@example.org" in flat and "script" in flat and secret not in flat

    page.get_by_role("button", name="Revoke key script").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(up.url + "/login?signed_out=1")
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.get_by_label("Username or email").fill("mossfan")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(up.url + "/account")

    page.goto(up.url + "/")  # a signed-in chat: session cookie plus the CSRF header
    send(page, "Say hi.")
    expect(page.locator(".message-assistant").last).to_have_attribute(
        "data-state", "done", timeout=90_000
    )

    page.goto(up.url + "/account")
    page.get_by_label("Password").fill(PASSWORD)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete my account").click()
    expect(page).to_have_url(up.url + "/login?deleted=1")
    expect(page.locator(".notice")).to_contain_text("restore it within 30 days")
    screenshot(page, "login")


def test_pages_are_keyboard_accessible(up: LichenProcess, page: Page) -> None:
    page.goto(up.url + "/network")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    for path in ("/", "/network", "/node", "/privacy", "/login", "/signup"):
        page.goto(up.url + path)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map((el) => el.id || el.name)"""
        )
        assert unlabelled == [], f"{path}: controls without a label: {unlabelled}"
        clickable_divs = page.locator("div[onclick], span[onclick], div[role=button]").count()
        assert clickable_divs == 0


def test_dashboard_shows_two_nodes_live(
    up: LichenProcess, harness: Harness, page: Page, screenshot: Shot
) -> None:
    page.goto(up.url + "/network")
    rows = page.locator("#nodes-body tr")
    expect(rows).to_have_count(1)
    expect(page.locator("#stat-nodes")).to_have_text("1")

    invite = subprocess.run(
        [*lichen_argv(), "invite", "create", "--data-dir", str(up.data_dir)],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    harness.start(
        "second",
        ["node", "--join", invite, "--name", "second", "--data-dir", "{data_dir}"],
        env={"LICHEN_PARALLEL": "1", "LICHEN_CTX_SIZE": "1024"},
        ready=LogReady(r"joined tracker"),
    )

    # No reload: the page polls and redraws.
    expect(rows).to_have_count(2, timeout=15_000)
    expect(page.locator("#stat-nodes")).to_have_text("2")
    expect(rows.nth(0).locator("th")).to_contain_text("first")
    expect(rows.nth(1).locator("th")).to_contain_text("second")
    for i in range(2):
        expect(rows.nth(i).locator('td[data-label="Models"]')).to_have_text("smollm2-135m")
        expect(rows.nth(i).locator('td[data-label="Hardware"]')).to_contain_text("cores")
        expect(rows.nth(i).locator('td[data-label="Reputation"]')).to_contain_text("%")
    models = page.locator("#models-body tr")
    expect(models).to_have_count(1)
    expect(models.first).to_contain_text("smollm2-135m")
    expect(models.first.locator("td")).to_have_text("2")
    bars = page.locator("#rate-bars .bar")
    recent = sum(int(bars.nth(i).get_attribute("data-count") or 0) for i in range(bars.count()))
    assert recent >= 1  # the finished chat above, from the request log
    screenshot(page, "network")

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "network-phone")
