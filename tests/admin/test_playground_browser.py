"""Headless Chromium drives both playgrounds against a real admin, proxy and paced simulator."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.admin.conftest import Admin
from tests.admin.test_browser import shot, sign_in
from tests.admin.test_playground_http import playground_stack
from tests.conftest import Fortress, Sim

pytestmark = pytest.mark.browser
SCORE = re.compile(r"^-?\d\.\d{3}$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fortress, Admin, Sim]]:
    """200-token answers at 20 tokens/s (10 s): short chats ask num_predict 30, the stop test does not."""
    models = "llama3.2:1b,llava:7b,nomic-embed-text,all-minilm"
    with playground_stack(
        tmp_path_factory.mktemp("pg-browser"),
        "playground-user",
        "--rate",
        "20",
        "--tokens",
        "200",
        "--models",
        models,
    ) as s:
        yield s


@pytest.fixture
def page(browser: Browser, stack: tuple[Fortress, Admin, Sim]) -> Iterator[Page]:
    context = browser.new_context(base_url=stack[1].url, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.on("dialog", lambda d: d.accept())
    sign_in(pg)
    yield pg
    context.close()


def png(width: int = 24, height: int = 16) -> bytes:
    """A small valid PNG (a colour gradient), made here so the test ships no binary."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 10 % 256, y * 15 % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ensure_key(page: Page, path: str = "/playground") -> None:
    page.goto(path)
    if page.locator("#pg-key-stored code").count() == 0:
        page.get_by_label("User the key belongs to").select_option("playground-user")
        page.get_by_role("button", name="Create playground key").click()
    expect(page.locator("#pg-key-stored code")).to_have_text(re.compile(r"^fk_[a-z0-9]{8}_…$"))
    expect(page.locator("#pg-key-status")).to_have_text("Using your stored playground key.")


def playground_key_id(home: Fortress) -> str:
    with sqlite3.connect(home.db) as db:
        return db.execute("SELECT key_id FROM playground_keys WHERE admin_name = 'admin'").fetchone()[0]


def usage_rows(home: Fortress, key_id: str, want: int) -> list[tuple]:
    deadline = time.monotonic() + 10  # usage is written in batches
    while True:
        with sqlite3.connect(home.db) as db:
            rows = db.execute(
                "SELECT status, eval_count, error FROM usage"
                " WHERE key_id = ? AND path = '/api/chat' ORDER BY id",
                (key_id,),
            ).fetchall()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def answer(page: Page) -> Locator:
    return page.locator("#pg-log .msg.assistant").last


def test_chat_streams_with_an_image_and_is_recorded_for_the_playground_key(
    page: Page, stack: tuple[Fortress, Admin, Sim], tmp_path: Path
) -> None:
    home, _, sim = stack
    ensure_key(page)
    key_id = playground_key_id(home)
    page.get_by_label("Model", exact=True).select_option("llava:7b")
    page.get_by_label("System prompt").fill("Describe images briefly.")
    page.get_by_label("Max tokens to generate (num_predict)").fill("30")
    page.get_by_label("Temperature").fill("0.2")
    image = png()
    picture = tmp_path / "gradient.png"
    picture.write_bytes(image)
    page.get_by_label("Attach images").set_input_files(str(picture))
    expect(page.locator("#pg-images img")).to_have_count(1)
    page.get_by_label("Message").fill("What is in this picture?")
    sim.clear()
    page.get_by_role("button", name="Send message").click()

    body = answer(page).locator(".body")
    lengths = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lengths.append(len(body.inner_text()))
        if "streaming" not in (answer(page).get_attribute("class") or ""):
            break
        page.wait_for_timeout(100)
    grew = sorted({n for n in lengths if n})
    assert len(grew) >= 3 and lengths == sorted(lengths), f"the answer did not grow over time: {lengths}"
    expect(page.locator("#pg-status")).to_have_text("Done.")
    expect(body).to_contain_text("The quick brown fox jumps over the lazy dog.")
    stats = answer(page).locator(".stats")
    expect(stats).to_contain_text("answer tokens")
    assert re.search(r"llava:7b · \d+ prompt tokens · 30 answer tokens · [\d.]+ tokens/s", stats.inner_text())
    expect(page.locator("#pg-log .msg.user img")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop answer")).to_be_disabled()

    (chat,) = [e for e in sim.requests() if e["path"] == "/api/chat"]
    assert chat["body_length"] > len(base64.b64encode(image))  # the image reached the backend
    assert usage_rows(home, key_id, 1)[-1][:2] == (200, 30)

    page.get_by_label("Message").fill("And in **one** word?")
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("#pg-log .msg.assistant .stats").nth(1)).to_contain_text(
        "30 answer tokens", timeout=20_000
    )
    shot(page, "playground")
    assert [r[:2] for r in usage_rows(home, key_id, 2)] == [(200, 30), (200, 30)]


