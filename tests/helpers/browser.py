"""A headless Chromium for the report page's tests: screenshots, and layout measured inside the browser.

Chromium runs with a fresh profile and nothing that reaches the network (the page needs none). Absent
outside CI: the tests skip with a one-line reason; under CI=true (.ci/run installs it) they fail.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from helpers.common import IN_CI

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--mute-audio")
# measured in the page once it has loaded (images decoded): sizes, overflow, rows that wrapped
MEASURE = """<script>window.addEventListener("load", function () {
  var key = document.querySelector("#results .scroll table"), box = key.parentElement;
  var heights = Array.prototype.map.call(key.querySelectorAll("tbody tr"), function (tr) {
    return tr.getBoundingClientRect().height; });
  var m = {page_height: document.documentElement.scrollHeight, page_width: document.documentElement.scrollWidth,
           viewport: window.innerWidth, table_width: key.scrollWidth, table_box: box.clientWidth,
           row_min: Math.min.apply(null, heights), row_max: Math.max.apply(null, heights),
           ids: Array.prototype.map.call(document.querySelectorAll("[id]"), function (e) { return e.id; })};
  var pre = document.createElement("pre"); pre.id = "measured"; pre.textContent = JSON.stringify(m);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    path = chromium()
    if path is None:
        if IN_CI:
            pytest.fail("chromium is missing under CI (.ci/run installs it: apt-get install -y chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium): the page's browser test needs it")
    return path


def _run(args: list[str], width: int, height: int, timeout_s: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([need_chromium(), *FLAGS, f"--user-data-dir={profile}",
                               f"--window-size={width},{height}", *args],
                              capture_output=True, text=True, timeout=timeout_s)


def screenshot(page: Path, out_png: Path, width: int = 1366, height: int = 900) -> Path:
    done = _run([f"--screenshot={out_png}", page.resolve().as_uri()], width, height)
    assert out_png.exists(), done.stderr[-2000:]
    return out_png


def measure(page: Path, width: int, height: int = 900) -> dict:
    """Layout of the page at this window width, as the browser computed it (a copy of the page with the
    measuring script appended; the page itself has no script)."""
    copy = page.with_name(f".measure-{width}.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    try:
        done = _run(["--virtual-time-budget=10000", "--dump-dom", copy.resolve().as_uri()], width, height)
    finally:
        copy.unlink()
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
