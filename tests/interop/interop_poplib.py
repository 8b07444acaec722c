# mailnet interop: the real pop3d driven by Python's poplib (and raw sockets) on loopback.
# RFC 1939 (every command, UPDATE state), RFC 2449 (CAPA, RESP-CODES, PIPELINING), RFC 5034.
import os
import poplib
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
TIMEOUT = 10


def resp_text(e):
    """The server reply carried by a poplib.error_proto."""
    a = e.args[0] if e.args else b""
    return a if isinstance(a, bytes) else str(a).encode()


class PoplibBase(unittest.TestCase):
    extra = ()
    big = True

    def setUp(self):
        self.tmp = t.TempDir()
        self.d = self.tmp.path
        self.users = t.write_users(os.path.join(self.d, "users"),
                                   {"alice": "secret", "bob": "bobpass", "carol": "carolpass"})
        self.store = os.path.join(self.d, "store")
        self.mdir = os.path.join(self.store, "alice")
        self.stored = t.fill_maildir(self.mdir, t.test_messages(big=self.big))
        self.by_name = {name: data for _l, name, data in self.stored}
        self.srv = t.Pop3d(POP3D, self.store, self.users, extra=self.extra, workdir=self.d)
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
        self.tmp.cleanup()

    def pop(self):
        p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
        self.clients.append(p)
        return p

    def login(self, user="alice", password="secret"):
        p = self.pop()
        self.assertTrue(p.user(user).startswith(b"+OK"))
        self.assertTrue(p.pass_(password).startswith(b"+OK"))
        return p

    def raw(self):
        r = t.RawPop3(self.srv.port, timeout=TIMEOUT)
        self.clients.append(r)
        self.assertTrue(r.read_greeting().startswith(b"+OK"))
        return r

    def uidl_map(self, p):
        """{msn: uidl} from UIDL."""
        resp, lines, _ = p.uidl()
        self.assertTrue(resp.startswith(b"+OK"), resp)
        out = {}
        for ln in lines:
            n, u = ln.split(b" ", 1)
            out[int(n)] = u.decode()
        return out

    def data_of(self, uid):
        return self.by_name[uid]

    def files(self):
        return t.maildir_files(self.mdir)


