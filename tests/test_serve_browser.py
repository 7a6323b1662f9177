"""The page of `latentsearch serve` in a real headless Chromium (Debian's package, driven by
Playwright): type a text query and see snippets, upload a PNG and see thumbnails, click a result
and see its neighbours, read the evaluate figures, use it on a phone-sized window, give a token.

The real app (``create_app``) runs under uvicorn in a thread on a free port, over a root holding
a small text and a small image collection. Skipped, with the reason, when /usr/bin/chromium or
the playwright package is missing (``.ci/run`` installs both).

Screenshots go under the test's tmp_path. For the docs: ``LATENTSEARCH_SCREENSHOTS=docs`` also
writes docs/serve-text.png, serve-images.png and serve-phone.png, and
``LATENTSEARCH_SCREENSHOT_ROOT=DIR`` serves the collections ``mnist`` and ``news`` already built
there (``latentsearch demo --root DIR``: trained fully, so the figures are the real ones)
instead of building small ones.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import latentsearch as ls
from latentsearch.io.png import encode_png

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000  # a ceiling for each wait, never a timing assertion
WATCHDOG_S = 600  # the whole module takes ~40 s alone, ~2 min on a crowded machine

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)",
                allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is missing (pip install -e '.[test]')",
                allow_module_level=True)

expect.set_options(timeout=TIMEOUT_MS)

import uvicorn  # noqa: E402  (after the skips: the test extra brings it with playwright)

from latentsearch.serve.app import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn serving ``app`` in a daemon thread (no signal handlers off the main thread)."""

    def __init__(self, app):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def collections_root(tmp_path_factory) -> Path:
    """A root with ``news`` (text, no labels) and ``mnist`` (images, labelled digits)."""
    given = os.environ.get("LATENTSEARCH_SCREENSHOT_ROOT")
    if given:
        return Path(given)
    root = tmp_path_factory.mktemp("serve-root")
    ls.build_text("news", name="news", root=root, epochs=1, quiet=True)
    ls.build_images("mnist", name="mnist", root=root, epochs=1, quiet=True)
    return root


