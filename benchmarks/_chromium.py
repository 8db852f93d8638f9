"""Debian's headless Chromium, driven over the DevTools protocol (CDP) with the network off.

`Browser` starts ``chromium --headless`` with a private profile and ``--remote-debugging-port=0``,
reads the DevTools address it prints, and talks CDP over a WebSocket (``websockets``) to the
page: navigate, evaluate, click with real mouse events, screenshot. Every request the page
makes, every console message and every uncaught exception is recorded, so a test can assert
that a page loaded nothing from the network and logged no error. Used by ``benchmarks/report.py`` and
the report tests.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import websockets

__all__ = ["Browser", "chromium_path"]

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_path() -> str:
    """The Chromium binary; a clear failure (never a skip) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium "
                           "(.ci/run installs it)")
    return found


class Browser:
    """One headless Chromium with one page. ``async with Browser() as b: await b.open(url)``."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.width, self.height = width, height
        self.requests: list[str] = []
        self.console: list[dict[str, Any]] = []
        self.exceptions: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._profile = tempfile.TemporaryDirectory(prefix="agentkit-chromium-")
        self._proc: asyncio.subprocess.Process | None = None
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        args = [chromium_path(), "--headless=new", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--allow-file-access-from-files", f"--window-size={self.width},{self.height}",
                "about:blank"]
        if os.geteuid() == 0:  # Chromium's sandbox refuses to run as root (CI runs as root)
            args.insert(1, "--no-sandbox")
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):  # a hang guard, not a synchronisation
            browser_ws = await self._devtools_address()
            port = int(browser_ws.split(":")[2].split("/")[0])
            async with httpx.AsyncClient() as client:
                targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=2**28)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        await self.send("Network.emulateNetworkConditions", offline=True, latency=0,
                        downloadThroughput=-1, uploadThroughput=-1)
        return self

    async def _devtools_address(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        lines = []
        while line := await self._proc.stderr.readline():
            text = line.decode(errors="replace")
            lines.append(text)
            match = _LISTENING.search(text)
            if match:
                return match.group(1)
        raise RuntimeError("Chromium exited before listening: " + "".join(lines)[-2000:])

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._ws is not None:
                try:
                    async with asyncio.timeout(10):
                        await self.send("Browser.close")
                except (TimeoutError, websockets.ConnectionClosed):
                    pass
                await self._ws.close()
            if self._reader is not None:
                self._reader.cancel()
        finally:
            if self._proc is not None:
                if self._proc.returncode is None:
                    try:
                        async with asyncio.timeout(10):
                            await self._proc.wait()
                    except TimeoutError:
                        self._proc.kill()
                        await self._proc.wait()
            self._profile.cleanup()

    # -- the protocol ----------------------------------------------------------------------------

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            self._record(message)
            async with self._changed:
                self._events.append(message)
                self._changed.notify_all()

    def _record(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append({"level": params["type"], "text": text})
        elif method == "Log.entryAdded":
            self.console.append({"level": params["entry"]["level"], "text": params["entry"]["text"]})
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.exceptions.append(str(details.get("exception", {}).get("description")
                                       or details.get("text")))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; its result, or RuntimeError with the protocol's error."""
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        message = await future
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        result: dict[str, Any] = message.get("result") or {}
        return result

    async def wait_event(self, method: str, after: int = 0) -> dict[str, Any]:
        """The first `method` event at index >= `after` of the events received (waits for it)."""
        async with self._changed:
            while True:
                for event in self._events[after:]:
                    if event.get("method") == method:
                        return event
                await self._changed.wait()

    # -- what the tests do -----------------------------------------------------------------------

    async def open(self, path: Path) -> dict[str, float]:
        """Load a file; wait for its load event and its first contentful paint. Returns the
        milliseconds from navigation start (Chromium's lifecycle events) to ``load`` and to
        ``first_paint`` (first contentful paint)."""
        await self.send("Page.setLifecycleEventsEnabled", enabled=True)
        mark = len(self._events)
        url = path.as_uri()  # an absolute path (tests use tmp_path)
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired", after=mark)
        await self.wait_lifecycle("load", after=mark)
        await self.wait_lifecycle("firstContentfulPaint", after=mark)
        times: dict[str, float] = {}
        for event in self._events[mark:]:
            if event.get("method") == "Page.lifecycleEvent":
                name = event["params"]["name"]
                if name == "init":  # the new document's loader starts: count from here
                    times.clear()
                times.setdefault(name, event["params"]["timestamp"])
        start = times["init"]
        return {"load": (times["load"] - start) * 1000,
                "first_paint": (times["firstContentfulPaint"] - start) * 1000}

    async def wait_lifecycle(self, name: str, after: int) -> None:
        """Wait for the lifecycle event `name` of the document loaded after event `after`."""
        def seen() -> bool:
            started = False
            for event in self._events[after:]:
                if event.get("method") != "Page.lifecycleEvent":
                    continue
                started = started or event["params"]["name"] == "init"
                if started and event["params"]["name"] == name:
                    return True
            return False

        async with self._changed:
            while not seen():
                await self._changed.wait()

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error evaluating {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the middle of the element's box."""
        box = await self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" if (!e) return null; e.scrollIntoView({{block: 'center', inline: 'center'}});"
            f" const r = e.getBoundingClientRect();"
            f" return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
        if box is None:
            raise AssertionError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                            button="left", clickCount=1)

    async def screenshot(self, target: Path, *, full_page: bool = True) -> None:
        """A PNG of the page (the whole document height when `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = await self.eval("document.documentElement.scrollHeight")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        shot = await self.send("Page.captureScreenshot", **params)
        await asyncio.to_thread(target.write_bytes, base64.b64decode(shot["data"]))

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions so far."""
        return [c["text"] for c in self.console if c["level"] in ("error", "assert")] + self.exceptions
