"""Open a page in headless Chromium (Debian's `chromium`) and report what loaded and what was fetched.

- Images: a copy of the page gets a small script that, on the load event, writes every <img>'s
  source, ``complete`` and ``naturalWidth`` into a <pre>; ``--dump-dom`` prints the DOM after that
  (a broken or blocked image has naturalWidth 0). The shipped page itself carries no script.
- Network: Chromium's own network log (``--log-net-log``) lists every URL request; those made for the
  page (network isolation key of the file:// page) whose scheme is not file/data are network fetches.
  Chromium's background traffic (its own "not an origin" requests) is not the page's and is ignored.
  DNS is mapped to nowhere, so even a fetch attempt cannot reach anything; it is still logged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PROBE = """
<script>
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute('src').slice(0, 60), complete: img.complete, width: img.naturalWidth};
  });
  var pre = document.createElement('pre');
  pre.id = 'shmn-probe';
  pre.textContent = JSON.stringify(images);
  document.body.appendChild(pre);
});
</script>
"""
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:")


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    images: list[dict]
    network_requests: list[str]

    @property
    def broken_images(self) -> list[dict]:
        return [image for image in self.images if not image["complete"] or image["width"] == 0]


def _run(chromium: str, profile: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    # UTF-8 whatever the locale (CI may run with LANG=C): the pages hold non-ASCII text.
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page (not the browser itself) asked for over the network, from a Chromium net log."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    types = {value: key for key, value in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if types.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        from_page = "file://" in params.get("network_isolation_key", "") or params.get("initiator") not in (None, "not an origin")
        if from_page and not params["url"].startswith(LOCAL_SCHEMES):
            urls.append(params["url"])
    return urls


def check_page(html: Path, work: Path, chromium: str) -> PageCheck:
    """Load ``html`` (a probed copy beside it, so relative links resolve the same) and check it."""
    probed = html.with_name(f".probe-{html.name}")
    text = html.read_text(encoding="utf-8")
    probed.write_text(re.sub(r"</body>", PROBE + "</body>", text, count=1), encoding="utf-8")
    net_log = work / f"{html.stem}-netlog.json"
    try:
        result = _run(chromium, work / "profile", f"--log-net-log={net_log}", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    finally:
        probed.unlink()
    found = re.search(r'<pre id="shmn-probe">(.*?)</pre>', result.stdout, re.S)
    if not found:
        raise AssertionError(f"chromium did not run the page's load event (exit {result.returncode}): {result.stderr[-2000:]}")
    import html as html_module

    return PageCheck(json.loads(html_module.unescape(found.group(1))), page_requests(net_log))


def screenshot(html: Path, png: Path, work: Path, chromium: str, width: int = 1000, height: int = 1800) -> Path:
    result = _run(chromium, work / "profile-shot", f"--screenshot={png}", f"--window-size={width},{height}",
                  "--virtual-time-budget=3000", html.as_uri())
    if not png.exists():
        raise AssertionError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")
    return png