def test_history_survives_reload_and_exports_and_imports(
    page: Page, stack: tuple[Fortress, Admin, Sim]
) -> None:
    ensure_key(page)
    page.get_by_label("Max tokens to generate (num_predict)").fill("12")
    page.get_by_label("Message").fill("Remember me")
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("#pg-status")).to_have_text("Done.", timeout=20_000)
    page.reload()
    expect(page.locator("#pg-log .msg.user").last).to_have_text(re.compile("Remember me"))
    count = page.locator("#pg-log .msg").count()
    assert count >= 2
    with page.expect_download() as download:
        page.get_by_role("button", name="Export history (JSON)").click()
    exported = Path(download.value.path())
    data = json.loads(exported.read_text())
    assert len(data["messages"]) == count and data["messages"][-2]["content"] == "Remember me"
    assert data["messages"][-1]["stats"]["eval_count"] == 12

    page.get_by_role("button", name="New conversation").click()  # confirm() is accepted
    expect(page.locator("#pg-log .msg")).to_have_count(0)
    page.get_by_label("Import history (JSON file)").set_input_files(str(exported))
    expect(page.locator("#pg-log .msg")).to_have_count(count)
    expect(page.locator("#pg-status")).to_contain_text(f"Imported {count} messages")
    page.reload()
    expect(page.locator("#pg-log .msg")).to_have_count(count)
    page.get_by_label("Import history (JSON file)").set_input_files(
        files=[{"name": "junk.json", "mimeType": "application/json", "buffer": b'{"messages": 3}'}]
    )
    expect(page.locator("#pg-status")).to_contain_text("not a conversation exported from this playground")
    expect(page.locator("#pg-log .msg")).to_have_count(count)


def test_stop_button_ends_a_long_stream_end_to_end(page: Page, stack: tuple[Fortress, Admin, Sim]) -> None:
    home, _, _ = stack
    ensure_key(page)
    key_id = playground_key_id(home)
    before = len(usage_rows(home, key_id, 0))
    page.get_by_role("button", name="New conversation").click()
    page.get_by_label("Max tokens to generate (num_predict)").fill("")  # 200 tokens: ten seconds
    page.get_by_label("Message").fill("Tell me a long story.")
    page.get_by_role("button", name="Send message").click()
    body = answer(page).locator(".body")
    expect(body).to_contain_text("fox")
    page.get_by_role("button", name="Stop answer").click()
    expect(page.locator("#pg-status")).to_have_text("Stopped.")
    expect(answer(page).locator(".stats")).to_contain_text("stopped")
    stopped_at = body.inner_text()
    page.wait_for_timeout(1000)
    assert body.inner_text() == stopped_at and len(stopped_at) < 200
    expect(page.get_by_role("button", name="Send message")).to_be_enabled()
    rows = usage_rows(home, key_id, before + 1)[before:]
    # the abort reached the proxy: it recorded a client that went away, not a finished answer
    assert rows and rows[-1][1] is None and rows[-1][2] == "client closed the connection", rows


def test_model_html_is_shown_as_text_never_run(page: Page, stack: tuple[Fortress, Admin, Sim]) -> None:
    ensure_key(page)
    hostile = (
        'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script>\n\n'
        "```html\n<b onmouseover=alert(1)>bold?</b>\n```\n\n"
        "**really bold**, `<i>code</i>` and [a link](javascript:window.__xss=3) or [docs](https://example.com/x)\n"
        "- item <svg onload=window.__xss=4>\n"
    )
    conversation = {
        "version": 1,
        "messages": [
            {"role": "user", "content": "<img src=y onerror=window.__xss=5>"},
            {"role": "assistant", "content": hostile},
        ],
    }
    page.get_by_label("Import history (JSON file)").set_input_files(
        files=[
            {
                "name": "hostile.json",
                "mimeType": "application/json",
                "buffer": json.dumps(conversation).encode(),
            }
        ]
    )
    reply = answer(page)
    expect(reply).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(reply).to_contain_text("<script>window.__xss=2</script>")
    expect(reply.locator("pre code")).to_have_text("<b onmouseover=alert(1)>bold?</b>")
    expect(reply.locator("strong")).to_have_text("really bold")
    expect(reply.locator("p code")).to_have_text("<i>code</i>")
    expect(reply.locator("a")).to_have_count(1)
    expect(reply.locator("a")).to_have_attribute("href", "https://example.com/x")
    expect(reply.locator("li")).to_contain_text("<svg onload=window.__xss=4>")
    expect(page.locator("#pg-log .msg.user .body")).to_have_text("<img src=y onerror=window.__xss=5>")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#pg-log img, #pg-log script, #pg-log svg, #pg-log b, #pg-log i").count() == 0
    page.get_by_role("button", name="New conversation").click()


