"""Headless Chromium over the built book, offline: a loopback HTTP server for _build/html and
a Selenium driver for Debian's chromium + chromedriver (tests/tools/install_browser.sh).

Used by tests/test_browser.py, and on its own to take the README's screenshots:

    .venv/bin/python tests/tools/browser.py screenshots [_build/html] [book/images]
"""
import functools
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("SCALEINV_BOOK_HTML", ROOT / "_build" / "html"))
CHROMIUM = os.environ.get("SCALEINV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SCALEINV_CHROMEDRIVER", "/usr/bin/chromedriver")
# The machine has no network: without the background-networking flags Chromium keeps trying
# (and failing) to reach Google's services.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-proxy-server", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--force-device-scale-factor=1"]
PAGE_LOAD_TIMEOUT_S = 30
SCRIPT_TIMEOUT_S = 30


def missing_browser():
    """Why the browser tests cannot run here ('' when they can)."""
    why = []
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(exe) or Path(exe).exists()):
            why.append(f"{exe} not installed")
    try:
        import selenium  # noqa: F401
    except ImportError:
        why.append("selenium not installed")
    return "; ".join(why)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The browser drops connections it no longer needs (a page left mid-load): not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@contextmanager
def serve(directory=HTML):
    """Serve `directory` on 127.0.0.1 (a free port, loopback only); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def chromium(width=1280, height=900):
    """A headless Chromium with a fresh profile, its console log kept (level ALL)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="scaleinv-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.set_script_timeout(SCRIPT_TIMEOUT_S)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


# Resolves once MathJax (if the page loads it) has typeset the page; never rejects.
WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done('typeset'), (e) => done('error: ' + e));
  } else if (!document.querySelector('script[src*="mathjax"]') || Date.now() - t0 > 15000) {
    done(mj ? 'mathjax without startup' : 'no mathjax');
  } else {
    setTimeout(poll, 100);
  }
})();
"""

# Resolves once every <img> has finished (loaded or failed), lazy ones scrolled into view first.
WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(img => { if (img.loading === 'lazy') { img.loading = 'eager'; } });
const t0 = Date.now();
(function poll() {
  if (imgs.every(img => img.complete) || Date.now() - t0 > 15000) {
    window.scrollTo(0, 0);
    done(imgs.filter(img => !img.complete).length);
  } else {
    setTimeout(poll, 100);
  }
})();
"""

# What the checks look at, read off the rendered page.
PAGE_FACTS = r"""
const mathEls = Array.from(document.querySelectorAll('.math'));
return {
  url: location.href,
  title: document.title,
  images: Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete, naturalWidth: img.naturalWidth,
    visible: !!(img.offsetWidth || img.offsetHeight || img.getClientRects().length)})),
  math: mathEls.length,
  mathTypeset: mathEls.filter(el => el.querySelector('mjx-container')).length,
  mathUntypeset: mathEls.filter(el => !el.querySelector('mjx-container'))
                        .slice(0, 5).map(el => el.textContent.slice(0, 80)),
  mjxContainers: document.querySelectorAll('mjx-container').length,
  // TeX errors (MathJax typesets them as merror) and undefined macros (noundefined shows
  // them as red text starting with a backslash), read off MathJax's MathML.
  mathErrors: Array.from(document.querySelectorAll('mjx-assistive-mml merror'))
                   .map(el => el.getAttribute('data-mjx-error') || el.textContent.slice(0, 80))
              .concat(Array.from(document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
                   .filter(el => el.textContent.startsWith('\\'))
                   .map(el => 'undefined ' + el.textContent)).slice(0, 5),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(el => el.id)
       .concat(Array.from(document.querySelectorAll('a[name]')).map(a => a.name)),
};
"""


def visit(driver, url):
    """Load `url`, wait (bounded) for MathJax and images; return the page's facts and its
    console log entries."""
    driver.get(url)
    mathjax = driver.execute_async_script(WAIT_FOR_MATHJAX)
    driver.execute_async_script(WAIT_FOR_IMAGES)
    facts = driver.execute_script(PAGE_FACTS)
    facts["mathjax"] = mathjax
    facts["log"] = driver.get_log("browser")
    return facts


def screenshots(html=HTML, out=ROOT / "book" / "images",
                pages=(("screenshot-intro.png", "index.html", None),
                       ("screenshot-chapter.png", "notebooks/03_dimension.html", "img"))):
    """Save PNG screenshots (1280x900) of the intro page and of a chapter scrolled to a figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with serve(html) as base, chromium() as driver:
        # The window's size includes (invisible) browser chrome: fix the viewport itself.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        for name, page, scroll_to in pages:
            visit(driver, base + page)
            if scroll_to:
                driver.execute_script(
                    "const el = document.querySelector('article ' + arguments[0]);"
                    "if (el) { el.scrollIntoView({block: 'center'}); }", scroll_to)
            driver.save_screenshot(str(out / name))
            print(out / name)


if __name__ == "__main__":
    if sys.argv[1:2] != ["screenshots"]:
        sys.exit(__doc__)
    screenshots(*sys.argv[2:4])