@pytest.fixture(scope="module")
def server(collections_root):
    with _Server(create_app(collections_root)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API can wait forever when its driver or the browser dies; rather than
    # hold CI until its time limit, print every thread's stack and end the run.
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield b
            b.close()
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def page(browser):
    """A fresh tab (its own sessionStorage) that fails the test on any JavaScript error."""
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _shot(tab, tmp_path: Path, name: str, full_page: bool = False) -> Path:
    """Screenshot under tmp_path (and into $LATENTSEARCH_SCREENSHOTS for the docs)."""
    path = tmp_path / f"{name}.png"
    tab.mouse.move(0, 0)  # no hover highlight in the picture
    tab.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 1000
    docs = os.environ.get("LATENTSEARCH_SCREENSHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(docs) / f"{name}.png")
    return path


def _open(tab, server, name: str) -> None:
    tab.goto(f"{server.url}/#{name}")
    expect(tab.locator("#collection")).to_have_value(name)


def _hit_ids(tab) -> list[int]:
    cards = tab.locator("#results .hit")
    return [int(i) for i in cards.evaluate_all("cs => cs.map(c => c.dataset.id)")]


def test_text_query_shows_snippets(page, server, tmp_path):
    _open(page, server, "news")
    expect(page.locator("#drop")).to_be_hidden()  # no image search on a text collection
    page.fill("#text", "bushfires burning near Sydney")
    page.press("#text", "Enter")
    expect(page.locator("#results .hit")).to_have_count(20)
    snippets = page.locator("#results .hit .snippet").all_inner_texts()
    assert len(snippets) == 20 and all(len(s) > 40 for s in snippets)
    assert any("fire" in s.lower() for s in snippets[:5]), snippets[:5]
    expect(page.locator("#query .asked-text")).to_have_text("bushfires burning near Sydney")
    # news has no labels: the claim panel says so instead of drawing bars
    expect(page.locator("#evaluate")).to_contain_text("no labels")
    expect(page.locator("#evaluate")).to_contain_text("recall@10")
    _shot(page, tmp_path, "serve-text")

    # a click on a snippet: that article's neighbours, its own text quoted as the query
    first = _hit_ids(page)[0]
    page.locator("#results .hit").first.click()
    expect(page.locator("#query .asked-id")).to_have_text(f"#{first}")
    expect(page.locator("#query q")).not_to_be_empty()
    page.wait_for_function(
        f"() => !['{first}'].includes(document.querySelector('#results .hit')?.dataset.id)"
        f" && document.querySelectorAll('#results .hit').length === 20", timeout=TIMEOUT_MS)


def test_image_upload_shows_thumbnails_and_a_click_shows_neighbours(page, server, tmp_path,
                                                                    collections_root):
    col = ls.open("mnist", collections_root)
    item = int(col.ids()[2250])  # a 4: the built-in digits come sorted by label; 4s and 9s mix
    png = tmp_path / "query.png"
    png.write_bytes(encode_png(col.images([item])[0]))  # the collection's own stored pixels

    _open(page, server, "mnist")
    expect(page.locator("#text-form")).to_be_hidden()
    page.set_input_files("#image", str(png))
    expect(page.locator("#query .asked-file")).to_have_text("query.png")
    thumbs = page.locator("#results .hit img")
    expect(thumbs).to_have_count(20)
    page.wait_for_function(  # every thumbnail decoded: the PNG endpoint answered each
        "() => [...document.querySelectorAll('#results .hit img')]"
        ".every(i => i.complete && i.naturalWidth >= 112)", timeout=TIMEOUT_MS)
    ids = _hit_ids(page)
    assert item in ids  # its own pixels find it
    labels = page.locator("#results .hit .label").all_inner_texts()
    assert labels == [h.label for h in col.get(ids)]

    # the claim beside the results: agreement@k against chance and baselines, by distance
    expect(page.locator("#evaluate .bars .name")).to_contain_text(
        ["latents (this index)", "chance", "raw input, exact", "PCA of raw input"])
    expect(page.locator("#evaluate .columns i")).to_have_count(10)
    url = f"{server.url}/collections/mnist/evaluate"  # cached by the server
    with urllib.request.urlopen(url, timeout=60) as res:
        report = json.load(res)
    expect(page.locator("#evaluate .bars .value")).to_have_text(
        [f"{v:.3f}" for v in [report["agreement"]]
         + [b["agreement"] for b in report["baselines"].values()]])
    _shot(page, tmp_path, "serve-images")

    # click a result: the page asks for its neighbours (the query shown becomes that id)
    clicked = ids[1]
    page.locator(f'#results .hit[data-id="{clicked}"]').click()
    expect(page.locator("#query .asked-id")).to_have_text(f"#{clicked}")
    expect(page.locator("#id")).to_have_value(str(clicked))
    page.wait_for_function(
        "(clicked) => { const ids = [...document.querySelectorAll('#results .hit')]"
        ".map(c => Number(c.dataset.id)); return ids.length === 20 && !ids.includes(clicked); }",
        arg=clicked, timeout=TIMEOUT_MS)
    expected = [h.id for h in col.neighbors(clicked, 20)]
    assert _hit_ids(page) == expected
    page.screenshot(path=str(tmp_path / "neighbours.png"))


def test_filter_and_errors(page, server, tmp_path):
    _open(page, server, "mnist")
    page.fill("#filter", "label=3")
    page.fill("#id", "0")
    page.press("#id", "Enter")
    expect(page.locator("#results .hit")).to_have_count(20)
    assert set(page.locator("#results .hit .label").all_inner_texts()) == {"3"}

    # the server's {"error"} line is shown, not a stack or a blank page
    page.fill("#filter", "")
    page.fill("#id", "987654")
    page.press("#id", "Enter")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("987654")
    expect(page.locator("#results .hit")).to_have_count(0)
    # a file that is no image: the server's 400 line
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture at all")
    page.set_input_files("#image", str(fake))
    expect(page.locator("#query .asked-file")).to_have_text("notes.png")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#results .hit")).to_have_count(0)
    # a malformed filter is refused on the page, before any request (Enter re-runs the query)
    page.fill("#filter", '{"label": ')
    page.press("#filter", "Enter")
    expect(page.locator("#error")).to_contain_text("JSON")


def test_phone_sized_window(browser, server, tmp_path):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    try:
        _open(tab, server, "mnist")
        tab.fill("#k", "6")
        tab.fill("#id", "3500")
        tab.press("#id", "Enter")
        expect(tab.locator("#results .hit")).to_have_count(6)
        expect(tab.locator("#evaluate .columns i")).to_have_count(10)
        tab.wait_for_function("() => [...document.querySelectorAll('#results .hit img')]"
                              ".every(i => i.complete && i.naturalWidth > 0)", timeout=TIMEOUT_MS)
        width = tab.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"
        columns = tab.evaluate(
            "() => getComputedStyle(document.getElementById('results')).gridTemplateColumns")
        assert len(columns.split()) == 3, columns  # a responsive grid: three thumbnails a row
        box = tab.locator("#results .hit").first.bounding_box()
        assert box["width"] >= 90  # still big enough to tap
        _shot(tab, tmp_path, "serve-phone", full_page=True)
    finally:
        context.close()


def test_token_from_the_address_or_typed_after_a_401(browser, collections_root):
    with _Server(create_app(collections_root, token="s3cret-token")) as srv:
        context = browser.new_context(viewport=DESKTOP)
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        try:
            # opened as /?token=T: kept for the tab, gone from the address bar, sent as a bearer
            tab.goto(f"{srv.url}/?token=s3cret-token#mnist")
            expect(tab.locator("#collection")).to_have_value("mnist")
            assert "token" not in tab.url
            kept = tab.evaluate("() => sessionStorage.getItem('latentsearch-token')")
            assert kept == "s3cret-token"
            tab.fill("#id", "3")
            tab.press("#id", "Enter")
            expect(tab.locator("#results .hit")).to_have_count(20)
            tab.wait_for_function(  # thumbnails fetched with the header, shown from blobs
                "() => [...document.querySelectorAll('#results .hit img')]"
                ".every(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:'))",
                timeout=TIMEOUT_MS)

            # a new tab without it: the API says 401, the page asks, the typed token works
            fresh = context.new_page()
            fresh.goto(f"{srv.url}/#news")
            expect(fresh.locator("#token-form")).to_be_visible()
            expect(fresh.locator("#error")).to_contain_text(re.compile("token", re.I))
            fresh.fill("#token", "s3cret-token")
            fresh.press("#token", "Enter")
            expect(fresh.locator("#token-form")).to_be_hidden()
            expect(fresh.locator("#collection")).to_have_value("news")
            expect(fresh.locator("#error")).to_be_hidden()
        finally:
            context.close()