def test_embeddings_plot_three_sets_for_two_models_side_by_side(
    page: Page, stack: tuple[Fortress, Admin, Sim]
) -> None:
    ensure_key(page, "/playground/embeddings")
    for name in ("animals", "vehicles", "emotions"):
        expect(page.get_by_label(re.compile(f"^{name} \\(30 words\\)$"))).to_be_checked()
    page.get_by_label("Embedding model").select_option("nomic-embed-text:latest")
    page.get_by_label("Second model to compare (optional)").select_option("all-minilm:latest")
    page.get_by_role("button", name="Embed and plot").click()
    plots = page.locator("figure.pg-plot")
    expect(plots).to_have_count(2, timeout=30_000)
    for i, model in enumerate(("nomic-embed-text:latest", "all-minilm:latest")):
        plot = plots.nth(i)
        expect(plot).to_have_attribute("data-model", model)
        expect(plot.locator("g.point")).to_have_count(90)
        expect(plot.locator("g.legend")).to_have_count(3)
        expect(plot.locator(".pg-silhouette")).to_have_text(SCORE)
    classes = plots.first.locator("g.point circle").evaluate_all(
        "cs => [...new Set(cs.map(c => c.getAttribute('class')))]"
    )
    assert sorted(classes) == ["series-0", "series-1", "series-2"]
    expect(page.locator(".pg-verdict")).to_contain_text("separate")
    expect(page.locator("table.pg-sim caption").first).to_have_text("Mean similarity between sets")
    assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 0
    shot(page, "embeddings")

    page.get_by_label("Show text labels on the plots").uncheck()
    expect(plots.first.locator("g.point text").first).to_be_hidden()
    page.get_by_role("button", name="Clear the sets").click()
    page.get_by_label("Your texts (one per line; a line “# name” starts a new set)").fill(
        "# planets\nMars\nVenus\nEarth"
    )
    page.get_by_label("Second model to compare (optional)").select_option("")
    page.get_by_role("button", name="Embed and plot").click()
    expect(plots).to_have_count(1, timeout=30_000)
    expect(plots.first.locator("g.point")).to_have_count(3)
    expect(plots.first.locator(".pg-silhouette")).to_have_text("needs two sets")
    expect(page.locator("table.pg-sim caption")).to_have_text("Similarity of every pair of texts")


def test_pasted_key_is_used_and_never_stored(page: Page, stack: tuple[Fortress, Admin, Sim]) -> None:
    home, _, _ = stack
    key = home.key("playground-user", "--models", "nomic-*")
    page.goto("/playground/embeddings")
    page.get_by_text("Or use a key you paste").click()
    page.get_by_label("API key (kept in this browser tab only, never stored)").fill(key)
    page.get_by_role("button", name="Use pasted key").click()
    expect(page.locator("#pg-key-status")).to_contain_text(f"Using the pasted key fk_{key[3:11]}_…")
    expect(page.locator("#pg-models-status")).to_have_text("1 model available to this key.")
    expect(page.get_by_label("Embedding model").locator("option")).to_have_text(
        ["nomic-embed-text:latest (137M)"]
    )
    page.get_by_role("button", name="Embed and plot").click()
    expect(page.locator("figure.pg-plot g.point")).to_have_count(90, timeout=30_000)
    assert page.evaluate("localStorage.length") == 0 or key not in page.evaluate(
        "JSON.stringify(localStorage)"
    )
    with sqlite3.connect(home.db) as db:
        ((rows,),) = db.execute(
            "SELECT COUNT(*) FROM usage WHERE key_id = ? AND path = '/api/embed'", (key[3:11],)
        )
    assert rows == 1
    page.get_by_role("button", name="Stop using pasted key").click()
    expect(page.locator("#pg-key-status")).to_have_text("Using your stored playground key.")


def test_playground_pages_fit_a_phone_and_label_every_field(
    page: Page, stack: tuple[Fortress, Admin, Sim]
) -> None:
    ensure_key(page)
    page.set_viewport_size({"width": 360, "height": 800})
    for path in ("/playground", "/playground/embeddings"):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways at 360 px ({overflow} px)"
        unlabeled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`)))
               .map(e => e.outerHTML)"""
        )
        assert unlabeled == [], path
    page.goto("/playground")
    page.get_by_label("Message").focus()
    page.keyboard.type("Keyboard only")
    page.get_by_label("Max tokens to generate (num_predict)").fill("3")
    page.get_by_label("Message").press("Control+Enter")  # sends without the mouse
    expect(page.locator("#pg-log .msg.user").last).to_have_text(re.compile("Keyboard only"))
    expect(page.locator("#pg-status")).to_have_text("Done.", timeout=20_000)
