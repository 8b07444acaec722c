# mailnet interop: the pop3d binary as a process (DESIGN.md "Command lines", "Limits"):
# options and sysexits codes, listening lines, SIGTERM/SIGINT shutdown, idle timeout,
# connection limit, failed-login and bad-command limits, users-file reload.
import os
import poplib
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
TIMEOUT = 10
EX_USAGE, EX_UNAVAILABLE, EX_IOERR = 64, 69, 74


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.d = self.tmp.path
        self.users = t.write_users(os.path.join(self.d, "users"), {"alice": "secret"})
        self.store = os.path.join(self.d, "store")
        self.mdir = os.path.join(self.store, "alice")
        self.stored = t.fill_maildir(self.mdir, t.test_messages(big=False))
        self.servers = []
        self.socks = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for srv in self.servers:
            srv.stop()
            if failed:
                print(f"--- pop3d stderr ---\n{srv.stderr()}", file=sys.stderr)
        self.tmp.cleanup()

    def pop3d(self, *extra, **kw):
        srv = t.Pop3d(POP3D, self.store, self.users, extra=extra, workdir=self.d, **kw)
        self.servers.append(srv)
        return srv.start()

    def run_pop3d(self, *args, timeout=10):
        """Runs pop3d expecting it to exit by itself (usage errors and the like)."""
        try:
            return t.run([POP3D, *args], timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"pop3d {args} did not exit within {timeout} s")

    def login(self, port, user="alice", password="secret"):
        p = poplib.POP3(t.HOST, port, timeout=TIMEOUT)
        self.socks.append(p.sock)
        p.user(user)
        p.pass_(password)
        return p


