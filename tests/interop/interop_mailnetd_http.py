# mailnetd's HTTP API (DESIGN.md "mailnetd's HTTP API and web view", #15): the real mailnetd with
# SMTP, POP3 and HTTP on 127.0.0.1 port 0, mail sent with smtplib, the API read with http.client.
"""What each test proves, against the contract other projects' tests rely on:
- /healthz; the list with each filter, limit, total, newest first; 400 for an unknown parameter
  or a bad value; 404 for an unknown id or endpoint;
- one message (the issue's case: a quoted-printable text part, a base64 HTML part in
  ISO-8859-1, an attachment, an RFC 2047 subject) decoded and exact; /raw byte for byte what
  POP3 RETR gives; /parts/{part} as an attachment under Content-Security-Policy: sandbox;
- DELETE of one message and of a mailbox, seen by the next POP3 session; the mailboxes list;
- wait: answered within 1 s of a delivery made while it waits, 408 with what matched at the
  timeout, since= (an id or an RFC 3339 time; an id counts a delivery begun before it and
  ended after it), limit=; lists sent chunked;
- events (Server-Sent Events): `new` then `deleted`, in order;
- 1000 concurrent waiters, none answered before the delivery, all answered 200 by one (RSS
  printed, growth bounded);
- load: 1000 concurrent waiters, each for its own message (subject= with to= or mailbox=), none
  answered before the mail; 50 SMTP clients send the 1000 messages (every reply 250) over 5
  mailboxes; each waiter answered 200 with exactly its own message (chunked bodies decoded),
  all within 60 s; RSS printed, growth bounded;
- fault rules set by PUT /api/v1/faults act on SMTP, a refused PUT keeps them, DELETE clears;
- 413 for headers over 16 KiB and bodies over 64 KiB, also far over (70 KiB, 2 MiB);
- the API refuses a non-loopback address without --allow-open-network (exit 64); a port in
  use is exit 69."""
import datetime
import http.client
import json
import os
import poplib
import re
import smtplib
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
EX_USAGE = 64
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

# The issue's case (as mailnetd/tests/message_view_test.cpp): multipart/mixed of a
# multipart/alternative (quoted-printable UTF-8 text, base64 ISO-8859-1 HTML) and a PDF
# attachment whose name is RFC 2231-encoded; the subject is RFC 2047 in two charsets.
ISSUE_MESSAGE = (
    "From: =?UTF-8?B?w5xuw69jb2Rl?= Sender <sender@example.org>\n"
    "To: \"Doe, Jane\" <jane@example.org>, bob@example.org (Bob)\n"
    "Cc: team: carol@example.org, \"Dan\" <dan@example.org>;, JANE@example.org\n"
    "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?=\n"
    " =?ISO-8859-1?Q?_K=F6ln?= [#42]\n"
    "Message-ID: <issue-case@interop.test>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Hallo J=C3=B6rg,\n"
    "\n"
    "bitte best=C3=A4tige: https://example.org/confirm?id=3D7&t=3Dx.\n"
    "Ein sehr langer Satz, der umgebrochen wird und weiterl=\n"
    "=C3=A4uft.\n"
    "--inner\n"
    "Content-Type: text/html; charset=\"ISO-8859-1\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+R3L832UgYXVzIEv2bG4gJmFtcDsgbWVoci48L3A+DQo8cD48YSBocmVmPSJodHRwczovL2V4\n"
    "YW1wbGUub3JnL2NvbmZpcm0/aWQ9NyZhbXA7dD14JmFtcDt2aWE9aHRtbCI+QmVzdOR0aWdlbjwv\n"
    "YT48L3A+DQo=\n"
    "--inner--\n"
    "\n"
    "--outer\n"
    "Content-Type: application/pdf; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=\"\n"
    "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n"
    "OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\n"
    "cnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmq\n"
    "q6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsc=\n"
    "--outer--\n"
    "epilogue\n").encode("ascii").replace(b"\n", b"\r\n")


def response(conn):
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


