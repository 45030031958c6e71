"""Drive headless Chromium over the DevTools protocol on a pipe (no extra Python package).

Chromium started with ``--remote-debugging-pipe`` reads protocol messages from file
descriptor 3 and writes to 4, each a JSON object terminated by a NUL byte. This module
starts it with a fresh profile and the network closed, opens one page, records every
console error, uncaught exception and failed resource load, and offers the few actions the
report tests need: navigate, evaluate JavaScript, wait for a condition, take a screenshot.

Also a tiny command line for documentation screenshots::

    python -m tests.browser REPORT/index.html out.png "#case=hippocampus_001" [JS ...]
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """The browser died, timed out or answered a command with an error."""


def find_chromium() -> str | None:
    """Path of a Chromium executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no chromium executable found")
        self.timeout = timeout
        self.errors: list[str] = []
        self._profile = tempfile.mkdtemp(prefix="medseg-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self._proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, to_child_r, from_child_w),  # 3 and 4 survive close_fds
            preexec_fn=lambda: _map_fds(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            self._session = self._open_page(width, height)
        except BaseException:
            self.close()
            raise

    # --- protocol ---------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any] | None = None,
              session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_child], [], [], remaining)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed the protocol pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._record(message)
        return message

    def command(self, method: str, params: dict[str, Any] | None = None,
                session: str | None = "page") -> dict[str, Any]:
        """Send one command (to the page unless ``session`` is None) and wait for its result."""
        target = self._session if session == "page" else session
        wanted = self._send(method, params, target)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def _record(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    def _open_page(self, width: int, height: int) -> str:
        target = self.command("Target.createTarget", {"url": "about:blank"}, session=None)
        attached = self.command("Target.attachToTarget",
                                {"targetId": target["targetId"], "flatten": True}, session=None)
        session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.command(f"{domain}.enable", session=session)
        self.command("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1,
                      "mobile": False}, session=session)
        return session

    # --- actions ----------------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._events.clear()
        result = self.command("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self._events):
            self._read_message(deadline)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises are awaited)."""
        result = self.command("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression[:80]!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def center(self, selector: str) -> tuple[float, float]:
        """Scroll the element into view; its centre in viewport coordinates."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2,"
            " r.y + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        return box[0], box[1]

    def click(self, selector: str) -> None:
        """A real left click (through the browser's input pipeline) on the element."""
        x, y = self.center(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.command("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                      "button": "left", "clickCount": 1})

    def wheel(self, selector: str, delta_y: float) -> None:
        """Turn the mouse wheel over the element (positive: scroll down)."""
        x, y = self.center(selector)
        self.command("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y,
                                                  "deltaX": 0, "deltaY": delta_y})

    def screenshot(self, clip_selector: str | None = None) -> bytes:
        """PNG of the page, or of the element matched by ``clip_selector``."""
        params: dict[str, Any] = {"format": "png"}
        if clip_selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(clip_selector)})"
                ".getBoundingClientRect(); return [r.x + window.scrollX, r.y + window.scrollY,"
                " r.width, r.height]; })()")
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3],
                              "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.command("Page.captureScreenshot", params)["data"])

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        if self._proc.poll() is None:
            try:
                self._send("Browser.close")
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_fds(read_end: int, write_end: int) -> None:
    """In the child: the protocol pipe on descriptors 3 (commands in) and 4 (replies out)."""
    read_copy, write_copy = os.dup(read_end), os.dup(write_end)
    os.dup2(read_copy, 3)
    os.dup2(write_copy, 4)


def main(argv: list[str]) -> int:
    """``REPORT.html OUT.png [#fragment] [JS expression ...]``: screenshot of the viewer."""
    page, out, *rest = argv
    fragment = rest[0] if rest and rest[0].startswith("#") else ""
    scripts = rest[1:] if fragment else rest
    with Browser(width=1280, height=1000) as browser:
        browser.goto(Path(page).resolve().as_uri() + fragment)
        browser.wait_for("window.medsegViewer && medsegViewer.state.rendered > 0")
        for script in scripts:
            browser.evaluate(script)
        browser.wait_for("medsegViewer.state.pending === 0")
        Path(out).write_bytes(browser.screenshot("#viewer"))
        if browser.errors:
            print("\n".join(browser.errors), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