class CommandLine(Base):
    def test_help_and_version(self):
        p = self.run_pop3d("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"--listen", p.stdout)
        self.assertIn(b"--store", p.stdout)
        p = self.run_pop3d("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, rb"pop3d.*\d+\.\d+")

    def test_bad_option(self):
        p = self.run_pop3d("--store", self.store, "--users", self.users, "--no-such-option")
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        self.assertIn(b"no-such-option", p.stderr + p.stdout)

    def test_missing_required_options(self):
        p = self.run_pop3d("--listen", f"{t.HOST}:0", "--store", self.store)
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        self.assertIn(b"--users", p.stderr + p.stdout)

    def test_missing_users_file(self):
        missing = os.path.join(self.d, "no-such-users-file")
        p = self.run_pop3d("--listen", f"{t.HOST}:0", "--store", self.store, "--users", missing)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(p.returncode, (EX_USAGE, EX_IOERR), "a sysexits code")
        self.assertIn(missing.encode(), p.stderr, f"the message names the file: {p.stderr!r}")
        self.assertNotIn(b"listening", p.stdout, "never claims to listen")

    def test_users_file_that_does_not_parse_is_a_usage_error_naming_the_line(self):
        bad = os.path.join(self.d, "bad-users")
        with open(bad, "w") as f:
            f.write("alice:{PLAIN}secret\nhunter2-without-a-name\n")
        p = self.run_pop3d("--listen", f"{t.HOST}:0", "--store", self.store, "--users", bad)
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        self.assertIn(f"{bad}:2:".encode(), p.stderr)
        self.assertNotIn(b"hunter2", p.stderr, "the line itself may be a password: never logged")
        self.assertNotIn(b"listening", p.stdout)

    def test_short_idle_timeout_refused(self):
        p = self.run_pop3d("--listen", f"{t.HOST}:0", "--store", self.store, "--users", self.users,
                           "--idle-timeout", "5")
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        self.assertIn(b"idle", p.stderr.lower())

    def test_tls_options_need_each_other(self):
        ca = t.TestCA(self.d)
        base = ["--listen", f"{t.HOST}:0", "--store", self.store, "--users", self.users]
        p = self.run_pop3d(*base, "--tls-cert", ca.cert)
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        p = self.run_pop3d(*base, "--tls-listen", f"{t.HOST}:0")
        self.assertEqual(p.returncode, EX_USAGE, f"--tls-listen needs a certificate: {p.stderr!r}")
        garbage = os.path.join(self.d, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        p = self.run_pop3d(*base, "--tls-cert", garbage, "--tls-key", ca.key)
        self.assertEqual(p.returncode, EX_USAGE, f"unusable certificate: {p.stderr!r}")
        p = self.run_pop3d(*base, "--tls-cert", ca.cert, "--tls-key", ca.ca_key)
        self.assertEqual(p.returncode, EX_USAGE, f"key does not match the certificate: {p.stderr!r}")

    def test_bad_listen_address(self):
        p = self.run_pop3d("--listen", "not-an-address", "--store", self.store, "--users", self.users)
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind((t.HOST, 0))
            s.listen()
            port = s.getsockname()[1]
            p = self.run_pop3d("--listen", f"{t.HOST}:{port}", "--store", self.store,
                               "--users", self.users)
        self.assertEqual(p.returncode, EX_UNAVAILABLE, p.stderr)

    def test_several_listeners(self):
        srv = self.pop3d("--listen", f"{t.HOST}:0", implicit_tls=False)
        ports = [int(ln.rsplit(":", 1)[1]) for ln in srv.stdout().splitlines()
                 if ln.startswith("listening pop3 ")]
        self.assertEqual(len(ports), 2, srv.stdout())
        for port in ports:
            p = self.login(port)
            self.assertEqual(p.stat()[0], len(self.stored))
            p.quit()


    def test_tls_listen_alone_serves_pop3s_only(self):
        # The default --listen 127.0.0.1:110 applies only when no listener is given at all.
        ca = t.TestCA(self.d)
        srv = self.pop3d(listen=False, implicit_tls=True, tls=ca)
        lines = [ln for ln in srv.stdout().splitlines() if ln.startswith("listening ")]
        self.assertEqual(len(lines), 1, srv.stdout())
        self.assertTrue(lines[0].startswith("listening pop3s "), lines[0])
        p = poplib.POP3_SSL(t.HOST, srv.tls_port, context=ca.client_context(), timeout=TIMEOUT)
        self.socks.append(p.sock)
        p.user("alice")
        p.pass_("secret")
        self.assertEqual(p.stat()[0], len(self.stored))
        p.quit()


class Signals(Base):
    def test_sigterm_idle_server_exits_0(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            srv = self.pop3d()
            os.kill(srv.proc.pid, sig)
            self.assertEqual(srv.proc.wait(timeout=5), 0, f"exit status after {sig.name}")

    def test_sigterm_closes_idle_sessions_and_finishes_the_exchange_in_progress(self):
        # DESIGN.md "Command lines": idle sessions close at once (no UPDATE: nothing is
        # deleted), a RETR being sent finishes, a failed-login delay does not hold shutdown,
        # and the process exits within a few seconds.
        big = t.fill_maildir(os.path.join(self.store, "bob"), [("1mib", t.one_mib_message())])
        t.write_users(self.users, {"alice": "secret", "bob": "bobpass", "carol": "pw"})
        srv = self.pop3d(tls=t.TestCA(self.d), implicit_tls=True)
        idle = self.login(srv.port)
        self.assertTrue(idle.dele(2).startswith(b"+OK"))
        # Mid-RETR: a client that has not read its 1 MiB message yet (small receive buffer).
        s = socket.socket()
        self.socks.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(TIMEOUT)
        s.connect((t.HOST, srv.port))
        s.sendall(b"USER bob\r\nPASS bobpass\r\nRETR 1\r\n")
        time.sleep(0.5)
        # Mid-delay: a failed login waits 2 s before its reply.
        delayed = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(delayed.sock)
        delayed.read_greeting()
        delayed.cmd("USER carol")
        delayed.send(b"PASS wrong\r\n")
        # Mid-command: half a command line sent; no exchange has begun.
        partial = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(partial.sock)
        partial.read_greeting()
        partial.send(b"NOO")
        time.sleep(0.3)
        t0 = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)

        def refused():
            for port in (srv.port, srv.tls_port):
                try:
                    socket.create_connection((t.HOST, port), timeout=2).close()
                    return False
                except (ConnectionRefusedError, ConnectionResetError):
                    # A connection caught in the backlog of a listener being closed is reset.
                    pass
            return True
        self.assertTrue(t.wait_until(refused, timeout=5), "both listeners close on SIGTERM")
        # The sessions in a failed-login delay or with half a command are closed at once, with
        # no reply (the delayed -ERR would come 1.7 s after the signal).
        for sock in (delayed.sock, partial.sock):
            sock.settimeout(1.0)
            try:
                self.assertEqual(sock.recv(4096), b"", "closed without a reply")
            except ConnectionResetError:
                pass
        # The idle session is closed without UPDATE.
        with self.assertRaises((EOFError, ConnectionResetError, poplib.error_proto, OSError)):
            idle.stat()
        # The RETR in progress arrives whole, with its terminator.
        got = b""
        while not got.endswith(b"\r\n.\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        body = got.split(b" octets\r\n", 1)[1]
        self.assertTrue(body.endswith(b"\r\n.\r\n"), "the message in flight was finished")
        self.assertEqual(t.unstuff(body[:-5]) + b"\r\n", t.wire_form(big[0][2]))
        self.assertEqual(srv.proc.wait(timeout=5), 0, "exits 0 once the exchange in progress ended")
        self.assertLess(time.monotonic() - t0, 4, "a failed-login delay does not hold shutdown")
        self.assertEqual(len(t.maildir_files(self.mdir)), len(self.stored), "no UPDATE for a closed idle session")

    def test_second_sigterm_kills_sessions(self):
        # A client that reads nothing of its RETR holds the first shutdown (the exchange is
        # in progress); a second signal closes it at once.
        t.fill_maildir(os.path.join(self.store, "bob"), [("1mib", t.one_mib_message())])
        t.write_users(self.users, {"alice": "secret", "bob": "bobpass"})
        srv = self.pop3d()
        s = socket.socket()
        self.socks.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(TIMEOUT)
        s.connect((t.HOST, srv.port))
        s.sendall(b"USER bob\r\nPASS bobpass\r\n" + b"RETR 1\r\n" * 4)
        time.sleep(0.5)
        os.kill(srv.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        self.assertIsNone(srv.proc.poll(), "the stalled RETR holds the first shutdown")
        os.kill(srv.proc.pid, signal.SIGTERM)
        try:
            status = srv.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.fail("a second SIGTERM must end the process")
        self.assertEqual(status, 0, "clean exit after closing the sessions")


class Limits(Base):
    def test_idle_timeout(self):
        srv = self.pop3d("--idle-timeout", "2", "--allow-short-idle-timeout")
        r = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(r.sock)
        r.read_greeting()
        r.login()
        self.assertTrue(r.cmd("DELE 1").startswith(b"+OK"))
        t0 = time.monotonic()
        r.sock.settimeout(8)
        got = b""
        try:
            while True:
                chunk = r.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            self.fail("the idle session was not closed within 8 s")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 1.5, f"closed too early ({elapsed:.2f} s): {got!r}")
        self.assertFalse(got.startswith(b"+OK"), got)
        self.assertEqual(len(t.maildir_files(self.mdir)), len(self.stored),
                         "on expiry: no UPDATE, nothing deleted")
        # The lock was released.
        p = self.login(srv.port)
        self.assertEqual(p.stat()[0], len(self.stored))
        p.quit()

    def test_max_connections(self):
        srv = self.pop3d("--max-connections", "2")
        held = []
        for _ in range(2):
            r = t.RawPop3(srv.port, timeout=TIMEOUT)
            self.socks.append(r.sock)
            self.assertTrue(r.read_greeting().startswith(b"+OK"))
            held.append(r)
        extra = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(extra.sock)
        line = extra.readline()
        self.assertTrue(line.startswith(b"-ERR [SYS/TEMP]"), line)
        with self.assertRaises((EOFError, ConnectionResetError)):
            extra.readline()
        held[0].cmd("QUIT")
        held[0].close()

        def third_gets_in():
            r = t.RawPop3(srv.port, timeout=TIMEOUT)
            try:
                return r.read_greeting().startswith(b"+OK")
            finally:
                r.close()
        self.assertTrue(t.wait_until(third_gets_in, timeout=5), "a slot frees after QUIT")

    def test_three_failed_logins_close(self):
        srv = self.pop3d()
        r = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(r.sock)
        r.read_greeting()
        t0 = time.monotonic()
        for i in range(3):
            self.assertTrue(r.cmd("USER alice").startswith(b"+OK"))
            resp = r.cmd(f"PASS wrong{i}")
            self.assertTrue(resp.startswith(b"-ERR [AUTH]"), resp)
        # At most one more line (a parting -ERR), then the server closes.
        with self.assertRaises((EOFError, ConnectionResetError)):
            extra = r.readline()
            self.assertTrue(extra.startswith(b"-ERR"), extra)
            r.readline()
        print(f"three failed logins took {time.monotonic() - t0:.1f} s", file=sys.stderr)

    def test_ten_bad_commands_close(self):
        srv = self.pop3d()
        r = t.RawPop3(srv.port, timeout=TIMEOUT)
        self.socks.append(r.sock)
        r.read_greeting()
        r.login()
        r.send(b"BOGUS\r\n" * 12)
        replies = []
        try:
            while True:
                replies.append(r.readline())
        except (EOFError, ConnectionResetError):
            pass
        self.assertTrue(all(x.startswith(b"-ERR") for x in replies), replies)
        self.assertLessEqual(len(replies), 11, "closed after 10 invalid commands")
        self.assertGreaterEqual(len(replies), 10, replies)

    def test_message_files_changed_under_a_session_are_errors_never_waits(self):
        # Issue 11, defects 8 and 10, as a hostile local user would: after login, message files
        # are replaced by a FIFO, a directory and a symlink, one is truncated, one grows. Each
        # RETR answers -ERR [SYS/TEMP] at once (the FIFO must not block a pool thread: four
        # such sessions would stop every login), the others are still served.
        names = [n for _l, n, _d in self.stored]
        srv = self.pop3d()
        p = self.login(srv.port)
        _r, lines, _ = p.uidl()
        number = {u.decode(): int(n) for n, u in (ln.split(b" ", 1) for ln in lines)}
        files = t.maildir_files(self.mdir)

        def path(base):
            sub, fn = files[base]
            return os.path.join(self.mdir, sub, fn)
        fifo, directory, link, short, long_ = names[:5]
        os.remove(path(fifo))
        os.mkfifo(path(fifo))
        os.remove(path(directory))
        os.mkdir(path(directory))
        outside = os.path.join(self.d, "outside")
        with open(outside, "wb") as f:
            f.write(self.stored[2][2])  # the same bytes: only following the link would serve them
        os.remove(path(link))
        os.symlink(outside, path(link))
        with open(path(short), "r+b") as f:
            f.truncate(3)
        with open(path(long_), "ab") as f:
            f.write(b"grown\n")
        for base in (fifo, directory, link, short, long_):
            t0 = time.monotonic()
            with self.assertRaises(poplib.error_proto) as cm:
                p.retr(number[base])
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR [SYS/TEMP]"), (base, cm.exception.args))
            self.assertLess(time.monotonic() - t0, 2, f"RETR of {base} waited")
        # The session goes on: an untouched message is served whole.
        _label, base, data = self.stored[5]
        _r, body, _o = p.retr(number[base])
        self.assertEqual(b"\r\n".join(body) + b"\r\n", t.wire_form(data))
        p.quit()

    def test_open_mode_logins_create_nothing(self):
        # Issue 11, defect 7: a login never creates a mailbox (only delivery does), so logins
        # to any number of empty accounts leave the store as it was.
        before = sorted(os.listdir(self.store))
        srv = self.pop3d()
        for i in range(3):
            p = poplib.POP3(t.HOST, srv.port, timeout=TIMEOUT)
            self.socks.append(p.sock)
            t.write_users(self.users, {"alice": "secret", f"ghost{i}": "pw"})
            p.user(f"ghost{i}")
            self.assertTrue(p.pass_("pw").startswith(b"+OK"))
            self.assertEqual(p.stat(), (0, 0))
            p.quit()
        self.assertEqual(sorted(os.listdir(self.store)), before, "a login created something in the store")

    def test_lock_across_processes_and_crash_release(self):
        # One POP3 session per mailbox across processes (flock); a crash releases it.
        a = self.pop3d()
        b = self.pop3d()
        pa = self.login(a.port)
        pb = poplib.POP3(t.HOST, b.port, timeout=TIMEOUT)
        self.socks.append(pb.sock)
        pb.user("alice")
        with self.assertRaises(poplib.error_proto) as cm:
            pb.pass_("secret")
        self.assertIn(b"[IN-USE]", cm.exception.args[0])
        self.assertTrue(pa.dele(1).startswith(b"+OK"))
        os.kill(a.proc.pid, signal.SIGKILL)  # crash with a session open
        a.proc.wait(timeout=5)
        self.assertEqual(len(t.maildir_files(self.mdir)), len(self.stored), "a crash deletes nothing")
        pb.user("alice")
        self.assertTrue(pb.pass_("secret").startswith(b"+OK"), "the crash released the lock")
        self.assertEqual(pb.stat()[0], len(self.stored))
        pb.quit()

    def test_stalled_reader_is_closed(self):
        # A client that reads nothing while a RETR is sent is closed after the idle timeout,
        # and its lock released (DESIGN.md "send progress").
        big = t.fill_maildir(os.path.join(self.store, "bob"), [("1mib", t.one_mib_message())])
        t.write_users(self.users, {"alice": "secret", "bob": "bobpass"})
        srv = self.pop3d("--idle-timeout", "2", "--allow-short-idle-timeout")
        s = socket.socket()
        self.socks.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(TIMEOUT)
        s.connect((t.HOST, srv.port))
        s.sendall(b"USER bob\r\nPASS bobpass\r\n" + b"RETR 1\r\n" * 20)  # ~20 MiB owed, never read
        t0 = time.monotonic()

        def bob_logs_in():
            p = poplib.POP3(t.HOST, srv.port, timeout=TIMEOUT)
            try:
                p.user("bob")
                p.pass_("bobpass")
                p.quit()
                return True
            except poplib.error_proto as e:
                self.assertIn(b"[IN-USE]", e.args[0])
                p.close()
                return False
        time.sleep(1)
        self.assertTrue(t.wait_until(bob_logs_in, timeout=10, interval=0.3),
                        "the stalled session was closed and its lock released")
        self.assertGreaterEqual(time.monotonic() - t0, 1.5)
        self.assertEqual(len(t.maildir_files(os.path.join(self.store, "bob"))), len(big))

    def test_users_file_reload(self):
        srv = self.pop3d()
        time.sleep(1.1)  # a new mtime, even on a coarse-grained file system
        tmp = self.users + ".new"
        t.write_users(tmp, {"alice": "secret", "dave": "davepass"})
        os.rename(tmp, self.users)

        def dave_logs_in():
            try:
                p = poplib.POP3(t.HOST, srv.port, timeout=TIMEOUT)
            except OSError:
                return False
            try:
                p.user("dave")
                p.pass_("davepass")
                p.quit()
                return True
            except poplib.error_proto:
                p.close()
                return False
        # Each failure costs a 2 s delay: try a few times over ~7 s.
        self.assertTrue(t.wait_until(dave_logs_in, timeout=7, interval=0.2),
                        "a changed users file is re-read")
        # A users file that cannot be read keeps the previous table in force.
        os.unlink(self.users)
        time.sleep(1.5)
        self.assertTrue(dave_logs_in(), "users file gone: the previous table stays")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=110)
