"""What a browser does with the login: in headless Chromium, a page on another origin (another
port of 127.0.0.1) can neither log the annotator's tab in to another account nor log it out;
the app's own log-out control works; page scripts cannot read the session token; and the login
card says in one message why a login was refused."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data import labeling, store
from tests.browser import chromium
from tests.labeling_fixtures import PASSWORD


class OtherOrigin:
    """A site on another port that serves the pages it is given."""

    def __init__(self):
        pages = self.pages = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def other_origin():
    site = OtherOrigin()
    yield site
    site.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _log_in(context, url, name, password=PASSWORD):
    page = context.new_page()
    page.goto(url)
    page.locator("input").nth(0).fill(name)
    page.locator("input").nth(1).fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#rl-user", timeout=30_000)
    return page


def _user(page, url) -> str | None:
    """Who the browser's cookies log in as, asked by a script of the app's own page."""
    page.goto(url + "gradio_api/login_check")  # a light same-origin page for the script
    return page.evaluate("fetch('/gradio_api/user').then(r => r.json())")


def test_another_origin_cannot_log_the_tab_in_to_another_account(browser, served,
                                                                 other_origin, app_log):
    url = served["url"]
    other_origin.pages["/login"] = f"""<form method="post" action="{url}login" id="f">
      <input name="username" value="bob"><input name="password" value="{PASSWORD}"></form>
      <script>document.getElementById('f').submit()</script>"""
    other_origin.pages["/fetch"] = f"""<script>
      const body = new URLSearchParams({{username: 'bob', password: '{PASSWORD}'}});
      fetch('{url}login', {{method: 'POST', body, credentials: 'include', mode: 'no-cors'}})
        .then(() => document.title = 'sent');</script>"""
    context = browser.new_context()
    page = _log_in(context, url, "ann")
    page.goto(other_origin.url + "/login")
    page.wait_for_load_state()
    assert "other sites" in page.content()
    page.goto(other_origin.url + "/fetch")
    page.wait_for_function("document.title === 'sent'")
    assert _user(page, url) == "ann"
    assert sum("another site" in r.getMessage() for r in app_log.records) == 2
    context.close()


def test_another_origin_cannot_log_the_tab_out(browser, served, other_origin):
    url = served["url"]
    other_origin.pages["/img"] = f'<img src="{url}logout"><img src="{url}logout/">'
    other_origin.pages["/post"] = f"""<form method="post" action="{url}logout" id="f"></form>
      <script>document.getElementById('f').submit()</script>"""
    context = browser.new_context()
    page = _log_in(context, url, "ann")
    page.goto(other_origin.url + "/img")
    page.wait_for_load_state("networkidle")
    assert _user(page, url) == "ann"
    page.goto(url + "logout")  # a link or a navigation to /logout only asks
    assert page.locator("#rl-logout-confirm").is_visible()
    assert _user(page, url) == "ann"
    page.goto(other_origin.url + "/post")
    page.wait_for_load_state()
    assert "other sites" in page.content()
    assert _user(page, url) == "ann"
    context.close()


def test_the_pages_own_log_out_controls_work(browser, served):
    url = served["url"]
    context = browser.new_context()
    page = _log_in(context, url, "ann")
    page.locator("#rl-logout").click()
    page.wait_for_selector("input[type=password]")
    assert _user(page, url) is None
    page = _log_in(context, url, "ann")
    page.goto(url + "logout")
    page.locator("#rl-logout-confirm").click()
    page.wait_for_selector("input[type=password]")
    assert _user(page, url) is None
    context.close()


def test_page_scripts_cannot_read_the_session_token(browser, served):
    url = served["url"]
    context = browser.new_context()
    page = _log_in(context, url, "ann")
    tokens = [c["value"] for c in context.cookies() if c["name"].startswith("access-token")]
    assert tokens and all(c["httpOnly"] for c in context.cookies()
                          if c["name"].startswith("access-token"))
    seen = page.evaluate("""async () => {
        const out = [document.cookie];
        for (const path of ['/gradio_api/token', '/gradio_api/token/', '/token']) {
            const r = await fetch(path);
            out.push(r.status + ' ' + await r.text());
        }
        return out.join('\\n');
    }""")
    assert not [t for t in tokens if t in seen], seen
    context.close()


def _refusal_in_the_card(page) -> dict:
    return page.evaluate("""() => {
        const box = document.getElementById('rl-login-refused');
        const password = document.querySelector('input[type=password]');
        const visible = (el) => !!el && el.offsetParent !== null && el.innerText.trim() !== '';
        let card = password;
        while (card && !(box && card.contains(box))) card = card.parentElement;
        const cardWidth = card ? card.getBoundingClientRect().width : 0;
        return {
            text: box ? box.innerText : null,
            visible: visible(box),
            in_card: !!card && card !== document.body && cardWidth < window.innerWidth * 0.9,
            others: [...document.querySelectorAll('p')].filter(
                p => p !== box && visible(p) && /credentials|refused|Too many/i.test(p.innerText))
                .map(p => p.innerText),
        };
    }""")


def _submit(page, name, password, expected=None):
    page.locator("input").nth(0).fill(name)
    page.locator("input").nth(1).fill(password)
    with page.expect_response(lambda r: r.url.endswith("/login")):
        page.get_by_role("button", name="Login").click()
    if expected:  # the message is written once the answer's body is read
        page.wait_for_function(
            "(t) => (document.getElementById('rl-login-refused')?.innerText || '').includes(t)",
            arg=expected)


def test_the_login_card_says_why_in_one_message(browser, served):
    labeling.set_disabled(store.open_store(served["db"]), "bob", True)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(served["url"])
        _submit(page, "bob", PASSWORD, "disabled")
        shown = _refusal_in_the_card(page)
        assert shown["visible"] and shown["in_card"] and shown["others"] == [], shown

        for i in range(3):  # the default limit: 3 failures per name from one address
            _submit(page, "ann", f"wrong-password-{i}", "Incorrect credentials")
            shown = _refusal_in_the_card(page)
            assert shown["visible"] and shown["in_card"] and shown["others"] == [], shown
        _submit(page, "ann", PASSWORD, "Too many")  # right, but locked out: says only that
        shown = _refusal_in_the_card(page)
        assert shown["visible"] and shown["in_card"] and shown["others"] == [], shown
    finally:
        context.close()
