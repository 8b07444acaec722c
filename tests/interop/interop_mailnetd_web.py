# mailnetd's web view (DESIGN.md "mailnetd's HTTP API and web view", #15) in headless Chromium:
# the real mailnetd on port 0, mail sent with smtplib, the page driven over the DevTools protocol.
"""What each test proves:
- the page and a message's HTML are served under their Content-Security-Policies (the page's
  script allowed by hash, never 'unsafe-inline'; the HTML sandboxed, images data: only);
- (a) a hostile message (subject, From display name, text, HTML and attachment name carrying
  <script>, javascript: links, onerror= attributes, remote images, a remote stylesheet and a
  meta refresh) shows in the list and in the message pane as text only: the page's DOM has
  its own script and no other, no element or handler made from mail, no javascript: href, the
  HTML in an iframe with an empty sandbox; no script of the message ran (the page's console
  and title) and a recording HTTP server saw no request (nothing remote loaded), also with the
  HTML part opened on its own; screenshots of the list and of the pane are kept;
- (b) a message sent while the page is open appears in the list without a reload (a marker
  set in the page survives), a deletion through the API leaves it, and the pane's delete and
  the empty-mailbox buttons delete through the API.

Chromium is driven through --remote-debugging-pipe (DevTools protocol on fds 3 and 4, no
websocket): --dump-dom with --virtual-time-budget never finishes while the page holds its
events stream open (virtual time waits for every pending fetch), and without it the DOM is
dumped before the list's fetch has answered."""
import base64
import fcntl
import html
import html.parser
import http.client
import http.server
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_CSP_MUST = ["default-src 'none'", "connect-src 'self'", "frame-src 'self'", "base-uri 'none'",
                 "form-action 'none'"]
MAIL_HTML_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                 "form-action 'none'")
WAIT = 20.0  # seconds for anything the browser must show (a loaded, shared machine)


def artifacts_dir():
    """Where the screenshots go: MAILNET_ARTIFACTS_DIR, else BUILD/Testing/web-view beside the binary."""
    d = os.environ.get("MAILNET_ARTIFACTS_DIR")
    if not d:
        build = os.path.dirname(os.path.dirname(os.path.abspath(MAILNETD)))
        d = os.path.join(build, "Testing", "web-view")
    os.makedirs(d, exist_ok=True)
    return d


