"""Checks of an HTML report as a reader meets it: every image and link resolves, the page renders.

Shared by ``test_html_report.py`` and the demo test in ``test_pipeline.py``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

#: Debian's ``chromium`` package (scripts/setup.sh installs it).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.other: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag in ("script", "link", "iframe", "source", "video", "audio"):
            self.other.append((tag, a.get("src") or a.get("href") or ""))


def check_references(page: Path) -> tuple[int, int]:
    """Assert that every ``<img>`` and ``<a>`` of ``page`` resolves offline; return (images, links).

    Images must be embedded PNGs (``data:image/png;base64``) or files beside the page; links must be
    in-page anchors that exist or relative paths to existing files. Nothing may point off the
    machine, and the page loads no script, style sheet or frame.
    """
    refs = _Refs()
    refs.feed(page.read_text(encoding="utf-8"))
    assert not refs.other, f"the page loads external resources: {refs.other}"
    for src in refs.images:
        if src.startswith("data:"):
            head, data = src.split(",", 1)
            assert head == "data:image/png;base64", head
            assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert not urlparse(src).scheme, f"image off the machine: {src}"
            assert (page.parent / unquote(src)).is_file(), f"image missing: {src}"
    for href in refs.links:
        if href.startswith("#"):
            assert href[1:] in refs.ids, f"anchor without target: {href}"
            continue
        assert not urlparse(href).scheme, f"link off the machine: {href}"
        assert (page.parent / unquote(href)).exists(), f"link to a missing file: {href}"
    return len(refs.images), len(refs.links)


def screenshot(page: Path, out_png: Path, *, profile: Path, height: int = 3000) -> np.ndarray:
    """Render ``page`` with headless Chromium and return the screenshot as an array (H, W, C) in 0..1."""
    import matplotlib.image as mpimg

    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out_png}",
           f"--window-size=1280,{height}", page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out_png.is_file(), f"chromium wrote no screenshot (exit {res.returncode}): {res.stderr[-2000:]}"
    return np.asarray(mpimg.imread(out_png))


def assert_not_blank(img: np.ndarray) -> None:
    """A rendered page, not an empty canvas: pixel variance, and dark (text) and coloured (figure) pixels."""
    rgb = img[..., :3]
    assert rgb.std() > 0.05, f"screenshot nearly uniform (std {rgb.std():.4f})"
    assert (rgb.mean(axis=-1) < 0.3).mean() > 0.002, "no dark pixels: no text rendered"
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (saturation > 0.3).mean() > 0.002, "no coloured pixels: no figure rendered"
