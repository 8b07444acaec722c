# Several mailnetd front-ends over one PostgreSQL database (issue 16): the load test spread
# over three front-ends, [IN-USE] and wait-for-mail across them, kill -9 of one front-end mid-
# load, and the database restarted mid-load; `mailnet-store copy` there and back. A private PostgreSQL 15 of this script's own
# (tests/tools/pg_private.sh: initdb into a temporary directory, a free port on 127.0.0.1),
# stopped by its PID at the end; a database per test. Without PostgreSQL: skipped (125).
import json
import os
import poplib
import signal
import smtplib
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402
import interop_mailnetd_load as load_test  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
PG_PRIVATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "pg_private.sh")


class PrivatePostgres:
    """The script's own PostgreSQL: .uri(db) names a database on it, .sql(db, q) runs one
    statement with psql and returns its output, .restart() restarts it (fast shutdown),
    .pause() and .resume() stop and start it again."""

    def __init__(self, state_dir):
        self.state = state_dir
        r = subprocess.run(["bash", PG_PRIVATE, "start", self.state], capture_output=True, text=True, timeout=120)
        if os.path.exists(os.path.join(self.state, "unavailable")):
            with open(os.path.join(self.state, "unavailable")) as f:
                raise unittest.SkipTest("no PostgreSQL: " + f.read().strip())
        if r.returncode != 0 or not os.path.exists(os.path.join(self.state, "uri")):
            raise RuntimeError(f"pg_private.sh start failed: {r.stderr}")
        with open(os.path.join(self.state, "uri")) as f:
            self.base = f.read().strip().rsplit("/", 1)[0]

    def uri(self, db):
        return f"{self.base}/{db}"

    def sql(self, db, query):
        r = subprocess.run(["psql", "-X", "-q", "-tA", "-d", self.uri(db), "-c", query],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"psql {query!r}: {r.stderr}")
        return r.stdout.strip()

    def create(self, db):
        self.sql("postgres", f"CREATE DATABASE {db}")
        return self.uri(db)

    def restart(self):
        subprocess.run(["bash", PG_PRIVATE, "restart", self.state], check=True, capture_output=True, timeout=120)

    def pause(self):
        """The server stopped (fast shutdown), its cluster kept: a database that went away."""
        subprocess.run(["bash", PG_PRIVATE, "pause", self.state], check=True, capture_output=True, timeout=120)

    def resume(self):
        """Started again on the same port."""
        subprocess.run(["bash", PG_PRIVATE, "resume", self.state], check=True, capture_output=True, timeout=120)

    def stop(self):
        subprocess.run(["bash", PG_PRIVATE, "stop", self.state], capture_output=True, timeout=120)