class Api:
    """http.client against the API: one connection per request (as curl in a CI job)."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection(t.HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return response(conn)
        finally:
            conn.close()

    def json(self, method, path, want=200, **kw):
        status, headers, body = self.request(method, path, **kw)
        if status != want:
            raise AssertionError(f"{method} {path}: {status} {body!r}, want {want}")
        if want == 204:
            if body:
                raise AssertionError(f"{method} {path}: a 204 with a body {body!r}")
            return None
        if not headers.get("content-type", "").startswith("application/json"):
            raise AssertionError(f"{method} {path}: content type {headers.get('content-type')!r}")
        return json.loads(body)

    def get(self, path, want=200, **kw):
        return self.json("GET", path, want, **kw)


def q(path, **params):
    return path + "?" + urllib.parse.urlencode(params) if params else path


def send(srv, sender, rcpts, msg):
    with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
        refused = s.sendmail(sender, rcpts, msg)
    if refused:
        raise AssertionError(f"refused: {refused}")


def simple(subject, to, frm="Sender <sender@example.org>", cc=None, body="hello\r\n"):
    h = [f"From: {frm}", f"To: {to}"] + ([f"Cc: {cc}"] if cc else []) + [
        f"Subject: {subject}", f"Message-ID: <{subject.replace(' ', '-')}@interop.test>"]
    return ("\r\n".join(h) + "\r\n\r\n" + body).encode("utf-8")


def http_answer(raw):
    """(status, {header: value}, body) of one whole HTTP/1.1 response as read off a socket,
    the body decoded when sent chunked (RFC 9112 7.1; trailers ignored)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no end of headers in {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                raise AssertionError(f"chunked body cut short: {raw[-200:]!r}")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return status, headers, body
            if rest[size:size + 2] != b"\r\n":
                raise AssertionError(f"chunk of {size} octets not ended by CRLF: {raw[-200:]!r}")
            body += rest[:size]
            rest = rest[size + 2:]
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(rest) < length:
            raise AssertionError(f"body of {len(rest)} octets, Content-Length {length}")
        return status, headers, rest[:length]
    return status, headers, rest


def pop3_fetch(srv, mailbox):
    """Every message of `mailbox` as POP3 RETR gives it (CRLF, dot-unstuffed); QUIT ends the session."""
    p = poplib.POP3(t.HOST, srv.pop3_port, timeout=10)
    try:
        p.user(mailbox)
        p.pass_(mailbox)
    except BaseException:
        p.close()
        raise
    return t.retr_all_and_quit(p)


class HttpCase(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.store = os.path.join(self.tmp.path, "store")
        self.srv = t.Mailnetd(MAILNETD, self.store, http=True).start()
        self.api = Api(self.srv.http_port)

    def tearDown(self):
        try:
            self.srv.stop()
        finally:
            self.tmp.cleanup()

    def until(self, count, **filters):
        """Waits (through the API) until `count` messages match (the 250 already waits for the index:
        this is for messages sent from other threads)."""
        return self.api.get(q("/api/v1/wait", count=count, timeout=10, **filters))

    def ids(self, result):
        return [m["id"] for m in result["messages"]]

    def test_healthz_and_listening_line(self):
        self.assertRegex(self.srv.stdout(), r"(?m)^listening http 127\.0\.0\.1:\d+$")
        self.assertEqual(self.api.get("/healthz"), {"status": "ok"})
        self.api.get("/healthz?x=1", want=400)
        self.api.get("/nothing-here", want=404)
        self.api.get("/api/v1/nothing", want=404)
        self.api.get("/api/v2/messages", want=404)
        self.api.json("PUT", "/api/v1/mailboxes", want=405)

    def test_a_message_is_listed_when_its_250_arrives(self):
        # No wait: the 250 goes out only once the index has the message (smtpd's before_reply),
        # so a test that sent mail can look at once. Each round is a fresh connection, and each
        # mailbox's list is read right after the 250.
        for i in range(40):
            box = f"at-once{i % 4}@example.org"
            send(self.srv, "alice@example.org", [box], simple(f"at once {i}", box))
            got = self.api.get(q("/api/v1/messages", mailbox=box, limit=1))
            self.assertEqual([m["subject"] for m in got["messages"]], [f"at once {i}"],
                             f"round {i}: not listed when its 250 arrived")

    def test_list_filters_limit_total_order(self):
        send(self.srv, "alice@example.org", ["bob@example.org"], simple("Alpha one", "Bob <bob@example.org>"))
        send(self.srv, "carol@example.net", ["carol@example.org"],
             simple("Reset your password", "carol@example.org", frm="Carol <carol@example.net>",
                    cc="bob@example.org"))
        send(self.srv, "alice@example.org", ["bob@example.org", "dave@example.org"],
             simple("Gamma =?UTF-8?Q?gr=C3=BC=C3=9Fe?=", "bob@example.org, dave@example.org",
                    frm="Someone Else <else@example.com>"))
        everything = self.until(4)
        self.assertEqual(everything["total"], 4)
        msgs = everything["messages"]
        self.assertEqual(len(msgs), 4)
        for m in msgs:
            self.assertEqual(set(m), {"id", "mailbox", "from", "to", "subject", "received", "size"})
            self.assertRegex(m["id"], r"^[a-z2-7]{16}$")
            self.assertRegex(m["received"], RFC3339)
        # Newest first: the two copies of the third mail, then the second, then the first.
        self.assertEqual([m["subject"] for m in msgs],
                         ["Gamma grüße", "Gamma grüße", "Reset your password", "Alpha one"])
        self.assertEqual(sorted(m["mailbox"] for m in msgs[:2]), ["bob@example.org", "dave@example.org"])
        self.assertNotEqual(msgs[0]["id"], msgs[1]["id"], "each copy has its own id")
        self.assertEqual(msgs[2], {**msgs[2], "mailbox": "carol@example.org", "from": "carol@example.net",
                                   "to": ["carol@example.org", "bob@example.org"]})
        self.assertEqual(self.api.get("/api/v1/messages"), everything)

        def subjects(**f):
            r = self.api.get(q("/api/v1/messages", **f))
            self.assertEqual(r["total"], len(r["messages"]), f)
            return [(m["mailbox"], m["subject"]) for m in r["messages"]]

        # mailbox=: exact, case-insensitive.
        self.assertEqual(subjects(mailbox="BOB@Example.ORG"),
                         [("bob@example.org", "Gamma grüße"), ("bob@example.org", "Alpha one")])
        self.assertEqual(subjects(mailbox="bob@example"), [])
        # to=: the mailbox or a To/Cc address, substring, case-insensitive.
        # (The two copies of one mail are in the order their deliveries were told: either.)
        gamma = [(m["mailbox"], m["subject"]) for m in msgs[:2]]
        self.assertEqual(subjects(to="BOB@"), gamma + [("carol@example.org", "Reset your password"),
                                                       ("bob@example.org", "Alpha one")])
        self.assertEqual(subjects(to="dave"), gamma, "bob's copy too: its To names dave")
        self.assertEqual(subjects(to="carol"), [("carol@example.org", "Reset your password")])
        # from=: the envelope sender or the From address.
        self.assertEqual(subjects(**{"from": "alice@"}), gamma + [("bob@example.org", "Alpha one")])
        self.assertEqual(subjects(**{"from": "ELSE@example.com"}), gamma)
        # subject=: the decoded subject.
        self.assertEqual(subjects(subject="RESET"), [("carol@example.org", "Reset your password")])
        self.assertEqual(subjects(subject="grüße", mailbox="dave@example.org"), [("dave@example.org", "Gamma grüße")])
        self.assertEqual(subjects(subject="nothing like it"), [])
        # limit=: at most that many, total still counts every match.
        r = self.api.get(q("/api/v1/messages", limit=1))
        self.assertEqual((r["total"], self.ids(r)), (4, self.ids(everything)[:1]))
        r = self.api.get(q("/api/v1/messages", limit=1000, to="bob"))
        self.assertEqual(r["total"], 4)
        # 400s, each with a JSON reason.
        for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-1"}, {"unknown": "1"},
                    {"since": "x"}, {"count": "1"}):
            err = self.api.get(q("/api/v1/messages", **bad), want=400)
            self.assertIsInstance(err.get("error"), str, bad)
            self.assertTrue(err["error"], bad)
        self.api.get("/api/v1/messages?limit=1&limit=2", want=400)
        self.api.get("/api/v1/messages?to=%zz", want=400)

    def test_message_detail_raw_and_parts(self):
        send(self.srv, "bounce@example.net", ["jane@example.org"], ISSUE_MESSAGE)
        [summary] = self.until(1)["messages"]
        got = self.api.get(f"/api/v1/messages/{summary['id']}")
        self.assertEqual({k: got[k] for k in summary}, summary)
        self.assertEqual(summary["mailbox"], "jane@example.org")
        self.assertEqual(summary["from"], "bounce@example.net")
        self.assertEqual(summary["to"], ["jane@example.org", "bob@example.org", "carol@example.org", "dan@example.org"])
        self.assertEqual(got["subject"], "Grüße aus Köln [#42]")
        self.assertEqual(got["text"], "Hallo Jörg,\n\nbitte bestätige: https://example.org/confirm?id=7&t=x.\n"
                                      "Ein sehr langer Satz, der umgebrochen wird und weiterläuft.")
        self.assertEqual(got["html"], "<p>Grüße aus Köln &amp; mehr.</p>\n"
                                      "<p><a href=\"https://example.org/confirm?id=7&amp;t=x&amp;via=html\">"
                                      "Bestätigen</a></p>\n")
        self.assertEqual(got["attachments"], [{"part": "2", "filename": "résumé.pdf",
                                               "content_type": "application/pdf", "size": 200}])
        self.assertEqual(got["links"], ["https://example.org/confirm?id=7&t=x",
                                        "https://example.org/confirm?id=7&t=x&via=html"])
        names = [h[0] for h in got["headers"]]
        self.assertEqual(names, ["Return-Path", "Received", "From", "To", "Cc", "Subject", "Message-ID",
                                 "MIME-Version", "Content-Type"])
        self.assertEqual(got["headers"][0][1], "<bounce@example.net>")
        self.assertEqual(got["headers"][2][1], "Ünïcode Sender <sender@example.org>")
        self.assertEqual(got["headers"][5][1], "Grüße aus Köln [#42]")

        # /raw: exactly what RETR gives, as message/rfc822; the summary's size is its length.
        status, headers, raw = self.api.request("GET", f"/api/v1/messages/{summary['id']}/raw")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "message/rfc822")
        [retr] = pop3_fetch(self.srv, "jane@example.org")
        self.assertEqual(raw, retr)
        self.assertEqual(summary["size"], len(retr))
        self.assertTrue(raw.endswith(ISSUE_MESSAGE), "the message as sent, after the trace headers")

        # /parts/{part}: decoded, its own content type, never run by a browser.
        status, headers, pdf = self.api.request("GET", f"/api/v1/messages/{summary['id']}/parts/2")
        self.assertEqual(status, 200)
        self.assertEqual(pdf, bytes(range(200)))
        self.assertEqual(headers["content-type"], "application/pdf")
        self.assertTrue(headers["content-disposition"].startswith("attachment"), headers)
        self.assertIn("filename*=UTF-8''r%C3%A9sum%C3%A9.pdf", headers["content-disposition"])
        self.assertEqual(headers["content-security-policy"], "sandbox")
        status, headers, html = self.api.request("GET", f"/api/v1/messages/{summary['id']}/parts/1.2")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=iso-8859-1")
        self.assertEqual(headers["content-disposition"], "attachment")
        self.assertEqual(headers["content-security-policy"], "sandbox")
        self.assertTrue(html.startswith(b"<p>Gr\xfc\xdfe aus K\xf6ln"), html)
        status, headers, text = self.api.request("GET", f"/api/v1/messages/{summary['id']}/parts/1.1")
        self.assertEqual((status, text[:12]), (200, "Hallo Jörg,".encode()))
        self.api.get(f"/api/v1/messages/{summary['id']}/parts/3", want=404)
        self.api.get(f"/api/v1/messages/{summary['id']}/parts/1.x", want=400)
        self.api.get(f"/api/v1/messages/{summary['id']}/other", want=404)
        # Unknown ids: 404 on every path.
        for path in ("/api/v1/messages/aaaaaaaaaaaaaaaa", "/api/v1/messages/aaaaaaaaaaaaaaaa/raw",
                     "/api/v1/messages/aaaaaaaaaaaaaaaa/parts/1", "/api/v1/messages/no-such-id"):
            self.assertIn("error", self.api.get(path, want=404))
        self.api.json("DELETE", "/api/v1/messages/aaaaaaaaaaaaaaaa", want=404)

    def test_deletes_are_seen_by_pop3_and_mailboxes(self):
        for i in range(2):
            send(self.srv, "a@example.org", ["bob@example.org"], simple(f"for bob {i}", "bob@example.org"))
            send(self.srv, "a@example.org", ["carol@example.org"], simple(f"for carol {i}", "carol@example.org"))
        send(self.srv, "a@example.org", ["dave@example.org"], simple("for dave", "dave@example.org"))
        self.until(5)
        boxes = self.api.get("/api/v1/mailboxes")
        self.assertEqual(sorted(b["name"] for b in boxes), ["bob@example.org", "carol@example.org", "dave@example.org"])
        for b in boxes:
            fetched = pop3_fetch(self.srv, b["name"])
            self.assertEqual((b["messages"], b["size"]), (len(fetched), sum(map(len, fetched))), b)

        bob = self.api.get(q("/api/v1/messages", mailbox="bob@example.org"))["messages"]
        self.api.json("DELETE", f"/api/v1/messages/{bob[0]['id']}", want=204)
        self.api.get(f"/api/v1/messages/{bob[0]['id']}", want=404)
        self.api.json("DELETE", f"/api/v1/messages/{bob[0]['id']}", want=404)
        left = pop3_fetch(self.srv, "bob@example.org")
        self.assertEqual(len(left), 1)
        self.assertIn(b"Subject: for bob 0\r\n", left[0])
        self.assertEqual(self.ids(self.api.get(q("/api/v1/messages", mailbox="bob@example.org"))), [bob[1]["id"]])

        self.api.json("DELETE", q("/api/v1/messages", mailbox="CAROL@example.org"), want=204)
        self.assertEqual(pop3_fetch(self.srv, "carol@example.org"), [])
        self.assertEqual(self.api.get(q("/api/v1/messages", mailbox="carol@example.org"))["total"], 0)
        self.assertEqual(len(pop3_fetch(self.srv, "bob@example.org")), 1, "another mailbox is left alone")
        self.api.json("DELETE", q("/api/v1/messages", limit="1"), want=400)

        counts = {b["name"]: b["messages"] for b in self.api.get("/api/v1/mailboxes")}
        self.assertEqual({k: v for k, v in counts.items() if v}, {"bob@example.org": 1, "dave@example.org": 1})

        self.api.json("DELETE", "/api/v1/messages", want=204)
        self.assertEqual(self.api.get("/api/v1/messages")["total"], 0)
        for box in ("bob@example.org", "carol@example.org", "dave@example.org"):
            self.assertEqual(pop3_fetch(self.srv, box), [], box)

    def test_wait(self):
        send(self.srv, "a@example.org", ["bob@example.org"], simple("early", "bob@example.org"))
        [early] = self.until(1)["messages"]
        # Already there: answered at once.
        t0 = time.monotonic()
        r = self.api.get(q("/api/v1/wait", to="bob", timeout=10))
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(self.ids(r), [early["id"]])

        # A delivery made while the wait is pending answers it within 1 s of the 250.
        got = {}

        def waiter():
            t_start = time.monotonic()
            got["r"] = self.api.request("GET", q("/api/v1/wait", to="late@example.org",
                                                 subject="reset", timeout=20), timeout=30)
            got["at"] = time.monotonic()
            got["took"] = got["at"] - t_start

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.5)
        self.assertTrue(th.is_alive(), "the wait answered before any matching mail")
        send(self.srv, "a@example.org", ["late@example.org"], simple("not it", "late@example.org"))
        time.sleep(0.3)
        self.assertTrue(th.is_alive(), "the wait answered for a message its filter does not match")
        send(self.srv, "a@example.org", ["late@example.org"], simple("Password RESET", "late@example.org"))
        sent_at = time.monotonic()
        th.join(10)
        self.assertFalse(th.is_alive())
        status, _, body = got["r"]
        self.assertEqual(status, 200, body)
        self.assertLess(got["at"] - sent_at, 1.0, "answered within 1 s of the 250")
        r = json.loads(body)
        self.assertEqual((r["total"], [m["subject"] for m in r["messages"]]), (1, ["Password RESET"]))
        reset_id = r["messages"][0]["id"]

        # The timeout: 408 with what matched.
        t0 = time.monotonic()
        r = self.api.get(q("/api/v1/wait", mailbox="late@example.org", count=3, timeout=1), want=408)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 5)
        self.assertEqual([m["subject"] for m in r["messages"]], ["Password RESET", "not it"])
        self.assertEqual(r["total"], 2)
        self.assertEqual(self.api.get(q("/api/v1/wait", to="nobody", timeout=0), want=408), {"total": 0, "messages": []})

        # since=: an id counts only what came after it; an RFC 3339 time likewise.
        self.api.get(q("/api/v1/wait", since=reset_id, timeout=1), want=408)
        r = self.api.get(q("/api/v1/wait", since=early["id"], count=2, timeout=1))
        self.assertEqual([m["subject"] for m in r["messages"]], ["Password RESET", "not it"])
        r = self.api.get(q("/api/v1/wait", since="2000-01-01T00:00:00Z", count=3, timeout=1))
        self.assertEqual(r["total"], 3)
        future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
        self.api.get(q("/api/v1/wait", since=future.strftime("%Y-%m-%dT%H:%M:%SZ"), timeout=0), want=408)

        th = threading.Thread(target=lambda: got.update(
            since=self.api.request("GET", q("/api/v1/wait", since=reset_id, timeout=20), timeout=30)))
        th.start()
        time.sleep(0.3)
        send(self.srv, "a@example.org", ["zed@example.org"], simple("after reset", "zed@example.org"))
        th.join(10)
        status, _, body = got["since"]
        self.assertEqual(status, 200, body)
        self.assertEqual([m["subject"] for m in json.loads(body)["messages"]], ["after reset"])

        for bad in ({"since": "aaaaaaaaaaaaaaaa"}, {"since": "yesterday"}, {"count": "0"}, {"timeout": "-1"},
                    {"timeout": "601"}, {"limit": "0"}, {"limit": "1001"}):
            self.assertIn("error", self.api.get(q("/api/v1/wait", **bad), want=400), bad)

    def test_wait_since_counts_a_delivery_begun_before_it(self):
        # #15: a Maildir name's time is taken when DATA begins. A long message begun first but
        # delivered after a quick one is still news to a wait since= the quick one. (bob's
        # mailbox is made first: to a new mailbox a long message is spooled until its end, and
        # its delivery, so its name, begins only then.)
        send(self.srv, "a@example.org", ["bob@example.org"], simple("first one", "bob@example.org"))
        self.until(1, mailbox="bob@example.org")
        slow = smtplib.SMTP(t.HOST, self.srv.port, timeout=10)
        try:
            slow.ehlo()
            slow.mail("a@example.org")
            slow.rcpt("bob@example.org")
            code, _ = slow.docmd("DATA")
            self.assertEqual(code, 354)
            # Past smtpd's 64 KiB write-out: the delivery has begun (and its file is named).
            slow.send(b"From: a@example.org\r\nTo: bob@example.org\r\nSubject: slow one\r\n\r\n" +
                      (b"x" * 998 + b"\r\n") * 100)
            time.sleep(0.3)
            send(self.srv, "a@example.org", ["bob@example.org"], simple("quick one", "bob@example.org"))
            quick = next(m for m in self.until(2, mailbox="bob@example.org")["messages"] if m["subject"] == "quick one")
            got = {}
            th = threading.Thread(target=lambda: got.update(r=self.api.request(
                "GET", q("/api/v1/wait", mailbox="bob@example.org", since=quick["id"], timeout=20), timeout=30)))
            th.start()
            time.sleep(0.3)
            self.assertTrue(th.is_alive(), "answered before the slow message was in")
            slow.send(b"the rest of a long message\r\n.\r\n")
            self.assertEqual(slow.getreply()[0], 250)
            th.join(10)
            self.assertFalse(th.is_alive())
            status, _, body = got["r"]
            self.assertEqual(status, 200, body)
            [m] = json.loads(body)["messages"]
            self.assertEqual(m["subject"], "slow one")
            # Its name is the earlier, but it is received when its delivery was told: after
            # the quick one (docs/mailnetd.md, wait).
            self.assertGreater(m["received"], quick["received"])
        finally:
            slow.close()

    def test_wait_since_a_time_counts_mail_sent_after_it(self):
        # The CI pattern: T = now, have the application send, wait since=T. A mailbox that just
        # got mail has files made ahead, named up to 2 s before their delivery: a message
        # sent after T must still count (it is received when delivered, not at its name's).
        for i in range(3):
            send(self.srv, "a@example.org", ["carol@example.org"], simple(f"warm {i}", "carol@example.org"))
        for pause in (0.4, 0.8, 1.2):
            time.sleep(pause)
            since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            send(self.srv, "a@example.org", ["carol@example.org"], simple(f"after {pause}", "carol@example.org"))
            r = self.api.get(q("/api/v1/wait", mailbox="carol@example.org", since=since, timeout=5))
            self.assertEqual([m["subject"] for m in r["messages"]], [f"after {pause}"], since)
            self.assertGreater(r["messages"][0]["received"], since)

    def test_lists_are_chunked_and_wait_takes_a_limit(self):
        for i in range(5):
            send(self.srv, "a@example.org", ["bob@example.org"], simple(f"m{i}", "bob@example.org"))
        self.until(5)
        status, headers, body = self.api.request("GET", "/api/v1/messages")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("transfer-encoding"), "chunked")
        self.assertEqual(json.loads(body)["total"], 5)
        r = self.api.get(q("/api/v1/wait", count=5, limit=2, timeout=5))
        self.assertEqual((r["total"], [m["subject"] for m in r["messages"]]), (5, ["m4", "m3"]))

    def test_wait_of_a_client_that_goes_away(self):
        # Many waiters whose clients close: the server goes on answering (and frees them).
        conns = []
        for _ in range(50):
            c = http.client.HTTPConnection(t.HOST, self.srv.http_port, timeout=10)
            c.request("GET", q("/api/v1/wait", to="never", timeout=60))
            conns.append(c)
        for c in conns:
            c.close()
        time.sleep(0.2)
        self.assertEqual(self.api.get("/healthz"), {"status": "ok"})
        send(self.srv, "a@example.org", ["bob@example.org"], simple("after", "bob@example.org"))
        self.assertEqual(self.until(1)["total"], 1)

    def rss_kib(self):
        with open(f"/proc/{self.srv.proc.pid}/status") as f:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))

    def test_a_thousand_waiters_woken_by_one_delivery(self):
        import resource
        import selectors
        import socket
        n = 1000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 200), hard))
        rss_before = self.rss_kib()
        sel = selectors.DefaultSelector()
        socks = []
        try:
            req = (f"GET {q('/api/v1/wait', subject='wake all', timeout=60)} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n").encode()
            for _ in range(n):
                c = socket.create_connection((t.HOST, self.srv.http_port), timeout=10)
                c.sendall(req)
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                socks.append(c)
            time.sleep(1.0)
            self.assertEqual(sel.select(timeout=0), [], "a waiter answered before any delivery")
            rss_waiting = self.rss_kib()
            t0 = time.monotonic()
            send(self.srv, "a@example.org", ["bob@example.org"], simple("wake all", "bob@example.org"))
            got = {c: b"" for c in socks}
            open_ = set(socks)
            deadline = time.monotonic() + 20
            while open_ and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)
                    got[key.fileobj] += data
                    if not data:
                        sel.unregister(key.fileobj)
                        open_.discard(key.fileobj)
            took = time.monotonic() - t0
            self.assertEqual(len(open_), 0, f"{len(open_)} waiters not answered within 20 s")
            statuses = {g.split(b" ", 2)[1] for g in got.values()}
            self.assertEqual(statuses, {b"200"})
            self.assertTrue(all(b"wake all" in g for g in got.values()))
            rss_after = self.rss_kib()
            sys.stderr.write(f"\n1000 waiters: RSS {rss_before} kB idle, {rss_waiting} kB with 1000 waiting, "
                             f"{rss_after} kB after; all answered {took:.2f} s after the delivery began\n")
            self.assertLess(rss_waiting - rss_before, 64 * 1024, "64 MiB for 1000 waiters")
        finally:
            for c in socks:
                c.close()
            sel.close()
        self.assertEqual(self.api.get("/healthz"), {"status": "ok"})

    def test_a_thousand_waiters_each_woken_by_its_own_message_from_50_smtp_clients(self):
        # #15's load test: 1000 waiters, each waiting for the one message meant for it, while 50
        # SMTP clients deliver 1000 messages at once. Every waiter gets its own message and no
        # other, every send its 250, and mailnetd's memory stays bounded.
        import resource
        import selectors
        import socket
        n, clients = 1000, 50
        boxes = [f"load{k}@example.org" for k in range(5)]

        def box(i):
            return boxes[i % len(boxes)]

        def subject(i):
            # subject= is a substring filter: fixed width, so no subject holds another's.
            return f"load-{i:04d}"

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + clients + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + clients + 200), hard))
        rss_before = self.rss_kib()
        sel = selectors.DefaultSelector()
        socks = []
        threads = []
        stop = threading.Event()
        try:
            for i in range(n):
                # Half filter by to= (mailbox or To/Cc), half by mailbox=: both paths of the match.
                filters = {"subject": subject(i), "to" if i % 2 else "mailbox": box(i), "timeout": 60}
                req = (f"GET {q('/api/v1/wait', **filters)} HTTP/1.1\r\n"
                       f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n").encode()
                c = socket.create_connection((t.HOST, self.srv.http_port), timeout=10)
                socks.append(c)
                c.sendall(req)
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, i)
            time.sleep(1.0)
            self.assertEqual(sel.select(timeout=0), [], "a waiter answered before any delivery")
            rss_waiting = self.rss_kib()

            codes = {}      # i: (MAIL, RCPT, DATA) reply codes
            sent_at = {}    # i: when its 250 to DATA arrived
            errors = []     # appended to by the clients (the main thread must not iterate codes meanwhile)

            def client(k):
                try:
                    with smtplib.SMTP(t.HOST, self.srv.port, timeout=30) as s:
                        s.ehlo()
                        for i in range(k, n, clients):
                            if stop.is_set():
                                return
                            mail = s.mail("sender@example.org")[0]
                            rcpt = s.rcpt(box(i))[0]
                            data = s.data(simple(subject(i), box(i)))[0] if (mail, rcpt) == (250, 250) else None
                            sent_at[i] = time.monotonic()
                            codes[i] = (mail, rcpt, data)
                            if codes[i] != (250, 250, 250):
                                errors.append(f"message {i}: replies {codes[i]}")
                except Exception as e:  # noqa: BLE001 -- told below, with the client's number
                    errors.append(f"client {k}: {e!r}")

            t0 = time.monotonic()
            threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
            for th in threads:
                th.start()
            got = {i: b"" for i in range(n)}
            answered_at = {}
            deadline = t0 + 60
            while len(answered_at) < n and time.monotonic() < deadline:
                if errors and not any(th.is_alive() for th in threads):
                    break  # some message was never delivered: its waiter would wait out the 60 s
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)
                    if data:
                        got[key.data] += data
                    else:
                        sel.unregister(key.fileobj)
                        answered_at[key.data] = time.monotonic()
            took = time.monotonic() - t0
            for th in threads:
                th.join(max(0.1, deadline - time.monotonic()))
            self.assertFalse(any(th.is_alive() for th in threads), "an SMTP client still sending after 60 s")
            self.assertEqual(errors[:10], [], f"{len(errors)} SMTP errors or refusals")
            sending = max(sent_at.values()) - t0
            self.assertEqual(len(codes), n)
            self.assertEqual({i: c for i, c in codes.items() if c != (250, 250, 250)}, {}, "every send 250")
            missing = sorted(set(range(n)) - set(answered_at))
            self.assertEqual(missing, [], f"{len(missing)} waiters not answered within 60 s")

            wrong = {}
            ids = set()
            for i in range(n):
                status, _, body = http_answer(got[i])
                r = json.loads(body) if status == 200 else body
                if status != 200 or (r["total"], [(m["subject"], m["mailbox"]) for m in r["messages"]]) != (
                        1, [(subject(i), box(i))]):
                    wrong[i] = (status, r)
                else:
                    ids.add(r["messages"][0]["id"])
            self.assertEqual(len(wrong), 0, f"{len(wrong)} waiters answered wrongly, e.g. {list(wrong.items())[:3]}")
            self.assertEqual(len(ids), n, "each waiter its own message")
            lags = sorted(max(0.0, answered_at[i] - sent_at[i]) for i in range(n))
            rss_after = self.rss_kib()
            sys.stderr.write(f"\n{n} waiters, {clients} SMTP clients: RSS {rss_before} kB idle, {rss_waiting} kB "
                             f"with {n} waiting, {rss_after} kB after; {n} messages sent in {sending:.2f} s, "
                             f"all answered {took:.2f} s after sending began; answer after its 250: median "
                             f"{lags[n // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms\n")
            self.assertLess(rss_waiting - rss_before, 64 * 1024, "64 MiB for 1000 waiters")
            self.assertLess(rss_after - rss_before, 64 * 1024, "64 MiB for 1000 waiters and 1000 messages")
        finally:
            stop.set()
            for c in socks:
                c.close()
            sel.close()
            until = time.monotonic() + 10
            for th in threads:
                th.join(max(0.0, until - time.monotonic()))
        self.assertEqual(self.api.get(q("/api/v1/messages", limit=1))["total"], n)
        self.assertEqual(self.api.get("/healthz"), {"status": "ok"})

    def test_events_new_then_deleted(self):
        conn = http.client.HTTPConnection(t.HOST, self.srv.http_port, timeout=10)
        try:
            conn.request("GET", "/api/v1/events")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.getheader("Content-Type").startswith("text/event-stream"))
            events = []
            done = threading.Event()

            def reader():
                kind = None
                try:
                    while not done.is_set():
                        line = resp.readline()
                        if not line:
                            return
                        line = line.decode().rstrip("\n")
                        if line.startswith("event: "):
                            kind = line[len("event: "):]
                        elif line.startswith("data: "):
                            events.append((kind, json.loads(line[len("data: "):])))
                except OSError:
                    pass

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            send(self.srv, "a@example.org", ["bob@example.org", "carol@example.org"],
                 simple("evented", "bob@example.org, carol@example.org"))
            self.assertTrue(t.wait_until(lambda: len(events) >= 2, timeout=5), events)
            news = [e for e in events if e[0] == "new"]
            self.assertEqual(len(news), 2, events)
            self.assertEqual(sorted(e[1]["mailbox"] for e in news), ["bob@example.org", "carol@example.org"])
            listed = self.api.get("/api/v1/messages")["messages"]
            self.assertEqual(sorted(e[1]["id"] for e in news), sorted(m["id"] for m in listed))
            self.assertEqual({e[1]["id"]: e[1] for e in news}, {m["id"]: m for m in listed})
            first = news[0][1]["id"]
            self.api.json("DELETE", f"/api/v1/messages/{first}", want=204)
            send(self.srv, "a@example.org", ["dave@example.org"], simple("third", "dave@example.org"))
            self.assertTrue(t.wait_until(lambda: len(events) >= 4, timeout=5), events)
            self.assertEqual(events[2], ("deleted", {"id": first}))
            self.assertEqual((events[3][0], events[3][1]["subject"]), ("new", "third"))
            # A deletion through POP3 is told as well.
            pop3_fetch(self.srv, "dave@example.org")  # RETR only, no DELE
            p = poplib.POP3(t.HOST, self.srv.pop3_port, timeout=10)
            p.user("dave@example.org")
            p.pass_("dave@example.org")  # open mode: the password is the address
            p.dele(1)
            p.quit()
            self.assertTrue(t.wait_until(lambda: len(events) >= 5, timeout=5), events)
            self.assertEqual(events[4], ("deleted", {"id": events[3][1]["id"]}))
            done.set()
        finally:
            conn.close()

    def test_faults_act_through_the_api_and_clear(self):
        self.assertEqual(self.api.get("/api/v1/faults"), [])
        rule = {"phase": "rcpt", "match": {"rcpt": "bob@"}, "reply": "452 4.2.2 mailbox busy"}
        got = self.api.json("PUT", "/api/v1/faults", body=json.dumps([rule]))
        self.assertEqual(len(got), 1)
        self.assertEqual(got, [{**rule, "match": {"rcpt": "bob@", "from": ""}, "delay_ms": 0, "disconnect": False,
                                "probability": 1.0, "nth": 0}], "every field written out")
        self.assertEqual(self.api.get("/api/v1/faults"), got)
        with smtplib.SMTP(t.HOST, self.srv.port, timeout=10) as s:
            refused = s.sendmail("a@example.org", ["bob@example.org", "carol@example.org"],
                                 simple("faulty", "bob@example.org, carol@example.org"))
        self.assertEqual(refused, {"bob@example.org": (452, b"4.2.2 mailbox busy")})
        self.assertEqual([m["mailbox"] for m in self.until(1)["messages"]], ["carol@example.org"])
        # A refused PUT: 400 with the reason, the old list still in force.
        err = self.api.json("PUT", "/api/v1/faults", want=400, body=b'[{"phase": "nowhere"}]')
        self.assertIn("phase", err["error"])
        self.api.json("PUT", "/api/v1/faults", want=400, body=b"{not json")
        self.assertEqual(self.api.get("/api/v1/faults"), got)
        self.api.json("DELETE", "/api/v1/faults", want=204)
        self.assertEqual(self.api.get("/api/v1/faults"), [])
        send(self.srv, "a@example.org", ["bob@example.org"], simple("fine again", "bob@example.org"))
        self.assertEqual(self.until(1, mailbox="bob@example.org")["messages"][0]["subject"], "fine again")

    def test_request_limits(self):
        status, _, body = self.api.request("GET", "/healthz", headers={"X-Big": "a" * (17 * 1024)})
        self.assertEqual(status, 413, body)
        self.assertIn("error", json.loads(body))
        status, _, body = self.api.request("GET", "/healthz", headers={"X-Ok": "a" * (8 * 1024)})
        self.assertEqual(status, 200, body)
        status, _, body = self.api.request("PUT", "/api/v1/messages", body=b"x" * (65 * 1024),
                                           headers={"Content-Type": "application/json"})
        self.assertEqual(status, 413, body)
        self.assertIn("error", json.loads(body))
        # Far over (one header over 64 KiB, a body over 1 MiB): refused by the HTTP parser
        # underneath, still answered 413 with the reason, not a reset.
        status, headers, body = self.api.request("GET", "/healthz", headers={"X-Huge": "a" * (70 * 1024)})
        self.assertEqual((status, json.loads(body)), (413, {"error": "request headers over 16384 octets"}))
        status, _, body = self.api.request("PUT", "/api/v1/faults", body=b"[" + b" " * (2 << 20) + b"]",
                                           headers={"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)), (413, {"error": "request body over 65536 octets"}))
        # Still serving.
        self.assertEqual(self.api.get("/healthz"), {"status": "ok"})
        # A filter is searched in every summary: bounded.
        status, _, body = self.api.request("GET", q("/api/v1/messages", subject="a" * 257))
        self.assertEqual(status, 400, body)
        self.assertIn("subject", json.loads(body)["error"])
        self.assertEqual(self.api.get(q("/api/v1/messages", subject="a" * 256))["total"], 0)
        # HEAD is not served: every answer here has a body, the events stream never ends.
        status, _, _ = self.api.request("HEAD", "/api/v1/messages")
        self.assertEqual(status, 405)

    def test_dns_rebinding_is_refused(self):
        # A web page whose name was rebound to 127.0.0.1 sends its own Host (and Origin).
        send(self.srv, "alice@example.org", ["rebind@example.org"], simple("secret token", "rebind@example.org"))
        t.wait_until(lambda: self.api.get("/api/v1/messages")["total"] == 1, timeout=10)
        for host in ("attacker.example:8025", "attacker.example", "127.0.0.1.attacker.example", "localhost:evil",
                     "127.0.0.1:80@attacker.example", "[::1]attacker.example", "[::1]:8o"):
            status, _, body = self.api.request("GET", "/api/v1/messages", headers={"Host": host})
            self.assertEqual(status, 403, f"{host}: {body!r}")
            self.assertNotIn(b"rebind@example.org", body)
        status, _, body = self.api.request("PUT", "/api/v1/faults", body=b"[]",
                                           headers={"Origin": "http://attacker.example:8025",
                                                    "Content-Type": "text/plain"})
        self.assertEqual(status, 403, body)
        status, _, body = self.api.request("DELETE", "/api/v1/messages", headers={"Origin": "null"})
        self.assertEqual(status, 403, body)
        self.assertEqual(self.api.get("/api/v1/messages")["total"], 1, "nothing deleted")
        # The machine's own names are served, with or without a port; the page's own Origin too.
        for host in (f"127.0.0.1:{self.srv.http_port}", f"localhost:{self.srv.http_port}", "LOCALHOST", "[::1]:80"):
            status, _, body = self.api.request("GET", "/healthz", headers={"Host": host})
            self.assertEqual(status, 200, f"{host}: {body!r}")
        self.api.json("PUT", "/api/v1/faults", body=b"[]",
                      headers={"Origin": f"http://127.0.0.1:{self.srv.http_port}", "Content-Type": "application/json"})


class OpenNetwork(unittest.TestCase):
    def run_mailnetd(self, *args):
        with t.TempDir() as d:
            return subprocess.run([MAILNETD, "--store", os.path.join(d, "store"), "--smtp", "127.0.0.1:0",
                                   "--pop3", "127.0.0.1:0", *args], capture_output=True, timeout=20)

    def test_http_on_a_non_loopback_address_needs_allow_open_network(self):
        r = self.run_mailnetd("--http", "0.0.0.0:0")
        self.assertEqual(r.returncode, EX_USAGE, r)
        self.assertNotIn(b"listening", r.stdout)
        self.assertIn(b"--allow-open-network", r.stderr)
        with t.TempDir() as d:
            users = t.write_users(os.path.join(d, "users"), {"bob@example.org": "secret"})
            r = self.run_mailnetd("--users", users, "--http", "0.0.0.0:0")
        self.assertEqual(r.returncode, EX_USAGE, "users mode too: the API has no login")
        with t.TempDir() as d:
            srv = t.Mailnetd(MAILNETD, os.path.join(d, "store"), http=True, addr="0.0.0.0",
                             extra=["--allow-open-network"]).start()
            try:
                self.assertRegex(srv.stdout(), r"(?m)^listening http 0\.0\.0\.0:\d+$")
                self.assertEqual(Api(srv.http_port).get("/healthz"), {"status": "ok"})
            finally:
                srv.stop()

    def test_http_port_in_use_is_69(self):
        import socket
        with socket.socket() as busy:
            busy.bind((t.HOST, 0))
            busy.listen()
            r = self.run_mailnetd("--http", f"{t.HOST}:{busy.getsockname()[1]}")
        self.assertEqual(r.returncode, 69, r)
        self.assertNotIn(b"listening", r.stdout)

    def test_no_http(self):
        with t.TempDir() as d:
            srv = t.Mailnetd(MAILNETD, os.path.join(d, "store")).start()
            try:
                self.assertNotIn("listening http", srv.stdout())
                self.assertIsNone(srv.http_port)
            finally:
                srv.stop()


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=240)
