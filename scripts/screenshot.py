"""Check an HTML report's images and take a headless-Chromium screenshot of it.

    python scripts/screenshot.py runs/compare-X/report.html report.png [--width 1200] [--height 3000]
    python scripts/screenshot.py report.html --check-only
    python scripts/screenshot.py report.html --fits 1280

First, without a browser: every <img> must have a ``data:image/png;base64,`` src that decodes to a
valid PNG (signature, chunk CRCs, IHDR first, IEND last, and the image data decompresses to the
declared size). Then ``chromium --headless`` renders the page at the given window size and writes
the PNG. ``--fits W`` instead measures the laid-out page in a W-pixel-wide window (its
``scrollWidth``, read from the DOM that Chromium dumps after a script added to a copy of the page
has run) and fails when the page is wider than the window, i.e. would need a horizontal scroll bar.
Exit status 1 names every broken image or a page too wide; 2 when Chromium is missing or fails.
Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["check_images", "check_png", "find_chromium", "page_width", "screenshot"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def check_png(data: bytes) -> tuple[int, int]:
    """(width, height) of a valid PNG; raises ValueError saying what is wrong otherwise.

    Checks the signature, every chunk's length and CRC-32, IHDR first and IEND last, and that the
    IDAT stream inflates to height * (1 + ceil(width * bits per pixel / 8)) bytes (non-interlaced).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    pos, chunks, idat = len(PNG_SIGNATURE), [], b""
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"truncated chunk header at byte {pos}")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        crc_bytes = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc_bytes) != 4:
            raise ValueError(f"truncated {kind!r} chunk at byte {pos}")
        if binascii.crc32(kind + body) != struct.unpack(">I", crc_bytes)[0]:
            raise ValueError(f"bad CRC in {kind!r} chunk at byte {pos}")
        chunks.append((kind, body))
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("chunks must start with IHDR and end with IEND")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if width == 0 or height == 0 or color not in CHANNELS:
        raise ValueError(f"bad IHDR: {width}x{height}, colour type {color}")
    try:
        raw = zlib.decompress(idat)
    except zlib.error as err:
        raise ValueError(f"image data does not inflate: {err}") from None
    row = 1 + (width * depth * CHANNELS[color] + 7) // 8
    if interlace == 0 and len(raw) != height * row:
        raise ValueError(f"image data is {len(raw)} bytes, expected {height * row}")
    return width, height


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[tuple[int, str, str]] = []  # (line, alt, src)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            self.srcs.append((self.getpos()[0], a.get("alt") or "", a.get("src") or ""))


def check_images(html_file: str | Path) -> tuple[int, list[str]]:
    """(number of <img> tags, problems): each problem names the image (line, alt) and the fault."""
    parser = _Images()
    parser.feed(Path(html_file).read_text())
    problems = []
    prefix = "data:image/png;base64,"
    for line, alt, src in parser.srcs:
        where = f"{html_file}:{line} <img alt={alt!r}>"
        if not src.startswith(prefix):
            problems.append(f"{where}: src is not a {prefix} URI ({src[:40]!r})")
            continue
        try:
            check_png(base64.b64decode(src[len(prefix) :], validate=True))
        except (ValueError, binascii.Error) as err:
            problems.append(f"{where}: {err}")
    return len(parser.srcs), problems


def find_chromium() -> str | None:
    """Path of the Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    html_file: str | Path, out_png: str | Path, width: int = 1200, height: int = 3000
) -> Path:
    """Render ``html_file`` in headless Chromium at width x height and write ``out_png``."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
    out_png = Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlvr-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out_png}",
            f"--window-size={width},{height}",
            Path(html_file).resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not out_png.exists():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-800:]}"
        )
    return out_png


_MEASURE = (
    "<script>addEventListener('load',()=>{document.body.setAttribute('data-scroll-width',"
    "document.documentElement.scrollWidth)})</script>"
)


def page_width(html_file: str | Path, width: int = 1280, height: int = 900) -> int:
    """The laid-out width in CSS pixels (``document.documentElement.scrollWidth``) of ``html_file``
    rendered by headless Chromium in a ``width``-pixel window: more than ``width`` means a
    horizontal scroll bar. The page is measured from a copy with a script added before
    ``</body>``; the original is not touched."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install -y chromium)")
    text = Path(html_file).read_text()
    cut = text.rfind("</body>")
    text = (text[:cut] + _MEASURE + text[cut:]) if cut >= 0 else text + _MEASURE
    with tempfile.TemporaryDirectory(prefix="rlvr-chromium-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text)
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-scroll-width="(\d+)"', proc.stdout)
    if found is None:
        raise RuntimeError(
            f"chromium did not report the page width (exit {proc.returncode}): {proc.stderr[-800:]}"
        )
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("html", help="the HTML file")
    ap.add_argument("png", nargs="?", help="where to write the screenshot")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--check-only", action="store_true", help="only check the images, no browser")
    ap.add_argument(
        "--fits",
        type=int,
        metavar="W",
        help="check that the page needs no horizontal scroll bar in a W-pixel-wide window",
    )
    args = ap.parse_args(argv)
    n, problems = check_images(args.html)
    for prob in problems:
        print(f"broken image: {prob}", file=sys.stderr)
    print(f"{n} images, {len(problems)} broken")
    if problems:
        return 1
    if args.check_only:
        return 0
    if args.fits:
        try:
            wide = page_width(args.html, args.fits)
        except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"page width {wide} px in a {args.fits} px window")
        if wide > args.fits:
            print(f"too wide: {args.html} needs a horizontal scroll bar", file=sys.stderr)
            return 1
        return 0
    if not args.png:
        ap.error("give the output PNG path, or --check-only")
    try:
        path = screenshot(args.html, args.png, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    w, h = check_png(path.read_bytes())
    print(f"screenshot: {path} ({w}x{h})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