class Blackhole:
    """A TCP proxy on 127.0.0.1 to port `target`; blackhole() cuts the connections it carries
    and from then on accepts new ones without ever answering or forwarding (held open)."""

    def __init__(self, target):
        import socket
        self.target = target
        self.lsock = socket.socket()
        self.lsock.bind((t.HOST, 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.dark = False
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(c)
                if self.dark:
                    continue  # held, never answered
            try:
                u = socket.create_connection((t.HOST, self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks.append(u)
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        import socket
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def blackhole(self):
        import socket
        with self.lock:
            self.dark = True
            for x in self.socks:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.lsock.close()
        with self.lock:
            for x in self.socks:
                x.close()


class PostgresStoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        t.require_programs("psql")
        cls.tmp = t.TempDir()
        try:
            cls.pg = PrivatePostgres(os.path.join(cls.tmp.path, "pg"))
        except BaseException:
            cls.tmp.cleanup()
            raise
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()
        cls.tmp.cleanup()

    def setUp(self):
        type(self).n += 1
        self.db = f"mail{type(self).n}"
        self.uri = self.pg.create(self.db)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
            # What the store logged (a lost connection, a failed statement) is worth seeing always.
            problems = [line for line in s.stderr().splitlines() if "postgresql" in line]
            if problems:
                print(f"--- mailnetd {s.proc.pid}: {len(problems)} store lines ---\n" + "\n".join(problems[-15:]),
                      file=sys.stderr)

    def front_end(self, http=False):
        srv = t.Mailnetd(MAILNETD, self.uri, workdir=self.tmp.path, extra=["--quiet"], http=http)
        self.servers.append(srv)
        return srv.start()

    def count(self, table):
        return int(self.pg.sql(self.db, f"SELECT count(*) FROM mailnet.{table}"))

    def assert_nothing_left(self, load):
        self.assertEqual((self.count("messages"), self.count("bodies"), self.count("chunks")), (0, 0, 0),
                         f"rows left behind; {load.summary()}")

    def test_three_front_ends_50_senders_10_fetchers_each_message_fetched_once(self):
        started = time.monotonic()
        srvs = [self.front_end() for _ in range(3)]
        load = load_test.Load(self, srvs, 2000, deadline=started + 80)
        load.start()
        load.finish("three front-ends")
        print(f"three front-ends: {load.summary()} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assertEqual(load.errors, [], load.summary())
        self.assertEqual(load.broken, [], "no connection breaks")
        self.assertEqual(load.count("ok"), 2000, load.summary())
        problems = load_test.exactly_once_problems(load)
        self.assertEqual(problems[:20], [], f"{len(problems)} problems; {load.summary()}")
        self.assertEqual(len(load.committed), sum(len(load_test.recipients(i)) for i in range(2000)))
        self.assertGreater(load.in_use, 0, "fetchers on different front-ends never met on a mailbox")
        self.assert_nothing_left(load)

    def test_in_use_holds_across_front_ends_and_a_wait_is_woken_by_a_delivery_through_another(self):
        a, b = self.front_end(), self.front_end(http=True)
        with smtplib.SMTP(t.HOST, a.port, timeout=10) as s:
            s.sendmail("x@example.org", ["bob@example.org"], b"Subject: one\r\n\r\nbody\r\n")
        held = poplib.POP3(t.HOST, a.pop3_port, timeout=10)
        held.user("bob@example.org")
        held.pass_("bob@example.org")
        other = poplib.POP3(t.HOST, b.pop3_port, timeout=10)
        other.user("bob@example.org")
        with self.assertRaises(poplib.error_proto) as e:
            other.pass_("bob@example.org")
        self.assertIn(b"[IN-USE]", e.exception.args[0])
        other.close()
        self.assertEqual(held.stat()[0], 1)
        held.quit()
        # Free again once a's session ended.
        again = poplib.POP3(t.HOST, b.pop3_port, timeout=10)
        again.user("bob@example.org")
        again.pass_("bob@example.org")
        again.quit()

        answer = {}

        def wait():
            url = f"http://{t.HOST}:{b.http_port}/api/v1/wait?to=carol@example.org&timeout=10"
            with urllib.request.urlopen(url, timeout=20) as r:
                answer["status"] = r.status
                answer["body"] = json.loads(r.read())
                answer["at"] = time.monotonic()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)  # the wait is registered on b
        with smtplib.SMTP(t.HOST, a.port, timeout=10) as s:
            s.sendmail("x@example.org", ["carol@example.org"], b"Subject: through a\r\n\r\nbody\r\n")
            sent = time.monotonic()
        waiter.join(timeout=15)
        self.assertEqual(answer.get("status"), 200, answer)
        self.assertEqual([m["subject"] for m in answer["body"]["messages"]], ["through a"])
        self.assertLess(answer["at"] - sent, 1.0, "woken by the delivery through the other front-end")

    def test_kill_9_of_one_front_end_mid_load_loses_nothing_and_leaves_no_lock(self):
        started = time.monotonic()
        srvs = [self.front_end() for _ in range(3)]
        victim = srvs[0]
        # A session of the victim's surely holds a lock at the kill: a mailbox of its own.
        with smtplib.SMTP(t.HOST, victim.port, timeout=10) as s:
            s.sendmail("x@example.org", ["held@example.org"], b"Subject: held\r\n\r\nbody\r\n")
        held = poplib.POP3(t.HOST, victim.pop3_port, timeout=10)
        held.user("held@example.org")
        held.pass_("held@example.org")
        held.dele(1)
        other = poplib.POP3(t.HOST, srvs[1].pop3_port, timeout=10)  # the lock holds across front-ends
        other.user("held@example.org")
        with self.assertRaises(poplib.error_proto) as e:
            other.pass_("held@example.org")
        self.assertIn(b"[IN-USE]", e.exception.args[0])
        other.close()
        load = load_test.Load(self, srvs, 2000, deadline=started + 80)
        load.start()

        # Deliveries may outrun the fetchers (whose sessions count at QUIT): once 1,200 are in,
        # the senders wait until the fetchers are at work too, then go on, so the kill comes
        # with both under way (as in the restart test).
        def going():
            if load.count("ok") >= 1200:
                load.up.clear()
            return load.count("ok") >= 600 and load.sessions >= 5
        self.assertTrue(t.wait_until(going, timeout=max(0.1, load.deadline - time.monotonic()), interval=0.01),
                        f"the load did not get going: {load.summary()}")
        load.up.set()
        # Taken and not yet answered: transactions under way (the victim has a third of them).
        self.assertTrue(t.wait_until(lambda: load.count("failed") + load.count("unknown") >= 10, timeout=10, interval=0.001),
                        f"no transactions under way: {load.summary()}")
        # No new session starts meanwhile; those under way on the victim are cut mid-flight.
        load.up.clear()
        load.fetching.clear()
        os.kill(victim.proc.pid, signal.SIGKILL)
        self.assertEqual(victim.proc.wait(timeout=10), -signal.SIGKILL)
        held.close()
        load.wait_parked()
        load.ports = [(s.port, s.pop3_port) for s in srvs[1:]]  # its clients go to the others
        at_kill = load.summary()
        cut = [b for b in load.broken if b.startswith("smtp message")]
        self.assertNotEqual(cut, [], f"the kill cut no SMTP transaction under way: {at_kill}")
        # Its lock went with it (within seconds: the server sees the lock connection close),
        # and the DELE of its session was never committed.
        def free():
            p = poplib.POP3(t.HOST, srvs[1].pop3_port, timeout=10)
            p.user("held@example.org")
            try:
                p.pass_("held@example.org")
            except poplib.error_proto as e:
                self.assertIn(b"[IN-USE]", e.args[0])
                p.close()
                return False
            self.assertEqual(p.stat()[0], 1, "the killed session's DELE was not committed")
            p.dele(1)  # so that nothing is left at the end
            p.quit()
            return True
        self.assertTrue(t.wait_until(free, timeout=10, interval=0.1), "the killed front-end's lock outlived it")
        load.up.set()
        load.fetching.set()
        load.finish("kill -9 of one front-end")  # its last pass logs into every mailbox: no lock held
        print(f"kill -9: at the kill {at_kill}; at the end {load.summary()} in {time.monotonic() - started:.1f} s",
              file=sys.stderr)
        self.assertEqual(load.errors, [], load.summary())
        self.assertEqual(load.count("unsent"), 0, load.summary())
        problems = load_test.exactly_once_problems(load)
        self.assertEqual(problems[:20], [], f"{len(problems)} problems; at the kill {at_kill}")
        self.assert_nothing_left(load)

    def test_the_database_restarted_mid_load_gives_temporary_errors_and_loses_nothing(self):
        started = time.monotonic()
        srvs = [self.front_end() for _ in range(2)]
        load = load_test.Load(self, srvs, 2000, deadline=started + 80, temporary_ok=True)
        load.start()

        # Deliveries may outrun the fetchers (whose sessions are counted at QUIT): once 1,200
        # are in, the senders wait until the fetchers are at work too, so the restart still
        # comes with both under way (else every delivery could be over before it).
        def going():
            if load.count("ok") >= 1200:
                load.up.clear()
            return load.count("ok") >= 600 and load.sessions >= 5
        self.assertTrue(t.wait_until(going, timeout=max(0.1, load.deadline - time.monotonic()), interval=0.01),
                        f"the load did not get going: {load.summary()}")
        load.up.set()
        self.pg.restart()
        at_restart = load.summary()
        ok_at_restart = load.count("ok")
        load.finish("database restart")
        print(f"restart: at the restart {at_restart}; at the end {load.summary()} in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assertEqual(load.errors, [], load.summary())
        self.assertEqual(load.count("unsent"), 0, load.summary())
        problems = load_test.exactly_once_problems(load)
        self.assertEqual(problems[:20], [], f"{len(problems)} problems; at the restart {at_restart}")
        # The front-ends saw the restart (their connections were cut), whether or not a client
        # got a 4xx for it: a delivery cut mid-transaction is tried again on a new connection.
        self.assertTrue(any("postgresql:" in srv.stderr() for srv in srvs),
                        f"no front-end noticed the restart: the test proved nothing; {load.summary()}")
        # A POP3 refusal meanwhile is a temporary one: [SYS/TEMP], never another -ERR (a
        # connection cut by a front-end, which poplib reports as "-ERR EOF", is not a refusal).
        refusals = [b for b in load.broken if b.startswith("pop3") and "error_proto" in b and "-ERR EOF" not in b]
        self.assertEqual([b for b in refusals if "[SYS/TEMP]" not in b], [], load.summary())
        # A 4xx'd message was sent again (as an MTA would) until it got its 250.
        self.assertGreater(load.count("ok"), ok_at_restart,
                           f"no delivery succeeded after the restart; at the restart {at_restart}")
        for s in srvs:
            self.assertIsNone(s.proc.poll(), "a front-end died with the database")
        # They recovered: a message sent now arrives.
        with smtplib.SMTP(t.HOST, srvs[1].port, timeout=10) as s:
            s.sendmail("x@example.org", ["after@example.org"], b"Subject: after\r\n\r\nbody\r\n")
        p = poplib.POP3(t.HOST, srvs[0].pop3_port, timeout=10)
        p.user("after@example.org")
        p.pass_("after@example.org")
        self.assertEqual(p.stat()[0], 1)
        p.quit()

    def test_while_the_database_is_down_clients_get_temporary_errors_and_nothing_is_lost(self):
        a, b = self.front_end(), self.front_end()
        box = "dora@example.org"
        with smtplib.SMTP(t.HOST, a.port, timeout=10) as s:
            s.sendmail("x@example.org", [box], b"Subject: before\r\n\r\nbody\r\n")
        held = poplib.POP3(t.HOST, b.pop3_port, timeout=20)  # opened before, QUIT during the outage
        held.user(box)
        held.pass_(box)
        self.assertEqual(held.stat()[0], 1)
        held.dele(1)
        self.pg.pause()
        try:
            # SMTP: a 4xx at some step, never a 250 for the message, never a 5xx.
            with smtplib.SMTP(t.HOST, a.port, timeout=30) as s:
                s.ehlo("outage.test")
                replies = [s.mail("x@example.org")]
                if replies[-1][0] == 250:
                    replies.append(s.rcpt(box))
                if replies[-1][0] == 250:
                    replies.append(s.data(b"Subject: during\r\n\r\nbody\r\n"))
            codes = [c for c, _ in replies]
            self.assertTrue(400 <= codes[-1] < 500, f"a temporary refusal: {replies}")
            self.assertRegex(replies[-1][1], rb"^4\.\d+\.\d+ ", f"with an enhanced code: {replies}")
            # POP3: a login is refused with [SYS/TEMP]; the QUIT of the session held on b
            # cannot commit its DELE: -ERR, and the message stays.
            p = poplib.POP3(t.HOST, a.pop3_port, timeout=30)
            p.user(box)
            with self.assertRaises(poplib.error_proto) as e:
                p.pass_(box)
            self.assertIn(b"[SYS/TEMP]", e.exception.args[0])
            p.close()
            with self.assertRaises(poplib.error_proto) as e:
                held.quit()
            self.assertTrue(e.exception.args[0].startswith(b"-ERR"), e.exception.args)
            held.close()
            for srv in (a, b):
                self.assertIsNone(srv.proc.poll(), "a front-end died with the database")
        finally:
            self.pg.resume()
        # Back: a delivery gets its 250 again within seconds (each front-end reconnects on its
        # next call), and the mailbox holds what got a 250: the message from before (its DELE
        # was never committed) and the one sent now; not the refused one.
        deadline = time.monotonic() + 20
        while True:
            try:
                with smtplib.SMTP(t.HOST, a.port, timeout=10) as s:
                    s.sendmail("x@example.org", [box], b"Subject: after\r\n\r\nbody\r\n")
                break
            except smtplib.SMTPException:
                self.assertLess(time.monotonic(), deadline, "no recovery within 20 s")
                time.sleep(0.2)
        # A login too (a front-end tries its lock connection again a second after a failed try).
        got = None
        while got is None:
            try:
                got = self.fetch_all(b, box)
            except poplib.error_proto as e:
                self.assertIn(b"[SYS/TEMP]", e.args[0])
                self.assertLess(time.monotonic(), deadline, "no POP3 login within 20 s")
                time.sleep(0.2)
        subjects = sorted(m.split(b"\r\n\r\n", 1)[0].split(b"Subject: ")[1] for _, m in got)
        self.assertEqual(subjects, [b"after", b"before"])

    def test_a_database_that_stops_answering_holds_up_logins_for_one_connect_timeout_not_one_each(self):
        # Between the front-end and the database, a proxy that, switched, cuts what it carries
        # and then takes connections without ever answering (a host gone from the network):
        # each connect waits for libpq's connect timeout (10 s). Logins queued behind one
        # such connect get [SYS/TEMP] as soon as it failed, not after a connect of their own.
        proxy = Blackhole(int(self.uri.rsplit(":", 1)[1].split("/")[0]))
        try:
            uri = self.uri.replace(f":{proxy.target}/", f":{proxy.port}/")
            srv = t.Mailnetd(MAILNETD, uri, workdir=self.tmp.path, extra=["--quiet"])
            self.servers.append(srv)
            srv.start()
            box = "hal@example.org"
            with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
                s.sendmail("x@example.org", [box], b"Subject: one\r\n\r\nbody\r\n")
            p = poplib.POP3(t.HOST, srv.pop3_port, timeout=10)
            p.user(box)
            p.pass_(box)  # the lock connection is made
            p.quit()
            proxy.blackhole()
            answers = {}

            def login(k):
                started = time.monotonic()
                c = poplib.POP3(t.HOST, srv.pop3_port, timeout=60)
                c.user(box)
                try:
                    c.pass_(box)
                    answers[k] = (b"+OK", time.monotonic() - started)
                except poplib.error_proto as e:
                    answers[k] = (e.args[0], time.monotonic() - started)
                c.close()

            threads = [threading.Thread(target=login, args=(k,)) for k in range(4)]
            for th in threads:
                th.start()
                time.sleep(0.05)
            for th in threads:
                th.join(timeout=90)
            self.assertEqual(sorted(answers), [0, 1, 2, 3], answers)
            for k, (said, took) in answers.items():
                self.assertIn(b"[SYS/TEMP]", said, answers)
            self.assertLess(max(took for _, took in answers.values()), 16,
                            f"queued logins waited for connects of their own: {answers}")
            self.assertIsNone(srv.proc.poll(), "the front-end is still running")
        finally:
            proxy.close()

    def test_smtpd_and_pop3d_on_their_own_share_the_database_with_mailnetd(self):
        # The two servers as separate programs (not inside mailnetd) on one database: mail
        # accepted by smtpd is served by pop3d with the bytes sent, under the UIDL mailnetd
        # gives it too; a session on pop3d holds the mailbox against mailnetd; DELE+QUIT on
        # pop3d removes it everywhere.
        users = t.write_users(os.path.join(self.tmp.path, f"users{self.n}"), {"ivy@example.org": "ivy-secret"})
        smtpd = t.Smtpd(t.program_binary("smtpd"), self.uri, users=users, workdir=self.tmp.path)
        pop3d = t.Pop3d(t.program_binary("pop3d"), self.uri, users, workdir=self.tmp.path)
        for srv in (smtpd, pop3d):
            self.servers.append(srv)
            srv.start()
        m = self.front_end()
        msg = t.smtp_message("own programs", t.DOT_LINES, to="ivy@example.org")
        with smtplib.SMTP(t.HOST, smtpd.port, timeout=10) as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused):  # --users: only its accounts
                s.sendmail("x@example.org", ["nobody@example.org"], msg)
            self.assertEqual(s.sendmail("x@example.org", ["IVY@example.org"], msg), {})
        p = poplib.POP3(t.HOST, pop3d.port, timeout=10)
        p.user("ivy@example.org")
        p.pass_("ivy-secret")
        self.assertEqual(p.stat()[0], 1)
        uidl = p.uidl(1).split()[2]
        got = b"\r\n".join(p.retr(1)[1]) + b"\r\n"
        self.assertEqual(t.strip_trace(got), msg, "fetched == sent after the trace headers")
        other = poplib.POP3(t.HOST, m.pop3_port, timeout=10)  # mailnetd: open mode logins
        other.user("ivy@example.org")
        with self.assertRaises(poplib.error_proto) as e:
            other.pass_("ivy@example.org")
        self.assertIn(b"[IN-USE]", e.exception.args[0])
        other.close()
        p.quit()  # nothing deleted
        seen = poplib.POP3(t.HOST, m.pop3_port, timeout=10)
        seen.user("ivy@example.org")
        seen.pass_("ivy@example.org")
        self.assertEqual(seen.uidl(1).split()[2], uidl, "one UIDL, whichever front-end")
        seen.quit()
        p = poplib.POP3(t.HOST, pop3d.port, timeout=10)
        p.user("ivy@example.org")
        p.pass_("ivy-secret")
        p.dele(1)
        p.quit()
        self.assertEqual(self.count("messages"), 0)

    def fetch_all(self, srv, box):
        """[(uidl, bytes)] of box through srv's POP3, nothing deleted."""
        p = poplib.POP3(t.HOST, srv.pop3_port, timeout=10)
        p.user(box)
        p.pass_(box)
        uidls = [line.split()[1] for line in p.uidl()[1]]
        out = [(uidls[i], b"\r\n".join(p.retr(i + 1)[1])) for i in range(len(uidls))]
        p.quit()
        return out

    def test_mailnet_store_copy_maildir_to_postgresql_and_back(self):
        binary = os.environ.get("MAILNET_STORE_BINARY")
        if not binary:
            self.skipTest("MAILNET_STORE_BINARY is not set (run through ctest)")
        maildir = os.path.join(self.tmp.path, f"maildir{self.n}")
        boxes = ["bob@example.org", "carol@example.org"]
        src = t.Mailnetd(MAILNETD, maildir, workdir=self.tmp.path, extra=["--quiet"])
        self.servers.append(src)
        src.start()
        with smtplib.SMTP(t.HOST, src.port, timeout=10) as s:
            s.sendmail("x@example.org", boxes, b"Subject: both\r\n\r\n.dot line\r\nbody\r\n")
            s.sendmail("x@example.org", boxes[:1], b"Subject: bob only\r\n\r\n" + b"a line of a big message\r\n" * 9000)
        before = {b: self.fetch_all(src, b) for b in boxes}
        src.stop()

        def copy(a, b):
            r = subprocess.run([binary, "copy", a, b, "--quiet"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout
        out = copy(maildir, self.uri)
        self.assertIn("copied 3 messages", out)
        self.assertIn("0 got a UIDL of the target's own", out)
        again = copy(maildir, self.uri)
        self.assertIn("copied 0 messages", again)
        self.assertIn("3 were there already", again)
        pg = self.front_end()
        self.assertEqual({b: self.fetch_all(pg, b) for b in boxes}, before, "bytes and UIDLs through PostgreSQL")
        pg.stop()
        back = os.path.join(self.tmp.path, f"back{self.n}")
        self.assertIn("copied 3 messages", copy(self.uri, back))
        srv = t.Mailnetd(MAILNETD, back, workdir=self.tmp.path, extra=["--quiet"]).start()
        self.servers.append(srv)
        after = {b: self.fetch_all(srv, b) for b in boxes}
        self.assertEqual(after, before, "bytes and UIDLs after the way back")
        r = subprocess.run([binary, "copy", self.uri.replace("postgres@", "postgres:secret@"), back],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 64, "a password on the command line is refused")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=420)