class Commands(PoplibBase):
    def test_capa(self):
        p = self.pop()
        caps = p.capa()
        for c in ("USER", "UIDL", "TOP", "PIPELINING", "RESP-CODES"):
            self.assertIn(c, caps)
        self.assertIn("PLAIN", caps.get("SASL", []))
        self.assertNotIn("STLS", caps, "no STLS without --tls-cert")
        # Greeting without --enable-apop carries no APOP timestamp.
        self.assertNotIn(b"<", p.getwelcome())
        p.quit()

    def test_user_pass_stat_list(self):
        p = self.login()
        count, octets = p.stat()
        self.assertEqual(count, len(self.stored))
        resp, lines, _ = p.list()
        self.assertTrue(resp.startswith(b"+OK"))
        self.assertEqual(len(lines), count)
        sizes = {}
        for ln in lines:
            n, s = ln.split()
            sizes[int(n)] = int(s)
        self.assertEqual(sorted(sizes), list(range(1, count + 1)))
        self.assertEqual(sum(sizes.values()), octets, "STAT octets = sum of LIST sizes")
        uids = self.uidl_map(p)
        for n, uid in uids.items():
            # Sizes are the wire size: CRLF line ends, before dot-stuffing.
            self.assertEqual(sizes[n], len(t.to_crlf(self.data_of(uid))), f"LIST {n} ({uid})")
            r = p.list(n)
            self.assertEqual(r, b"+OK %d %d" % (n, sizes[n]))
        with self.assertRaises(poplib.error_proto):
            p.list(count + 1)
        with self.assertRaises(poplib.error_proto):
            p.list(0)
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_list_sizes_without_size_in_name(self):
        # Names without ,S=,W=: pop3d must compute the wire size itself.
        bob = os.path.join(self.store, "bob")
        stored = t.fill_maildir(bob, t.test_messages(big=False), with_sizes=False)
        by_name = {n: d for _l, n, d in stored}
        p = self.login("bob", "bobpass")
        uids = self.uidl_map(p)
        _resp, lines, _ = p.list()
        for ln in lines:
            n, s = map(int, ln.split())
            self.assertEqual(s, len(t.to_crlf(by_name[uids[n]])), f"LIST {n} ({uids[n]})")
            _r, body, _o = p.retr(n)
            self.assertEqual(b"\r\n".join(body) + b"\r\n", t.wire_form(by_name[uids[n]]))
        p.quit()

    def test_retr_every_message(self):
        p = self.login()
        uids = self.uidl_map(p)
        self.assertEqual(sorted(uids.values()), sorted(self.by_name))
        for n, uid in uids.items():
            resp, lines, _octets = p.retr(n)
            self.assertTrue(resp.startswith(b"+OK"), resp)
            got = b"\r\n".join(lines) + b"\r\n"
            self.assertEqual(got, t.wire_form(self.data_of(uid)), f"RETR {n} ({uid})")
        with self.assertRaises(poplib.error_proto):
            p.retr(len(uids) + 1)
        p.quit()

    def test_retr_exact_wire_bytes(self):
        # Raw bytes on the wire: LF -> CRLF, leading dots doubled, ".\r\n" terminator.
        r = self.raw()
        r.login()
        r.send(b"UIDL\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        uids = dict(ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)
        for n, uid in uids.items():
            data = self.data_of(uid.decode())
            r.send(b"RETR " + n + b"\r\n")
            self.assertTrue(r.readline().startswith(b"+OK"))
            wire = t.wire_form(data)
            stuffed = b"\r\n".join((b"." + ln if ln.startswith(b".") else ln)
                                   for ln in wire[:-2].split(b"\r\n")) + b"\r\n.\r\n"
            while len(r.buf) < len(stuffed):
                chunk = r.sock.recv(1 << 20)
                self.assertTrue(chunk, "connection closed inside RETR")
                r.buf += chunk
            self.assertEqual(r.buf[:len(stuffed)], stuffed, f"RETR {n.decode()} raw bytes")
            r.buf = r.buf[len(stuffed):]
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_top(self):
        p = self.login()
        uids = self.uidl_map(p)
        for n, uid in uids.items():
            wire = t.wire_form(self.data_of(uid))
            i = wire.find(b"\r\n\r\n")
            self.assertGreater(i, 0)
            head, body = wire[:i + 4], wire[i + 4:]
            body_lines = body.split(b"\r\n")[:-1] if body else []
            for k in (0, 2):
                resp, lines, _ = p.top(n, k)
                self.assertTrue(resp.startswith(b"+OK"), resp)
                got = b"\r\n".join(lines) + b"\r\n"
                want = head + b"".join(ln + b"\r\n" for ln in body_lines[:k])
                self.assertEqual(got, want, f"TOP {n} {k} ({uid})")
        with self.assertRaises(poplib.error_proto):
            p.top(len(uids) + 1, 0)
        with self.assertRaises(poplib.error_proto):
            p._longcmd("TOP 1")  # missing argument
        p.quit()
        # TOP does not mark messages seen.
        for sub, fn in self.files().values():
            self.assertEqual(sub, "new", fn)

    def test_uidl(self):
        p = self.login()
        uids = self.uidl_map(p)
        self.assertEqual(sorted(uids.values()), sorted(self.by_name), "UIDL is the Maildir base name")
        for n, uid in uids.items():
            self.assertEqual(p.uidl(n), f"+OK {n} {uid}".encode())
        with self.assertRaises(poplib.error_proto):
            p.uidl(len(uids) + 1)
        p.quit()

    def test_noop_and_unknown(self):
        p = self.pop()
        with self.assertRaises(poplib.error_proto):
            p.stat()  # not logged in
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("XYZZY")
        p.user("alice")
        p.pass_("secret")
        self.assertTrue(p.noop().startswith(b"+OK"))
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("XYZZY")
        self.assertTrue(p.noop().startswith(b"+OK"))
        p.quit()

    def test_quit_before_login(self):
        p = self.pop()
        self.assertTrue(p.quit().startswith(b"+OK"))

    def test_keywords_are_case_insensitive(self):
        # RFC 1939 3: keywords are case-insensitive.
        r = self.raw()
        r.send(b"user alice\r\nPaSs secret\r\nstat\r\nlist 1\r\nuidl 1\r\nnoop\r\nquit\r\n")
        for _ in range(6):
            line = r.readline()
            self.assertTrue(line.startswith(b"+OK"), line)
        self.assertTrue(r.readline().startswith(b"+OK"))

    def test_empty_and_bare_lf_lines(self):
        r = self.raw()
        r.login()
        self.assertTrue(r.cmd("").startswith(b"-ERR"), "an empty line is an error, not a crash")
        # A bare LF never ends a command (DESIGN.md): "NOOP\nSTAT" is one (bad) command.
        r.send(b"NOOP\nSTAT\r\n")
        self.assertTrue(r.readline().startswith(b"-ERR"))
        self.assertEqual(r.cmd("NOOP"), b"+OK", "nothing else was answered")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_stls_without_certificate(self):
        p = self.pop()
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_top_with_a_huge_line_count_sends_the_whole_message(self):
        """TOP msg n with n >= 10^9 (once refused as a syntax error) sends everything.
        RFC 1939 7 (TOP): n is a non-negative number, and "if the number of lines requested
        is greater than the number of lines in the body, the server sends the entire
        message"; clients ask for 'everything' with a large n such as 2147483647."""
        p = self.login()
        uids = self.uidl_map(p)
        n = next(k for k, u in uids.items() if self.data_of(u) == dict(t.test_messages(False))["dots"])
        whole = t.wire_form(self.data_of(uids[n]))
        for lines in (999999999, 1000000000, 2147483647, 4294967296):
            try:
                resp, got, _ = p.top(n, lines)
            except poplib.error_proto as e:
                self.fail(f"TOP {n} {lines} refused: {resp_text(e)!r}")
            self.assertEqual(b"\r\n".join(got) + b"\r\n", whole, f"TOP {n} {lines}: the whole message")
        p.quit()


class Update(PoplibBase):
    big = False

    def test_dele_quit_removes(self):
        p = self.login()
        uids = self.uidl_map(p)
        self.assertTrue(p.dele(2).startswith(b"+OK"))
        with self.assertRaises(poplib.error_proto):
            p.dele(2)  # already deleted
        with self.assertRaises(poplib.error_proto):
            p.retr(2)  # deleted messages are gone for this session
        count, _ = p.stat()
        self.assertEqual(count, len(uids) - 1)
        # Still on disk until QUIT.
        self.assertIn(uids[2], self.files())
        self.assertTrue(p.quit().startswith(b"+OK"))
        files = self.files()
        self.assertNotIn(uids[2], files)
        self.assertEqual(len(files), len(uids) - 1)
        p = self.login()
        self.assertEqual(p.stat()[0], len(uids) - 1)
        self.assertNotIn(uids[2], self.uidl_map(p).values())
        p.quit()

    def test_dele_rset_keeps(self):
        p = self.login()
        uids = self.uidl_map(p)
        p.dele(1)
        p.dele(3)
        self.assertEqual(p.stat()[0], len(uids) - 2)
        self.assertTrue(p.rset().startswith(b"+OK"))
        self.assertEqual(p.stat()[0], len(uids))
        p.retr(1)
        p.quit()
        self.assertEqual(sorted(self.files()), sorted(uids.values()))

    def test_dropped_connection_deletes_nothing(self):
        r = self.raw()
        r.login()
        for n in (1, 2, 3):
            self.assertTrue(r.cmd(f"DELE {n}").startswith(b"+OK"))
        self.assertTrue(r.cmd("RETR 4").startswith(b"+OK"))
        r.read_multiline()
        r.sock.close()  # no QUIT
        # The lock is released once the server sees the close; then all is still there.
        def can_login():
            p = poplib.POP3(t.HOST, self.srv.port, timeout=TIMEOUT)
            try:
                p.user("alice")
                p.pass_("secret")
                n = p.stat()[0]
                p.quit()
                return n
            except poplib.error_proto as e:
                self.assertIn(b"[IN-USE]", resp_text(e))
                p.close()
                return None
        n = t.wait_until(can_login, timeout=5)
        self.assertEqual(n, len(self.stored))
        files = self.files()
        self.assertEqual(len(files), len(self.stored))
        for sub, fn in files.values():
            self.assertEqual(sub, "new", f"a dropped session marks nothing seen: {fn}")

    def test_retr_marks_seen_after_quit(self):
        p = self.login()
        uids = self.uidl_map(p)
        p.retr(2)
        p.top(3, 1)
        self.assertEqual(self.files()[uids[2]][0], "new", "nothing changes before QUIT")
        p.quit()
        files = self.files()
        sub, fn = files[uids[2]]
        self.assertEqual(sub, "cur")
        self.assertTrue(fn.endswith(":2,S"), fn)
        self.assertEqual(fn, uids[2] + ":2,S")
        with open(os.path.join(self.mdir, sub, fn), "rb") as f:
            self.assertEqual(f.read(), self.data_of(uids[2]), "contents unchanged by the rename")
        for uid, (sub, fn) in files.items():
            if uid != uids[2]:
                self.assertEqual(sub, "new", f"only the RETRieved message is seen: {fn}")

    def test_retr_rset_not_seen(self):
        p = self.login()
        p.retr(1)
        p.rset()
        p.quit()
        for sub, fn in self.files().values():
            self.assertEqual(sub, "new", fn)

    def test_last(self):
        p = self.login()
        self.assertEqual(p._shortcmd("LAST"), b"+OK 0")
        uids = self.uidl_map(p)
        p.retr(3)
        # RFC 1939 (1988 LAST): the highest message number accessed.
        self.assertEqual(p._shortcmd("LAST"), b"+OK 3")
        p.rset()
        self.assertEqual(p._shortcmd("LAST"), b"+OK 0", "RSET undoes this session's seen marks")
        p.retr(3)
        p.quit()
        p = self.login()
        uids2 = self.uidl_map(p)
        seen = [n for n, u in uids2.items() if u == uids[3]]
        self.assertEqual(p._shortcmd("LAST"), b"+OK %d" % max(seen))
        p.quit()

    def test_rset_after_nothing(self):
        p = self.login()
        self.assertTrue(p.rset().startswith(b"+OK"))
        p.quit()


class Auth(PoplibBase):
    big = False

    def test_wrong_password(self):
        p = self.pop()
        p.user("alice")
        t0 = time.monotonic()
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("wrong")
        wrong = resp_text(cm.exception)
        self.assertTrue(wrong.startswith(b"-ERR [AUTH]"), wrong)
        print(f"failed-login reply after {time.monotonic() - t0:.2f} s", file=sys.stderr)
        # The session goes on: the right password now works.
        p.user("alice")
        self.assertTrue(p.pass_("secret").startswith(b"+OK"))
        p.quit()

    def test_unknown_user_same_reply(self):
        p = self.pop()
        self.assertTrue(p.user("nosuchuser").startswith(b"+OK"), "USER never tells")
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("secret")
        self.assertTrue(resp_text(cm.exception).startswith(b"-ERR [AUTH]"), resp_text(cm.exception))
        p.close()

    def test_auth_plain(self):
        # Initial response (RFC 5034 4).
        p = self.pop()
        self.assertTrue(p._shortcmd("AUTH PLAIN " + t.auth_plain_b64()).startswith(b"+OK"))
        self.assertEqual(p.stat()[0], len(self.stored))
        p.quit()
        # Two steps: "+ " challenge, then the response.
        r = self.raw()
        r.send(b"AUTH PLAIN\r\n")
        self.assertEqual(r.readline().rstrip(), b"+")
        self.assertTrue(r.cmd(t.auth_plain_b64()).startswith(b"+OK"))
        self.assertTrue(r.cmd("STAT").startswith(b"+OK %d " % len(self.stored)))
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_auth_plain_wrong(self):
        p = self.pop()
        with self.assertRaises(poplib.error_proto) as cm:
            p._shortcmd("AUTH PLAIN " + t.auth_plain_b64(password="wrong"))
        self.assertTrue(resp_text(cm.exception).startswith(b"-ERR [AUTH]"), resp_text(cm.exception))
        p.close()

    def test_auth_cancel(self):
        r = self.raw()
        r.send(b"AUTH PLAIN\r\n")
        self.assertEqual(r.readline().rstrip(), b"+")
        self.assertTrue(r.cmd("*").startswith(b"-ERR"), "RFC 5034 4: '*' cancels")
        self.assertTrue(r.cmd("NOOP").startswith(b"-ERR"), "still not logged in")
        r.login()
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_apop_refused_when_disabled(self):
        p = self.pop()
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("APOP alice 0123456789abcdef0123456789abcdef")
        p.close()

    def test_in_use(self):
        first = self.login()
        second = self.pop()
        second.user("alice")
        t0 = time.monotonic()
        with self.assertRaises(poplib.error_proto) as cm:
            second.pass_("secret")
        self.assertTrue(resp_text(cm.exception).startswith(b"-ERR [IN-USE]"), resp_text(cm.exception))
        print(f"[IN-USE] reply after {time.monotonic() - t0:.2f} s", file=sys.stderr)
        self.assertTrue(first.quit().startswith(b"+OK"))
        second.user("alice")
        self.assertTrue(second.pass_("secret").startswith(b"+OK"))
        self.assertEqual(second.stat()[0], len(self.stored))
        second.quit()

    def test_other_user_not_locked(self):
        first = self.login()
        os.makedirs(os.path.join(self.store, "bob"), exist_ok=True)
        bob = self.login("bob", "bobpass")
        self.assertEqual(bob.stat()[0], 0)
        bob.quit()
        first.quit()


class Apop(PoplibBase):
    extra = ("--enable-apop",)
    big = False

    def test_apop(self):
        p = self.pop()
        self.assertRegex(p.getwelcome(), rb"^\+OK .*<[^<>@]+@[^<>]+>")
        self.assertTrue(p.apop("alice", "secret").startswith(b"+OK"))
        self.assertEqual(p.stat()[0], len(self.stored))
        p.quit()

    def test_apop_wrong(self):
        p = self.pop()
        with self.assertRaises(poplib.error_proto) as cm:
            p.apop("alice", "wrong")
        self.assertTrue(resp_text(cm.exception).startswith(b"-ERR [AUTH]"), resp_text(cm.exception))
        p.close()

    def test_apop_timestamps_differ(self):
        a, b = self.pop(), self.pop()
        self.assertNotEqual(a.getwelcome(), b.getwelcome(), "each greeting has its own timestamp")
        a.close()
        b.close()


class Pipelining(PoplibBase):
    big = False

    def test_hundred_commands_in_one_write(self):
        r = self.raw()
        r.login()
        r.send(b"UIDL\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        uids = {int(n): u.decode() for n, u in
                (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
        count = len(uids)
        cmds = []
        for i in range(50):
            n = i % count + 1
            cmds.append(("RETR", n))
            cmds.append(("LIST", n) if i % 2 == 0 else ("UIDL", n))
        self.assertEqual(len(cmds), 100)
        r.send(b"".join(f"{c} {n}\r\n".encode() for c, n in cmds))  # one write
        for c, n in cmds:
            status = r.readline()
            self.assertTrue(status.startswith(b"+OK"), (c, n, status))
            if c == "RETR":
                self.assertEqual(r.read_multiline(), t.wire_form(self.data_of(uids[n])), f"RETR {n}")
            elif c == "LIST":
                self.assertEqual(status, b"+OK %d %d" % (n, len(t.to_crlf(self.data_of(uids[n])))))
            else:
                self.assertEqual(status, f"+OK {n} {uids[n]}".encode())
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_large_pipelined_input_back_pressure(self):
        # More than the 64 KiB read-ahead in one go, written while replies are read: TCP
        # back-pressure, no reply lost, no reordering, no deadlock.
        r = self.raw()
        r.login()
        n = 60000  # 60000 x "NOOP\r\n" = 360 KB
        err = []

        def writer():
            try:
                r.sock.sendall(b"NOOP\r\n" * n + b"STAT\r\n")
            except OSError as e:
                err.append(e)
        w = threading.Thread(target=writer)
        w.start()
        try:
            for i in range(n):
                line = r.readline()
                if line != b"+OK":
                    self.fail(f"reply {i}: {line!r}")
            self.assertTrue(r.readline().startswith(b"+OK %d " % len(self.stored)))
        finally:
            w.join(20)
        self.assertFalse(err)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_pipelined_login(self):
        r = self.raw()
        r.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        self.assertTrue(r.readline().startswith(b"+OK"))
        self.assertEqual(r.readline().split()[:2], [b"+OK", str(len(self.stored)).encode()])
        self.assertTrue(r.readline().startswith(b"+OK"))


class Limits(PoplibBase):
    big = False

    def test_long_line_before_login(self):
        r = self.raw()
        r.send(b"USER " + b"a" * 595 + b"\r\n")  # 602 octets with CRLF
        self.assertTrue(r.readline().startswith(b"-ERR"))
        self.assertTrue(r.cmd("CAPA").startswith(b"+OK"))
        r.read_multiline()
        r.login()
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_long_line_after_login(self):
        r = self.raw()
        r.login()
        r.send(b"NOOP " + b"x" * 600 + b"\r\nSTAT\r\n")
        self.assertTrue(r.readline().startswith(b"-ERR"))
        self.assertTrue(r.readline().startswith(b"+OK %d " % len(self.stored)), "session goes on")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_line_at_limit(self):
        # RFC 2449 4: at least 255 octets; 512 with CRLF is mailnet's limit.
        r = self.raw()
        r.login()
        line = b"NOOP " + b"y" * (512 - 7)
        self.assertEqual(len(line) + 2, 512)
        r.send(line + b"\r\n")
        resp = r.readline()
        self.assertFalse(b"too long" in resp.lower(), resp)
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))


class Store(PoplibBase):
    """The Maildir contract of DESIGN.md "On disk", seen through POP3."""
    big = False

    def retr_raw(self, r, n, data):
        """RETR n on a RawPop3; asserts the exact stuffed bytes and the terminator."""
        self.assertTrue(r.cmd(f"RETR {n}").startswith(b"+OK"))
        wire = t.wire_form(data)
        stuffed = b"\r\n".join((b"." + ln if ln.startswith(b".") else ln)
                               for ln in wire[:-2].split(b"\r\n")) + b"\r\n.\r\n"
        while len(r.buf) < len(stuffed):
            chunk = r.sock.recv(1 << 20)
            self.assertTrue(chunk, "connection closed inside RETR")
            r.buf += chunk
        got, r.buf = r.buf[:len(stuffed)], r.buf[len(stuffed):]
        self.assertEqual(got, stuffed, f"RETR {n}")

    def test_no_stored_bytes_end_retr_early(self):
        nasty = [
            ("bare-cr", b"Subject: bare CR\n\nbare CR\rinside\n\r.\r\nafter\n"),
            ("crlf-dot", b"Subject: CRLF dot CRLF\r\n\r\nline\r\n.\r\nstill body\r\n"),
            ("mixed", b"Subject: mixed\n\nLF line\n.\r\nCRLF after dot\r\n.\nLF after dot\n"),
            ("nul", b"Subject: nul\n\nNUL\x00byte\n..\n"),
            ("dot-end-no-newline", b"Subject: dot at the end\n\nlast\n."),
        ]
        carol = os.path.join(self.store, "carol")
        stored = t.fill_maildir(carol, nasty)
        by_name = {n: d for _l, n, d in stored}
        r = self.raw()
        r.login("carol", "carolpass")
        r.send(b"UIDL\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        uids = {int(n): u.decode() for n, u in
                (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
        for n, uid in uids.items():
            self.retr_raw(r, n, by_name[uid])
            self.assertEqual(r.cmd("NOOP"), b"+OK", "nothing left over after the RETR")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_chunk_boundaries(self):
        # CRLF pairs, "LF ." and "LF .." placed across the file offsets where a streaming
        # reader's buffers end (512 B .. 128 KiB): no CR doubled, no dot missed, TOP too.
        head = b"Subject: boundary\n\n"
        msgs = []
        for size in (512, 4096, 8192, 16384, 65536, 131072):
            for shift in (-2, -1, 0, 1):
                for kind, seq in (("crlf", b"\r\n.\r\n..\r\n"), ("lf", b"\n.\n..\n"),
                                  ("mixed", b"\r\n.\n.\r\n")):
                    msgs.append((f"{kind}-{size}{shift:+d}",
                                 head + b"y" * (size + shift - len(head)) + seq + b"tail\n"))
        msgs.append(("line-300k", head + b"z" * 300000 + b"\n.after\n"))
        msgs.append(("line-300k-no-newline", head + b"z" * 300000))
        carol = os.path.join(self.store, "carol")
        stored = t.fill_maildir(carol, msgs)
        by_name = {n: d for _l, n, d in stored}
        r = self.raw()
        r.login("carol", "carolpass")
        r.send(b"UIDL\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        uids = {int(n): u.decode() for n, u in
                (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
        self.assertEqual(len(uids), len(msgs))
        for n, uid in uids.items():
            data = by_name[uid]
            self.retr_raw(r, n, data)
            self.assertEqual(r.cmd(f"LIST {n}"), b"+OK %d %d" % (n, len(t.to_crlf(data))))
            wire = t.wire_form(data)
            i = wire.find(b"\r\n\r\n")
            body_lines = wire[i + 4:].split(b"\r\n")[:-1]
            for k in (1, 2, 3):
                self.assertTrue(r.cmd(f"TOP {n} {k}").startswith(b"+OK"))
                self.assertEqual(r.read_multiline(),
                                 wire[:i + 4] + b"".join(ln + b"\r\n" for ln in body_lines[:k]),
                                 f"TOP {n} {k} ({uid})")
        self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))

    def test_uidl_of_odd_names(self):
        odd = ["x" * 100, "with space", "caf\u00e9-8bit", "ok-name"]
        carol = t.make_maildir(os.path.join(self.store, "carol"))
        datas = {}
        for i, name in enumerate(odd):
            data = b"Subject: odd name %d\n\nbody %d\n" % (i, i)
            with open(os.path.join(carol, "new", name), "wb") as f:
                f.write(data)
            datas[name] = data
        p = self.login("carol", "carolpass")
        uids = self.uidl_map(p)
        self.assertEqual(len(uids), len(odd))
        self.assertEqual(len(set(uids.values())), len(odd), "UIDLs are unique")
        for n, u in uids.items():
            self.assertTrue(1 <= len(u) <= 70 and all(0x21 <= ord(c) <= 0x7e for c in u),
                            f"RFC 1939 7: UIDL 1-70 chars in 0x21-0x7E: {u!r}")
            _r, lines, _ = p.retr(n)
            body = b"\r\n".join(lines) + b"\r\n"
            name = u if u in datas else None
            if name:
                self.assertEqual(body, t.wire_form(datas[name]))
            else:
                self.assertIn(body, [t.wire_form(d) for d in datas.values()])
        self.assertIn("ok-name", uids.values(), "a plain name is its own UIDL")
        p.quit()
        # Stable across sessions.
        p = self.login("carol", "carolpass")
        self.assertEqual(sorted(self.uidl_map(p).values()), sorted(uids.values()))
        p.quit()

    def test_snapshot_ignores_new_delivery(self):
        p = self.login()
        count = p.stat()[0]
        with open(os.path.join(self.mdir, "new", "1800000000.M1P1Q1.late"), "wb") as f:
            f.write(b"Subject: late\n\narrived during the session\n")
        self.assertEqual(p.stat()[0], count, "numbers never move under concurrent delivery")
        self.assertEqual(len(p.list()[1]), count)
        p.quit()
        p = self.login()
        self.assertEqual(p.stat()[0], count + 1)
        self.assertIn("1800000000.M1P1Q1.late", self.uidl_map(p).values())
        p.quit()

    def test_file_renamed_during_session(self):
        # Another agent (Dovecot, mutt) moves new/ -> cur/ and sets flags mid-session.
        p = self.login()
        uids = self.uidl_map(p)
        for n in (1, 2):
            os.rename(os.path.join(self.mdir, "new", uids[n]),
                      os.path.join(self.mdir, "cur", uids[n] + ":2,F"))
        _r, lines, _ = p.retr(1)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", t.wire_form(self.data_of(uids[1])))
        self.assertTrue(p.dele(2).startswith(b"+OK"))
        self.assertTrue(p.quit().startswith(b"+OK"), "the renamed file is found by base name")
        files = self.files()
        self.assertNotIn(uids[2], files, "DELE removed the renamed file")
        sub, fn = files[uids[1]]
        self.assertEqual(sub, "cur")
        self.assertEqual(fn.split(":", 1)[1].split(",", 1)[0], "2")
        self.assertIn("S", fn.split(":2,", 1)[1], f"seen flag added: {fn}")
        self.assertIn("F", fn.split(":2,", 1)[1], f"other flags kept: {fn}")

    def test_file_vanished_during_session(self):
        # Someone else deletes a message mid-session: RETR fails cleanly, DELE+QUIT goes on.
        p = self.login()
        uids = self.uidl_map(p)
        os.unlink(os.path.join(self.mdir, "new", uids[1]))
        with self.assertRaises(poplib.error_proto):
            p.retr(1)
        self.assertTrue(p.noop().startswith(b"+OK"), "session survives")
        _r, lines, _ = p.retr(2)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", t.wire_form(self.data_of(uids[2])))
        p.dele(1)
        try:
            resp = p.quit()
        except poplib.error_proto as e:
            resp = resp_text(e)
        # Deleting an already-gone file is not a loss of mail: either answer is acceptable,
        # but the connection must end cleanly with a status line.
        self.assertTrue(resp.startswith(b"+OK") or resp.startswith(b"-ERR [SYS/TEMP]"), resp)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
