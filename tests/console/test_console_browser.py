"""The operator's loop in a real browser (Debian's Chromium driven by Playwright) against a real `serve.py` and a
real Redis: run the Hamilton clip with nobody enrolled -> Unknowns shows Lin-Manuel Miranda's cluster with faces
-> name him in the page -> run the clip again -> Events shows his name; then Search, Live and logging out.

Screenshots of every page are saved to $FACESTREAM_SCREENSHOTS when it is set (the README's set: docs/console),
else under the test's tmp_path, so taking them is always exercised.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.app.config import load_app_config
from pipeline.app.session import RunOptions, Session

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
GALLERY = "test-console-e2e"
CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
LIN_PHOTO = "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png"
LIN = "Lin-Manuel Miranda"
CAMERA = "stage"
# Live frames and camera health that Live still has at the end; events with their face crops (Events shows them)
RUN_OVERRIDES = ["console.snapshots=true", "console.snapshot_ttl_s=120", "events.include_crops=true"]
VIEWPORT = {"width": 1280, "height": 800}
MAX_FULL_PAGE_PX = 2400  # taller pages are shot as the viewport only, to keep the PNGs small


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_gallery(client) -> None:
    keys = list(client.scan_iter(f"fs:{{{GALLERY}}}:*"))
    if keys:
        client.delete(*keys)


def run_clip(redis_server, shared_data) -> dict:
    session = Session(load_app_config(None, RUN_OVERRIDES),
                      RunOptions(sources=[(CAMERA, str(shared_data / CLIP))], gallery=GALLERY,
                                 redis_url=redis_server.url))
    try:
        return session.run()
    finally:
        session.close()


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian's chromium package drives this test)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def console_server(redis_server, tmp_path_factory):
    """A real `serve.py` on a free loopback port over the test Redis and gallery GALLERY (emptied first)."""
    clear_gallery(redis_server.client())
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--host", "127.0.0.1", "--port", str(port),
                                 "--gallery", GALLERY, "--redis-url", redis_server.url, "--log-level", "WARNING"],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve.py exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve.py not healthy after 60 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ["FACESTREAM_SCREENSHOTS"]) if os.environ.get("FACESTREAM_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def loaded(page, selector: str, at_least: int = 1) -> int:
    """How many <img> match `selector` once each (scrolled into view: some are lazy) has loaded; fails when
    fewer than `at_least` match or any of them did not load (naturalWidth 0)."""
    images = page.locator(selector)
    count = images.count()
    assert count >= at_least, f"{count} images match {selector} on {page.url}, expected at least {at_least}"
    for k in range(count):
        images.nth(k).scroll_into_view_if_needed()
    page.wait_for_function("(sel) => [...document.querySelectorAll(sel)].every(i => i.complete)", arg=selector,
                           timeout=10_000)
    widths = page.eval_on_selector_all(selector, "els => els.map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), f"images {selector} on {page.url} did not load: widths {widths}"
    page.evaluate("window.scrollTo(0, 0)")
    return count


def shoot(page, folder: Path, name: str) -> Path:
    """A full-page PNG (the viewport only when the page is very tall)."""
    path = folder / f"{name}.png"
    height = page.evaluate("document.documentElement.scrollHeight")
    page.screenshot(path=str(path), full_page=height <= MAX_FULL_PAGE_PX)
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small"
    return path


def test_the_operator_names_an_unknown_in_the_browser_and_the_next_run_shows_the_name(
        chromium, console_server, redis_server, shared_data, shots):
    from playwright.sync_api import expect, sync_playwright

    from pipeline.api.access import ApiKeys

    base = console_server
    _, key = ApiKeys(redis_server.client()).create("admin")
    first = run_clip(redis_server, shared_data)  # nobody enrolled: Lin-Manuel Miranda becomes an unknown
    assert first["unknowns"]["clusters_started"] >= 1, first["unknowns"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport=VIEWPORT, base_url=base)
            context.set_default_timeout(15_000)
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} ({page.url})")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e} ({page.url})"))

            # Log in.
            page.goto("/live")
            expect(page).to_have_url(re.compile(r"/login$"))  # no session yet
            expect(page.locator("#key")).to_be_visible()
            shoot(page, shots, "login")
            page.fill("#key", key)
            page.click("#login")
            expect(page).to_have_url(re.compile(r"/live$"))
            expect(page.locator("#logout")).to_be_visible()

            # Unknowns: the clip's stranger, with his faces.
            page.goto("/unknowns")
            clusters = page.locator("[data-testid=cluster]")
            expect(clusters).to_have_count(1)
            cluster_id = clusters.first.get_attribute("data-cluster")
            assert cluster_id and cluster_id.startswith("unknown-"), cluster_id
            faces = loaded(page, f"[data-cluster='{cluster_id}'] img")
            shoot(page, shots, "unknowns")

            page.click(f"[data-cluster='{cluster_id}'] h2 a")
            expect(page.locator("#cluster-id")).to_have_text(cluster_id)
            assert loaded(page, "[data-testid=sighting] img") >= faces
            shoot(page, shots, "unknown")

            # Name him through the cluster's form on Unknowns.
            page.goto("/unknowns")
            form = page.locator(f"#name-form-{cluster_id}")
            form.locator("input[name=name]").fill(LIN)
            form.locator("button[type=submit]").click()
            expect(page).to_have_url(re.compile(r"/unknowns\?"))
            message = page.locator("#message")
            expect(message).to_contain_text(f"named {cluster_id} '{LIN}'")
            enrolled = int(re.search(r"(\d+) templates enrolled", message.inner_text()).group(1))
            assert enrolled >= 1, message.inner_text()
            expect(page.locator("#no-clusters")).to_be_visible()

            # People lists him, with template faces that load.
            page.click("#nav-people")
            row = page.locator(f"[data-testid=person][data-name='{LIN}']")
            expect(row).to_have_count(1)
            shoot(page, shots, "people")
            row.locator("a").click()
            expect(page.locator("#person-name")).to_have_text(LIN)
            expect(page.locator("[data-testid=template]")).to_have_count(enrolled)
            assert loaded(page, "[data-testid=template] img") == enrolled  # every template kept its crop
            shoot(page, shots, "person")

            # Run the clip again with Events open: his event streams in (live updates) carrying his name.
            page.goto("/events")
            expect(page.locator("[data-testid=event]").first).to_be_visible()  # the first run's
            page.wait_for_timeout(500)  # the page's event stream is connected
            second = run_clip(redis_server, shared_data)
            assert second["unknowns"]["clusters_started"] == 0, second["unknowns"]
            streamed = page.locator("tr.new[data-testid=event]", has_text="identity_confirmed").filter(has_text=LIN)
            expect(streamed.first).to_be_visible()
            expect(streamed.first).to_contain_text("into the video")  # a file's media time, not 1970
            page.reload()
            named = page.locator("[data-testid=event]", has_text="identity_confirmed").filter(has_text=LIN)
            expect(named.first).to_be_visible()
            expect(named.first).to_contain_text("into the video")
            expect(page.locator("#events")).not_to_contain_text("1970-01-01")
            loaded(page, "[data-testid=event] img")  # the events' face crops
            shoot(page, shots, "events")
            named.first.locator("td:nth-child(2) a").click()
            expect(page).to_have_url(re.compile(r"/events/\d+-\d+$"))
            detail = page.locator("#event-detail")
            expect(detail).to_contain_text(LIN)
            expect(page.locator("h1")).to_have_text(f"identity_confirmed on {CAMERA}")
            loaded(page, "[data-testid=sighting] img")
            shoot(page, shots, "event")

            # Search by his reference photo.
            page.click("#nav-search")
            page.set_input_files("#search-image", str(shared_data / LIN_PHOTO))
            page.click("#search")
            match = page.locator(f"[data-testid=match][data-kind=identity][data-id='{LIN}']")
            expect(match).to_have_count(1)
            expect(match).to_contain_text("similarity")
            shoot(page, shots, "search")

            # Live: the camera's latest frame and its health.
            page.click("#nav-live")
            camera = page.locator(f"[data-testid=camera][data-camera='{CAMERA}']")
            expect(camera).to_have_count(1)
            expect(page.locator("#no-live")).to_have_count(0)
            loaded(page, f"[data-camera='{CAMERA}'] img.snapshot")
            expect(camera.locator("[data-testid=health]")).to_contain_text("fps")
            shoot(page, shots, "live")

            # Log out: back to the login page, and the pages and the API refuse the old session.
            page.click("#logout")
            expect(page).to_have_url(re.compile(r"/login$"))
            page.goto("/people")
            expect(page).to_have_url(re.compile(r"/login$"))
            assert page.request.get("/api/v1/people").status == 401

            assert not problems, "\n".join(problems)
        finally:
            browser.close()
