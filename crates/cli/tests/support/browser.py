#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol for the dashboard test.

Chromium is started with --remote-debugging-pipe: commands go in on fd 3 and answers and
events come out on fd 4, as NUL-terminated JSON, so nothing but the standard library is
needed. The test sends one JSON command per line on stdin and reads one JSON answer per
line on stdout:

  {"cmd": "open", "url": U}               load U in a new tab, wait for its load event
  {"cmd": "wait", "expr": JS, "timeout": S}
                                          evaluate JS until it is truthy (every 100 ms)
  {"cmd": "eval", "expr": JS}             the value of JS
  {"cmd": "screenshot", "path": P}        a PNG of the page
  {"cmd": "errors"}                       console errors, uncaught exceptions and failed
                                          loads seen since the tab opened
  {"cmd": "quit"}

Every answer is {"ok": true, "value": ...} or {"ok": false, "error": "..."}.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


class Browser:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise SystemExit("chromium is not installed (scripts/install-deps installs it)")
        self.profile = tempfile.mkdtemp(prefix="swarmfs-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def wire_fds():
            # Through fresh numbers first: a pipe end may already be fd 3 or 4, and
            # dup2 onto itself would leave it close-on-exec.
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--remote-debugging-pipe", "--window-size=1280,1000",
            "--user-data-dir=" + self.profile, "about:blank",
        ]
        self.proc = subprocess.Popen(args, preexec_fn=wire_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.next_id = 0
        self.answers = {}
        self.events = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self):
        buf = b""
        while True:
            data = os.read(self.from_child, 1 << 16)
            if not data:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.answers[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self.cond.notify_all()

    def call(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        with self.cond:
            while self.next_id not in self.answers:
                left = deadline - time.time()
                if left <= 0 or getattr(self, "closed", False):
                    raise RuntimeError(f"no answer to {method}")
                self.cond.wait(left)
            answer = self.answers.pop(self.next_id)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        seen = len(self.events)
        self.call("Page.navigate", {"url": url})
        deadline = time.time() + 30
        with self.cond:
            while not any(e.get("method") == "Page.loadEventFired" for e in self.events[seen:]):
                if time.time() > deadline:
                    raise RuntimeError("the page did not load within 30 s")
                self.cond.wait(0.5)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("evaluating " + expr + ": " + r["exceptionDetails"].get("text", ""))
        return r["result"].get("value")

    def wait(self, expr, timeout):
        deadline = time.time() + timeout
        while True:
            value = self.eval(expr)
            if value:
                return value
            if time.time() > deadline:
                raise RuntimeError(f"still false after {timeout} s: {expr}")
            time.sleep(0.1)

    def errors(self):
        out = []
        with self.cond:
            events = list(self.events)
        for e in events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append("load failed: " + p.get("errorText", ""))
        return out

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def quit(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    browser = Browser()
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            try:
                c = cmd["cmd"]
                if c == "quit":
                    break
                elif c == "open":
                    value = browser.open(cmd["url"])
                elif c == "wait":
                    value = browser.wait(cmd["expr"], cmd.get("timeout", 10))
                elif c == "eval":
                    value = browser.eval(cmd["expr"])
                elif c == "screenshot":
                    value = browser.screenshot(cmd["path"])
                elif c == "errors":
                    value = browser.errors()
                else:
                    raise RuntimeError("unknown command " + c)
                answer = {"ok": True, "value": value}
            except Exception as e:  # the test reports it
                answer = {"ok": False, "error": str(e)}
            print(json.dumps(answer), flush=True)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
