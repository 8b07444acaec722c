# mailnet interop: pop3d over TLS with Python's poplib: STLS (RFC 2595 4) and implicit
# TLS (RFC 8314), certificates checked against a throw-away CA.
import os
import poplib
import socket
import ssl
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
TIMEOUT = 10


def resp_text(e):
    a = e.args[0] if e.args else b""
    return a if isinstance(a, bytes) else str(a).encode()


class TlsBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = t.TempDir()
        cls.d = cls.tmp.path
        cls.ca = t.TestCA(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.work = os.path.join(self.d, self.id().rsplit(".", 1)[-1])
        os.makedirs(self.work)
        self.users = t.write_users(os.path.join(self.work, "users"), {"alice": "secret"})
        self.store = os.path.join(self.work, "store")
        self.stored = t.fill_maildir(os.path.join(self.store, "alice"), t.test_messages(big=True))
        self.by_name = {n: d for _l, n, d in self.stored}
        self.srv = t.Pop3d(POP3D, self.store, self.users, tls=self.ca, implicit_tls=True,
                           workdir=self.work)
        self.srv.start()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.close()
            except (OSError, poplib.error_proto):
                pass
        self.srv.stop()
        if not getattr(self._outcome, "success", True):
            print(f"--- pop3d stderr ---\n{self.srv.stderr()}", file=sys.stderr)

    def check_mailbox(self, p):
        """Login done: UIDL, then RETR of every message compared with the store."""
        count, _ = p.stat()
        self.assertEqual(count, len(self.stored))
        _r, lines, _ = p.uidl()
        uids = {int(n): u.decode() for n, u in (ln.split(b" ", 1) for ln in lines)}
        for n, uid in uids.items():
            _r, body, _o = p.retr(n)
            self.assertEqual(b"\r\n".join(body) + b"\r\n", t.wire_form(self.by_name[uid]),
                             f"RETR {n} ({uid})")


class Stls(TlsBase):
    def test_stls_then_session(self):
        p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
        self.clients.append(p)
        caps = p.capa()
        self.assertIn("STLS", caps)
        self.assertTrue(p.stls(self.ca.client_context()).startswith(b"+OK"))
        self.assertIsInstance(p.sock, ssl.SSLSocket)
        self.assertGreaterEqual(p.sock.version(), "TLSv1.2")
        caps = p.capa()
        self.assertNotIn("STLS", caps, "RFC 2595 4: no STLS after TLS is on")
        self.assertIn("USER", caps)
        p.user("alice")
        p.pass_("secret")
        self.check_mailbox(p)
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_stls_twice_refused(self):
        p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
        self.clients.append(p)
        p.stls(self.ca.client_context())
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")  # poplib's stls() would refuse client-side; send it raw
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_stls_after_login_refused(self):
        p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
        self.clients.append(p)
        p.user("alice")
        p.pass_("secret")
        with self.assertRaises(poplib.error_proto):
            p.stls(self.ca.client_context())  # RFC 2595 4: only in AUTHORIZATION
        self.assertEqual(p.stat()[0], len(self.stored))
        p.quit()

    def stls_after(self, s, cleartext, replies):
        """Greeting, then `cleartext` in one write; its replies start as `replies` (the last
        one STLS's); then the handshake. The TLS socket."""
        r = t.RawPop3(None, timeout=TIMEOUT, sock=s)
        self.assertTrue(r.read_greeting().startswith(b"+OK"))
        s.sendall(cleartext)
        for want in replies:
            self.assertTrue(r.readline().startswith(want))
        self.assertEqual(r.buf, b"", "nothing after the STLS +OK in cleartext")
        ts = self.ca.client_context().wrap_socket(s, server_hostname=t.HOST)
        ts.settimeout(TIMEOUT)
        return ts

    def test_bytes_pipelined_after_stls_are_discarded(self):
        # RFC 2595 / response injection: "CAPA" sent in cleartext with STLS must not be
        # answered inside the TLS session.
        s = socket.create_connection((t.HOST, self.srv.port), timeout=TIMEOUT)
        ts = None
        try:
            ts = self.stls_after(s, b"STLS\r\nCAPA\r\n", [b"+OK"])
            ts.sendall(b"QUIT\r\n")
            got = t.read_to_close(ts)
            self.assertTrue(got.startswith(b"+OK"), got)
            self.assertEqual(got.count(b"\r\n"), 1, f"only the QUIT reply: {got!r}")
        finally:
            (ts or s).close()

    def test_stls_pipelined_behind_a_failed_login_still_handshakes(self):
        # The failed login's delay reads ahead (a peer that leaves is let go at once): that
        # read, still waiting when STLS came, was taken for octets after STLS (a review).
        s = socket.create_connection((t.HOST, self.srv.port), timeout=TIMEOUT)
        ts = None
        try:
            # USER, then PASS after its delay, then STLS.
            ts = self.stls_after(s, b"USER alice\r\nPASS wrong\r\nSTLS\r\n", [b"+OK", b"-ERR", b"+OK"])
            ts.sendall(b"USER alice\r\nPASS secret\r\nQUIT\r\n")
            got = t.read_to_close(ts)
            self.assertEqual(got.count(b"+OK"), 3, got)
        finally:
            (ts or s).close()

    def test_tls12_only_client(self):
        ctx = self.ca.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
        self.clients.append(p)
        p.stls(ctx)
        self.assertEqual(p.sock.version(), "TLSv1.2")
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_hostname_checked_by_client(self):
        # The server's certificate names 127.0.0.1 and localhost, nothing else.
        ctx = self.ca.client_context()
        s = socket.create_connection((t.HOST, self.srv.tls_port), timeout=TIMEOUT)
        try:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(s, server_hostname="mail.example.org")
        finally:
            s.close()
        p = poplib.POP3_SSL("localhost", self.srv.tls_port, context=ctx, timeout=TIMEOUT)
        self.clients.append(p)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        p.quit()


class Implicit(TlsBase):
    def test_pop3s_session(self):
        p = poplib.POP3_SSL(t.HOST, self.srv.tls_port, context=self.ca.client_context(),
                            timeout=TIMEOUT)
        self.clients.append(p)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        caps = p.capa()
        self.assertNotIn("STLS", caps)
        self.assertIn("PLAIN", caps.get("SASL", []))
        self.assertTrue(p._shortcmd("AUTH PLAIN " + t.auth_plain_b64()).startswith(b"+OK"))
        self.check_mailbox(p)
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_pop3s_stls_refused(self):
        p = poplib.POP3_SSL(t.HOST, self.srv.tls_port, context=self.ca.client_context(),
                            timeout=TIMEOUT)
        self.clients.append(p)
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_plaintext_on_tls_port_gets_nothing_usable(self):
        s = socket.create_connection((t.HOST, self.srv.tls_port), timeout=3)
        try:
            s.sendall(b"USER alice\r\nPASS secret\r\n")
            try:
                got = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                got = b""
            self.assertFalse(got.startswith(b"+OK"), got)
        finally:
            s.close()
        # The server is still fine afterwards.
        p = poplib.POP3_SSL(t.HOST, self.srv.tls_port, context=self.ca.client_context(),
                            timeout=TIMEOUT)
        self.clients.append(p)
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_a_partial_tls_record_never_stalls_a_long_retr(self):
        # Issue 11, defect 4: while pipelined RETRs of many segments are written, the client
        # sends a command one octet at a time, so the server sees partial TLS records. The
        # server must never wait for the rest of a record before writing the next segment.
        sock = socket.create_connection((t.HOST, self.srv.tls_port), timeout=TIMEOUT)
        self.clients.append(sock)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ca.client_context().wrap_bio(inc, out, server_hostname=t.HOST)
        got = bytearray()

        def pull():
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("server closed")
            inc.write(chunk)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(out.read())
                pull()
        sock.sendall(out.read())

        def read_until(marker):
            while marker not in got:
                try:
                    got.extend(tls.read(65536))
                except ssl.SSLWantReadError:
                    pull()

        def send(data):
            tls.write(data)
            sock.sendall(out.read())

        read_until(b"\r\n")
        send(b"USER alice\r\nPASS secret\r\nUIDL\r\n")
        read_until(b"\r\n.\r\n")
        lines = bytes(got).split(b"listing follows\r\n", 1)[1].split(b"\r\n.\r\n")[0].split(b"\r\n")
        uids = {u.decode(): int(n) for n, u in (ln.split(b" ", 1) for ln in lines)}
        big_uid = next(n for _l, n, d in self.stored if len(d) > 500000)
        big = uids[big_uid]
        del got[:]
        send(f"RETR {big}\r\n".encode() * 3)
        # One more command, as a TLS record the server gets an octet at a time.
        tls.write(b"NOOP\r\n")
        record = out.read()
        trickled = 0
        sock.settimeout(5)
        terminators = 0
        while terminators < 3:
            if trickled < len(record) - 1 and len(got) > 150_000 * (trickled + 1):
                sock.sendall(record[trickled:trickled + 1])
                trickled += 1
            try:
                got.extend(tls.read(65536))
            except ssl.SSLWantReadError:
                try:
                    pull()
                except socket.timeout:
                    self.fail(f"the RETRs stalled after {len(got)} octets with {trickled} octets "
                              "of a record sent")
            terminators = got.count(b"\r\n.\r\n")
        self.assertGreater(trickled, 3, "the record was sent in pieces while the RETRs ran")
        sock.sendall(record[trickled:])
        read_until(b"\r\n+OK\r\n")
        want = t.wire_form(self.by_name[big_uid])
        replies = bytes(got).split(b"\r\n.\r\n")
        for r in replies[:3]:
            head, body = r.split(b"\r\n", 1)
            self.assertTrue(head.startswith(b"+OK"), head)
            self.assertEqual(t.unstuff(body) + b"\r\n", want)
        self.assertEqual(replies[3].strip(), b"+OK", "NOOP answered once its record was whole")
        send(b"QUIT\r\n")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
