"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads NUL-terminated JSON commands from file descriptor 3 and writes responses and
events to descriptor 4. Enough for tests: open a page, watch its network requests, run
JavaScript, take screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

HEADLESS_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
]


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with a fresh profile, driven over the debugging pipe."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        cmd_read, self._cmd_write = os.pipe()
        self._res_read, res_write = os.pipe()
        # park the child's ends above 10 so the dup2 onto 3 and 4 cannot clobber them
        child_read = fcntl.fcntl(cmd_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_write = fcntl.fcntl(res_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_read)
        os.close(res_write)

        def wire_pipes() -> None:  # runs in the child before exec
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        self.process = subprocess.Popen(
            [binary, *HEADLESS_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,
        )
        os.close(child_read)
        os.close(child_write)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ transport

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._res_read], [], [], left)
            if ready:
                chunk = os.read(self._res_read, 1 << 20)
                if not chunk:
                    raise CDPError("Chromium closed the debugging pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> Any:
        """Send one command and return its ``result`` (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and (
                    session is None or event.get("sessionId") == session
                ):
                    return event
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    # ------------------------------------------------------------------ conveniences

    def open(self, url: str, width: int, height: int) -> str:
        """Open ``url`` in a new tab of ``width`` x ``height``; return its session id once
        loaded, with network events recorded from the start."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Network.enable", "Page.enable", "Runtime.enable"):
            self.send(domain, session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self.send("Browser.setDownloadBehavior", {"behavior": "deny"})
        self.send("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requested_urls(self, session: str) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session
        ]

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self._cmd_write, self._res_read):
            with contextlib.suppress(OSError):
                os.close(fd)