class Recorder:
    """A tiny HTTP server on 127.0.0.1 that records every request: nothing may reach it."""

    def __init__(self):
        self.requests = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rec.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = http.server.ThreadingHTTPServer((t.HOST, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Browser:
    """Headless Chromium over --remote-debugging-pipe: JSON messages ending in NUL, written to
    its fd 3 and read from its fd 4 (the DevTools protocol, flat sessions)."""

    def __init__(self, workdir):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.stderr = open(os.path.join(workdir, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--user-data-dir=" + os.path.join(workdir, "chromium-profile"), "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr, close_fds=False,
            preexec_fn=child_fds)
        os.close(hi_r)
        os.close(hi_w)
        self.next_id = 0
        self.answers = {}
        self.events = []  # (session, method, params)
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.from_chrome, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self.cond:
                    self.answers[None] = "closed"
                    self.cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.answers[msg["id"]] = msg
                    else:
                        self.events.append((msg.get("sessionId"), msg["method"], msg.get("params", {})))
                        if msg["method"] == "Page.javascriptDialogOpening":
                            self._post("Page.handleJavaScriptDialog", {"accept": True}, msg.get("sessionId"))
                    self.cond.notify_all()

    def _post(self, method, params, session):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def call(self, method, params=None, session=None, timeout=WAIT):
        with self.cond:
            n = self._post(method, params, session)
            deadline = time.monotonic() + timeout
            while n not in self.answers:
                if None in self.answers:
                    raise AssertionError(f"chromium went away during {method}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"chromium: no answer to {method} in {timeout} s")
                self.cond.wait(left)
            msg = self.answers.pop(n)
        if "error" in msg:
            raise AssertionError(f"chromium: {method}: {msg['error']}")
        return msg.get("result", {})

    def open(self, url):
        """A new tab at `url`: its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Page", "Log"):
            self.call(domain + ".enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for(session, "document.readyState === 'complete'")
        return session

    def eval(self, session, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
        if "exceptionDetails" in r:
            raise AssertionError(f"evaluate {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, session, expr, timeout=WAIT):
        # An expression that throws is not true yet (an element the page has not drawn yet:
        # querySelector gives null until the list has its first row); the last error is told
        # if it never becomes true.
        deadline = time.monotonic() + timeout
        error = None
        while True:
            try:
                v = self.eval(session, expr)
                error = None
            except AssertionError as e:
                v, error = None, e
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout} s: {expr}" + (f" (last: {error})" if error else ""))
            time.sleep(0.1)

    def screenshot(self, session, path):
        data = self.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"screenshot: {path}", file=sys.stderr, flush=True)

    def console(self):
        """Every console message, log entry and uncaught exception so far, as text."""
        out = []
        with self.cond:
            events = list(self.events)
        for _, method, p in events:
            if method == "Runtime.consoleAPICalled":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Log.entryAdded":
                out.append(p["entry"].get("text", ""))
            elif method == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {})))
        return out

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        self.stderr.close()


class DomAudit(html.parser.HTMLParser):
    """What a serialised DOM holds that mail must never create."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts = 0
        self.tags = []
        self.handlers = []
        self.js_hrefs = []
        self.iframes = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        if tag == "iframe":
            self.iframes.append(dict(attrs))
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.handlers.append((tag, name))
            if name.lower() in ("href", "src", "action", "formaction") and value and \
                    value.strip().lower().replace("\t", "").replace("\n", "").startswith(("javascript:", "data:", "vbscript:")):
                self.js_hrefs.append((tag, name, value))


def audit(dom):
    a = DomAudit()
    a.feed(dom)
    return a


def send(srv, sender, rcpts, msg):
    with smtplib.SMTP(t.HOST, srv.port, timeout=15) as s:
        refused = s.sendmail(sender, rcpts, msg)
    if refused:
        raise AssertionError(f"refused: {refused}")


def api(port, method, path):
    conn = http.client.HTTPConnection(t.HOST, port, timeout=15)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def simple(subject, to):
    return (f"From: Sender <sender@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@interop.test>\r\n\r\nhello\r\n").encode()


HOSTILE_SUBJECT = "<script>document.title='PWNED'</script><img src=x onerror=\"console.log('HOSTILE-RAN')\"> hi"
HOSTILE_NAME = "<img src=x onerror=alert(1)>Mallory"
HOSTILE_TEXT = ("<script>console.log('HOSTILE-RAN')</script> "
                "<a href=\"javascript:console.log('HOSTILE-RAN')\">click</a> javascript:alert(1)")
HOSTILE_FILENAME = "<img src=x onerror=alert(1)>.html"


def hostile_message(remote):
    html_part = (
        "<html><head><meta http-equiv=\"refresh\" content=\"0;url={r}/refresh\">"
        "<link rel=\"stylesheet\" href=\"{r}/style.css\"><base href=\"{r}/base/\"></head><body>"
        "<script>console.log('HOSTILE-RAN');document.title='PWNED'</script>"
        "<img src=\"{r}/remote.png\"><img src=x onerror=\"console.log('HOSTILE-RAN')\">"
        "<div style=\"background:url({r}/bg.png)\">styled</div>"
        "<iframe src=\"{r}/frame\"></iframe><video poster=\"{r}/poster.png\"></video>"
        "<a href=\"javascript:console.log('HOSTILE-RAN')\">js link</a>"
        "<a href=\"https://example.org/confirm\">real link</a></body></html>").format(r=remote)
    lines = [
        f"From: \"{HOSTILE_NAME}\" <evil@example.org>",
        "To: victim@example.org",
        f"Subject: {HOSTILE_SUBJECT}",
        "Message-ID: <hostile@interop.test>",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=outer",
        "",
        "--outer",
        "Content-Type: multipart/alternative; boundary=inner",
        "",
        "--inner",
        "Content-Type: text/plain; charset=utf-8",
        "",
        HOSTILE_TEXT,
        "--inner",
        "Content-Type: text/html; charset=utf-8",
        "",
        html_part,
        "--inner--",
        "--outer",
        f"Content-Type: text/html; name=\"{HOSTILE_FILENAME}\"",
        f"Content-Disposition: attachment; filename=\"{HOSTILE_FILENAME}\"",
        "",
        "<script>console.log('HOSTILE-RAN')</script>",
        "--outer--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


@unittest.skipUnless(CHROMIUM, "chromium is not installed (Debian: chromium)")
class WebView(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.dir = self.tmp.__enter__()
        self.srv = t.Mailnetd(MAILNETD, os.path.join(self.dir, "store"), http=True).start()
        self.base = f"http://{t.HOST}:{self.srv.http_port}"
        self.browser = None

    def tearDown(self):
        try:
            if self.browser:
                self.browser.close()
        finally:
            self.srv.stop()
            self.tmp.__exit__(None, None, None)

    def start_browser(self):
        self.browser = Browser(self.dir)
        return self.browser

    def messages(self, **params):
        status, _, body = api(self.srv.http_port, "GET", "/api/v1/messages" + (
            "?" + urllib.parse.urlencode(params) if params else ""))
        self.assertEqual(status, 200)
        return json.loads(body)

    def assert_clean(self, dom, where):
        a = audit(dom)
        self.assertEqual(a.scripts, 1, f"{where}: script elements other than the page's own")
        self.assertEqual(a.handlers, [], f"{where}: event handler attributes")
        self.assertEqual(a.js_hrefs, [], f"{where}: javascript:/data: URLs")
        self.assertNotIn("img", a.tags, f"{where}: an img element (the page has none of its own)")
        self.assertNotIn("base", a.tags, where)
        for f in a.iframes:
            self.assertEqual(f.get("sandbox"), "", f"{where}: an iframe without an empty sandbox: {f}")

    def test_headers(self):
        status, h, body = api(self.srv.http_port, "GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        csp = h["content-security-policy"]
        for want in PAGE_CSP_MUST:
            self.assertIn(want, csp)
        script_src = [d.strip() for d in csp.split(";") if d.strip().startswith("script-src")]
        self.assertEqual(len(script_src), 1, csp)
        self.assertRegex(script_src[0], r"^script-src 'sha256-[A-Za-z0-9+/]{43}='$")
        self.assertNotIn("unsafe", script_src[0])
        self.assertEqual(h["x-frame-options"], "DENY")
        self.assertIn(b"<script>", body)
        self.assertEqual(api(self.srv.http_port, "POST", "/")[0], 405)
        send(self.srv, "s@example.org", ["bob@example.org"], simple("plain only", "bob@example.org"))
        # The index takes the delivery a moment after the 250 (its head is read off the I/O thread).
        self.assertTrue(t.wait_until(lambda: self.messages()["total"] == 1, timeout=10))
        mid = self.messages()["messages"][0]["id"]
        self.assertEqual(api(self.srv.http_port, "GET", f"/api/v1/messages/{mid}/html")[0], 404)  # no HTML part

    def test_a_hostile_message(self):
        rec = Recorder()
        try:
            remote = f"http://{t.HOST}:{rec.port}"
            send(self.srv, "evil@example.org", ["victim@example.org"], hostile_message(remote))
            send(self.srv, "s@example.org", ["bob@example.org"], simple("a benign one", "bob@example.org"))
            hostile = self.messages(mailbox="victim@example.org")["messages"][0]
            self.assertEqual(hostile["subject"], HOSTILE_SUBJECT)
            hid = hostile["id"]
            status, h, body = api(self.srv.http_port, "GET", f"/api/v1/messages/{hid}/html")
            self.assertEqual(status, 200)
            self.assertEqual(h["content-security-policy"], MAIL_HTML_CSP)
            self.assertEqual(h["content-type"], "text/html; charset=utf-8")
            self.assertIn(b"remote.png", body)

            b = self.start_browser()
            shots = artifacts_dir()
            s = b.open(self.base + "/")
            b.wait_for(s, "document.querySelectorAll('#list li').length === 2")
            dom = b.eval(s, "document.documentElement.outerHTML")
            self.assert_clean(dom, "list")
            self.assertIn(html.escape(HOSTILE_SUBJECT, quote=False), dom)
            self.assertEqual(b.eval(s, "document.title"), "mailnetd")
            self.assertEqual(b.eval(s, "document.querySelector('#list li .subject').textContent"),
                             "a benign one")  # newest first
            b.screenshot(s, os.path.join(shots, "web-view-list.png"))

            # The pane, opened by clicking the row as a user would.
            b.eval(s, "[...document.querySelectorAll('#list li a')].find((a) => a.getAttribute('href') === "
                      f"'#id=' + encodeURIComponent({json.dumps(hid)})).click()")
            b.wait_for(s, f"document.getElementById('v-subject').textContent === {json.dumps(HOSTILE_SUBJECT)}")
            # The iframe's document has loaded (its resource entry is written at its load event).
            b.wait_for(s, "performance.getEntriesByType('resource').some((e) => e.name.endsWith('/html'))")
            time.sleep(1.0)
            dom = b.eval(s, "document.documentElement.outerHTML")
            self.assert_clean(dom, "message pane")
            self.assertEqual(b.eval(s, "location.hash"), "#id=" + hid)
            for text in (HOSTILE_NAME, HOSTILE_TEXT.strip(), HOSTILE_FILENAME):
                self.assertIn(html.escape(text, quote=False), dom)
            frame = b.eval(s, "(() => { const f = document.getElementById('v-html-frame');"
                              " return [f.getAttribute('src'), f.getAttribute('sandbox')]; })()")
            self.assertEqual(frame, [f"/api/v1/messages/{hid}/html", ""])
            links = b.eval(s, "[...document.querySelectorAll('#view a[href]')].map((a) => a.href)")
            for link in links:
                self.assertRegex(link, r"^(https?://)", links)
            self.assertIn("https://example.org/confirm", links)
            self.assertIn(f"{self.base}/api/v1/messages/{hid}/raw", links)
            self.assertIn(f"{self.base}/api/v1/messages/{hid}/parts/2", links)
            b.screenshot(s, os.path.join(shots, "web-view-message.png"))

            # The HTML part opened on its own (top level): still nothing runs, nothing loads.
            s2 = b.open(f"{self.base}/api/v1/messages/{hid}/html")
            time.sleep(1.0)
            self.assertEqual(b.eval(s2, "document.title"), "")
            self.assertEqual(b.eval(s2, "document.images.length"), 2)
            self.assertEqual(b.eval(s2, "document.querySelectorAll('img')[0].naturalWidth"), 0)

            b.eval(s, "console.log('mailnet-console-check')")
            b.wait_for(s, "true")
            console = b.console()
            self.assertIn("mailnet-console-check", console)  # the console is seen at all
            for line in console:
                self.assertNotIn("HOSTILE-RAN", line)
                self.assertNotIn("PWNED", line)
            self.assertEqual(b.eval(s, "document.title"), "mailnetd")
            self.assertEqual(rec.requests, [], "a remote load reached the recording server")
            print("console: " + " | ".join(c[:160] for c in console), file=sys.stderr)
        finally:
            rec.close()

    def test_b_live_list_and_buttons(self):
        send(self.srv, "s@example.org", ["bob@example.org"], simple("first", "bob@example.org"))
        b = self.start_browser()
        s = b.open(self.base + "/")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 1")
        b.wait_for(s, "document.getElementById('status').textContent === 'live'")
        b.eval(s, "window.mailnetMarker = 42")

        # A message sent now shows up without a reload, on top.
        send(self.srv, "s@example.org", ["carol@example.org"], simple("sent while open", "carol@example.org"))
        b.wait_for(s, "document.querySelector('#list li .subject').textContent === 'sent while open'")
        self.assertEqual(b.eval(s, "window.mailnetMarker"), 42)
        self.assertEqual(b.eval(s, "performance.getEntriesByType('navigation').length"), 1)
        self.assertEqual(b.eval(s, "document.getElementById('count').textContent"), "2 messages")

        # Deleted through the API: gone from the list, still no reload.
        first = self.messages(mailbox="bob@example.org")["messages"][0]["id"]
        self.assertEqual(api(self.srv.http_port, "DELETE", f"/api/v1/messages/{first}")[0], 204)
        b.wait_for(s, "document.querySelectorAll('#list li').length === 1")

        # The pane's delete button.
        carol = self.messages(mailbox="carol@example.org")["messages"][0]["id"]
        b.eval(s, f"location.hash = '#id=' + encodeURIComponent({json.dumps(carol)})")
        b.wait_for(s, "document.getElementById('v-subject').textContent === 'sent while open'")
        b.eval(s, "document.getElementById('delete').click()")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 0")
        self.assertEqual(api(self.srv.http_port, "GET", f"/api/v1/messages/{carol}")[0], 404)

        # Empty one mailbox (the confirm() dialog is accepted by Browser), the other stays.
        for i in range(3):
            send(self.srv, "s@example.org", ["dan@example.org"], simple(f"dan {i}", "dan@example.org"))
        send(self.srv, "s@example.org", ["erin@example.org"], simple("erin", "erin@example.org"))
        b.wait_for(s, "document.querySelectorAll('#list li').length === 4")
        b.wait_for(s, "[...document.getElementById('mailbox').options].some((o) => o.value === 'dan@example.org')")
        b.eval(s, "(() => { const m = document.getElementById('mailbox'); m.value = 'dan@example.org';"
                  " m.dispatchEvent(new Event('change')); })()")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 3")
        b.eval(s, "document.getElementById('empty').click()")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 0")
        self.assertEqual(self.messages(mailbox="dan@example.org")["total"], 0)
        self.assertEqual(self.messages()["total"], 1)
        self.assertEqual(b.eval(s, "window.mailnetMarker"), 42)

        # A mailbox whose name is not ASCII (the API matches names in ASCII case only: the page
        # once lower-cased É to é and then found nothing): chosen, listed, emptied.
        eloise = "\u00c9loise@example.org"
        with smtplib.SMTP(t.HOST, self.srv.port, timeout=15) as c:
            refused = c.sendmail("s@example.org", [eloise], simple("eloise", "x@example.org"), mail_options=["SMTPUTF8"])
        self.assertEqual(refused, {})
        b.wait_for(s, f"[...document.getElementById('mailbox').options].some((o) => o.value === {json.dumps(eloise)})")
        b.eval(s, "(() => { const m = document.getElementById('mailbox'); m.value = " + json.dumps(eloise) + ";"
                  " m.dispatchEvent(new Event('change')); })()")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 1")
        b.eval(s, "document.getElementById('empty').click()")
        b.wait_for(s, "document.querySelectorAll('#list li').length === 0")
        self.assertEqual(self.messages(mailbox=eloise)["total"], 0)
        self.assertEqual(self.messages()["total"], 1)  # erin's

    def test_c_a_refused_event_stream_is_opened_again(self):
        # With the 64 event streams taken, the page's EventSource is answered 503, which a
        # browser never retries by itself: the page opens a new one once streams are free.
        streams = []
        try:
            for _ in range(64):
                c = socket.create_connection((t.HOST, self.srv.http_port), timeout=15)
                c.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
                streams.append(c)
            for c in streams:  # each answered (200 and its stream) before the page asks
                self.assertIn(b" 200 ", c.recv(4096))
            b = self.start_browser()
            s = b.open(self.base + "/")
            b.wait_for(s, "document.getElementById('status').textContent === 'reconnecting…'")
        finally:
            for c in streams:
                c.close()
        b.wait_for(s, "document.getElementById('status').textContent === 'live'")
        send(self.srv, "s@example.org", ["bob@example.org"], simple("after the cap", "bob@example.org"))
        b.wait_for(s, "document.querySelector('#list li .subject').textContent === 'after the cap'")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=150)
