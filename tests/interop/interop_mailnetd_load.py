# mailnetd under load: 50 smtplib clients send 2,000 messages while 10 poplib clients fetch and
# delete in a loop (every message fetched exactly once, no file left); and the same load across
# a kill -9 and a restart on the same store (what got a 250 survives once, nothing else shows).
"""Each message i has its own Message-ID and an `X-Marker: load-i` header and goes to one or two
of five mailboxes (a second one for every fourth message: one file hard-linked into both). A
sender records each message's fate: `ok` (250 after DATA), `unknown` (the final dot was sent
and no reply came: the server may or may not have it), `failed` (an error reply, or the
connection broke before the final dot was sent: it must never be visible), `unsent`. A fetcher
(login, STAT, RETR all, DELE all, QUIT) counts a session's messages as fetched only when QUIT
says +OK; one whose QUIT went out but whose reply never came may or may not have deleted them.
A mailbox in use by another fetcher answers -ERR [IN-USE]: the fetcher tries the next one.
Everything runs against a deadline and fails with the counts when it passes."""
import collections
import os
import poplib
import re
import signal
import smtplib
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
SENDER = "load@example.org"
BOXES = [f"box{i}@example.org" for i in range(5)]
SENDERS, FETCHERS = 50, 10
PER_CONNECTION = 10  # messages a sender sends in one SMTP session before QUIT
MARKER = re.compile(rb"^X-Marker: load-(\d+)\r$", re.M)


def recipients(i):
    r = [BOXES[i % len(BOXES)]]
    if i % 4 == 0:
        r.append(BOXES[(i + 2) % len(BOXES)])
    return r


def message(i):
    return t.smtp_message(f"load {i}", [b"message %d of the load test" % i, b".a dot-leading line", b"bye"],
                          headers=[b"X-Marker: load-%d" % i], sender=SENDER, to=", ".join(recipients(i)))


def t_bytes(v):
    """poplib's error_proto carries the reply (bytes), or a str of its own ('-ERR EOF')."""
    return v if isinstance(v, bytes) else str(v).encode()


def data_form(msg):
    """DATA's payload: dot-stuffed, ended by CRLF.CRLF (RFC 5321 4.5.2)."""
    return re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n"


class Load:
    """The senders and fetchers of one run against the servers `srvs` (one, or several
    front-ends of one store: sender and fetcher k use srvs[k % len]); .ports may be replaced
    (a restart, a front-end killed). `temporary_ok`: a 4xx reply (a database restarting) is not
    an error: the message is sent again a little later, as an MTA would (so a 4xx given for a
    message that was stored after all shows as a message fetched twice)."""

    def __init__(self, tc, srvs, total, deadline, temporary_ok=False):
        self.tc = tc
        self.total = total
        self.deadline = deadline
        self.status = ["unsent"] * total
        self.lock = threading.Lock()
        self.next = 0
        if not isinstance(srvs, (list, tuple)):
            srvs = [srvs]
        self.ports = [(s.port, s.pop3_port) for s in srvs]  # (SMTP, POP3) of each front-end
        self.temporary_ok = temporary_ok
        self.temporary = 0                    # 4xx replies, their messages sent again (temporary_ok)
        self.retry = collections.deque()      # messages to send again after a 4xx
        self.up = threading.Event()           # senders may connect
        self.fetching = threading.Event()     # fetchers may connect
        self.done = threading.Event()         # fetchers stop
        self.up.set()
        self.fetching.set()
        self.parked = 0                       # threads waiting on up/fetching
        self.finished = 0                     # threads that returned
        self.committed = collections.Counter()  # (box, i): fetched in a session QUIT said +OK to
        self.maybe = set()                    # fetched, QUIT sent, no reply: maybe deleted
        self.seen = set()                     # every (box, i) any RETR returned
        self.errors = []                      # what must not happen (the load test: any error)
        self.broken = []                      # connections that broke (expected around a kill)
        self.in_use = 0
        self.sessions = 0
        self.threads = [threading.Thread(target=self.guarded, args=(self.sender, k), daemon=True)
                        for k in range(SENDERS)] + \
                       [threading.Thread(target=self.guarded, args=(self.fetcher, k), daemon=True)
                        for k in range(FETCHERS)]

    def guarded(self, body, *args):
        """A thread's body: an exception of the script's own is an error, never silent."""
        import traceback
        try:
            body(*args)
        except BaseException:
            self.errors.append(f"{body.__name__} thread: {traceback.format_exc()}")

    def start(self):
        for th in self.threads:
            th.start()

    def take(self):
        with self.lock:
            if time.monotonic() > self.deadline:
                return None
            if self.retry:
                i = self.retry.popleft()
            elif self.next < self.total:
                i = self.next
                self.next += 1
            else:
                return None
            self.status[i] = "failed"  # taken: no 250 until send_one says so
            return i

    def park(self, event):
        if event.is_set():
            return
        with self.lock:
            self.parked += 1
        event.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        with self.lock:
            self.parked -= 1

    def count(self, state):
        return sum(1 for s in self.status if s == state)

    # --- SMTP

    def port(self, k, which):
        """Front-end k's SMTP (0) or POP3 (1) port, as .ports says now."""
        ports = self.ports
        return ports[k % len(ports)][which]

    def refused(self, i, what, code, resp):
        """A refusal: an error, unless temporary_ok and it is a 4xx."""
        if self.temporary_ok and 400 <= code < 500:
            with self.lock:
                self.temporary += 1
            time.sleep(0.1)  # as a client would, later rather than at once
            with self.lock:
                self.status[i] = "unsent"
                self.retry.append(i)
        else:
            self.errors.append(f"message {i}: {what} -> {code} {resp!r}")

    def sender(self, k):
        s = None
        sent_here = 0
        try:
            while True:
                i = self.take()
                if i is None:
                    break
                self.park(self.up)
                try:
                    if s is None or sent_here >= PER_CONNECTION:
                        if s is not None:
                            s.quit()
                        s, sent_here = None, 0
                        s = smtplib.SMTP(t.HOST, self.port(k, 0), timeout=30)
                        s.ehlo("load.interop.test")
                    self.send_one(s, i)
                    sent_here += 1
                except (OSError, EOFError, smtplib.SMTPException) as e:
                    self.broken.append(f"smtp message {i} ({self.status[i]}): {e!r}")
                    if s is not None:
                        s.close()
                    s = None
            if s is not None:
                s.quit()
        except (OSError, EOFError, smtplib.SMTPException) as e:
            self.broken.append(f"smtp quit: {e!r}")
        finally:
            with self.lock:
                self.finished += 1

    def send_one(self, s, i):
        """One transaction; status[i] says how far it got (see the module's docstring)."""
        code, resp = s.mail(SENDER)
        if code != 250:
            self.refused(i, "MAIL", code, resp)
            s.rset()
            return
        for r in recipients(i):
            code, resp = s.rcpt(r)
            if code != 250:
                self.refused(i, f"RCPT {r}", code, resp)
                s.rset()
                return
        code, resp = s.docmd("DATA")
        if code != 354:
            self.refused(i, "DATA", code, resp)
            return
        s.send(data_form(message(i)))
        self.status[i] = "unknown"  # the final dot is out: a 250 may or may not come
        code, resp = s.getreply()
        if code == 250:
            self.status[i] = "ok"
        else:
            self.status[i] = "failed"
            self.refused(i, "end of DATA", code, resp)

    # --- POP3

    def fetcher(self, k):
        j = k
        try:
            while not self.done.is_set() and time.monotonic() < self.deadline:
                self.park(self.fetching)
                if self.done.is_set():
                    break
                box = BOXES[j % len(BOXES)]
                j += 1
                self.fetch_once(box, k=k)
        finally:
            with self.lock:
                self.finished += 1

    def fetch_once(self, box, delete=True, k=0):
        """One session on `box` through front-end k: RETR all (and DELE all), QUIT. Returns the
        (box, i) fetched, or None when the mailbox was in use."""
        got = []
        quit_sent = False
        p = None
        try:
            p = poplib.POP3(t.HOST, self.port(k, 1), timeout=30)
            p.user(box)
            try:
                p.pass_(box)
            except poplib.error_proto as e:
                if b"[IN-USE]" in t_bytes(e.args[0]):
                    with self.lock:
                        self.in_use += 1
                    p.close()
                    time.sleep(0.005)  # another fetcher has it: no busy loop on a loaded machine
                    return None
                raise
            n, _ = p.stat()
            for m in range(1, n + 1):
                data = b"\r\n".join(p.retr(m)[1]) + b"\r\n"
                got.append((box, self.check_message(box, data)))
            if delete:
                for m in range(1, n + 1):
                    p.dele(m)
            quit_sent = True
            p.quit()
            with self.lock:
                self.sessions += 1
                if delete:
                    self.committed.update(got)
            return got
        except (OSError, EOFError, poplib.error_proto) as e:
            self.broken.append(f"pop3 {box} ({len(got)} fetched, QUIT {'sent' if quit_sent else 'not sent'}): {e!r}")
            if quit_sent and delete:
                with self.lock:
                    self.maybe.update(got)
            if p is not None:
                p.close()
            return got

    def check_message(self, box, data):
        m = MARKER.search(data)
        if not m:
            self.errors.append(f"{box}: a message without a marker: {data[:300]!r}")
            return -1
        i = int(m.group(1))
        with self.lock:
            self.seen.add((box, i))
        try:
            rest = t.strip_trace(data)
        except AssertionError as e:
            self.errors.append(f"{box} message {i}: {e}")
            return i
        if rest != message(i):
            self.errors.append(f"{box} message {i}: fetched != sent after the trace headers: {rest[:300]!r}")
        if box not in recipients(i):
            self.errors.append(f"{box} message {i}: not one of its recipients {recipients(i)}")
        return i

    # --- control

    def wait_parked(self, timeout=15.0):
        """Until every thread waits on up/fetching or has returned."""
        ok = t.wait_until(lambda: self.parked + self.finished == len(self.threads), timeout=timeout)
        self.tc.assertTrue(ok, f"threads did not settle: {self.parked} parked, {self.finished} finished "
                               f"of {len(self.threads)}")

    def finish(self, what):
        """After the senders: fetchers drain until every `ok` copy is fetched (or the deadline),
        then stop; a last sequential pass fetches and deletes what is left."""
        senders = self.threads[:SENDERS]
        for th in senders:
            th.join(timeout=max(0.1, self.deadline - time.monotonic()))
        want = {(b, i) for i, s in enumerate(self.status) if s == "ok" for b in recipients(i)}

        def all_fetched():
            with self.lock:
                return want <= (set(self.committed) | self.maybe)
        t.wait_until(all_fetched,
                     timeout=max(0.1, self.deadline - time.monotonic()), interval=0.1)
        self.done.set()
        self.fetching.set()
        for th in self.threads[SENDERS:]:
            th.join(timeout=15)
        for box in BOXES:  # the last pass; a session that just ended may still hold its lock
            got = t.wait_until(lambda: self.fetch_once(box) is not None, timeout=3)
            self.tc.assertTrue(got, f"{box}: still in use 3 s after every fetcher stopped")
        if time.monotonic() > self.deadline or any(th.is_alive() for th in self.threads):
            self.tc.fail(f"{what}: deadline passed: {self.next} of {self.total} taken, "
                         f"{self.count('ok')} got 250, {len(set(self.committed))} of {len(want)} copies fetched, "
                         f"{sum(th.is_alive() for th in self.threads)} threads still running")

    def summary(self):
        return (f"{self.total} messages: {self.count('ok')} ok, {self.count('unknown')} unknown, "
                f"{self.count('failed')} failed, {self.count('unsent')} unsent; {self.sessions} POP3 sessions, "
                f"{self.in_use} IN-USE, {len(self.broken)} broken connections, {self.temporary} temporary refusals")


def store_files(store, settle=False):
    """{sub: [paths]} of every file in the mailboxes' new/, cur/ and tmp/. settle: once tmp/ is
    empty or t.PREPARED_LIFETIME has passed (a tmp/ file made ahead for a busy mailbox goes
    once no delivery takes it)."""
    deadline = time.monotonic() + (t.PREPARED_LIFETIME if settle else 0)
    while True:
        out = {"new": [], "cur": [], "tmp": []}
        for box in os.listdir(store):
            for sub in out:
                d = os.path.join(store, box, sub)
                if os.path.isdir(d):
                    out[sub] += [os.path.join(d, n) for n in os.listdir(d)]
        if not out["tmp"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def exactly_once_problems(load):
    """Every copy of an `ok` message fetched once (or, once only, in a session whose QUIT
    reply was lost); an `unknown` one at most once; a `failed`/`unsent` one never seen."""
    problems = []
    for (box, i), n in load.committed.items():
        if n > 1:
            problems.append(f"{box} message {i} ({load.status[i]}) fetched {n} times")
    for i, s in enumerate(load.status):
        for box in recipients(i):
            key = (box, i)
            if s == "ok" and load.committed[key] == 0 and key not in load.maybe:
                problems.append(f"{box} message {i} got a 250 and was never fetched")
            if s in ("failed", "unsent") and key in load.seen:
                problems.append(f"{box} message {i} ({s}: no 250) was visible")
    return problems


class LoadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.dir = self.tmp.path
        self.store = os.path.join(self.dir, "store")
        self.servers = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for s in self.servers:
            s.stop()
            if failed:
                print(f"--- mailnetd stderr (tail) ---\n{s.stderr()[-3000:]}", file=sys.stderr)
        self.tmp.cleanup()

    def start(self):
        # --quiet: one log line per delivery and session would be 3,000 lines of stderr here.
        srv = t.Mailnetd(MAILNETD, self.store, workdir=self.dir, extra=["--quiet"])
        self.servers.append(srv)
        return srv.start()

    def check_exactly_once(self, load):
        problems = exactly_once_problems(load)
        self.assertEqual(problems[:20], [], f"{len(problems)} problems; {load.summary()}")

    def test_50_senders_10_fetchers_2000_messages_each_fetched_once_nothing_left(self):
        started = time.monotonic()
        srv = self.start()
        load = Load(self, srv, 2000, deadline=started + 50)
        load.start()
        load.finish("load")
        print(f"load: {load.summary()} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assertEqual(load.errors, [], load.summary())
        self.assertEqual(load.broken, [], "no connection breaks without a kill")
        self.assertEqual(load.count("ok"), 2000, load.summary())
        self.assertEqual(load.maybe, set())
        self.check_exactly_once(load)
        self.assertEqual(len(load.committed), sum(len(recipients(i)) for i in range(2000)))
        self.assertIsNone(srv.proc.poll(), "mailnetd is still running")
        files = store_files(self.store, settle=True)
        self.assertEqual(files, {"new": [], "cur": [], "tmp": []}, "no file left behind")

    def test_kill_9_during_the_load_and_restart_on_the_same_store(self):
        started = time.monotonic()
        srv = self.start()
        total = 2000
        load = Load(self, srv, total, deadline=started + 50)
        load.start()
        # Kill once a third got their 250 and fetchers have been at work; the senders wait at
        # 1,200 until the fetchers are (sessions count at QUIT), then go on, so the kill comes
        # with transactions under way.
        def going():
            if load.count("ok") >= 1200:
                load.up.clear()
            return load.count("ok") >= total // 3 and load.sessions >= 5
        self.assertTrue(t.wait_until(going, timeout=max(0.1, load.deadline - time.monotonic()), interval=0.01),
                        f"the load did not get going: {load.summary()}")
        load.up.set()
        self.assertTrue(t.wait_until(lambda: load.count("failed") + load.count("unknown") >= 10, timeout=10, interval=0.001),
                        f"no transactions under way: {load.summary()}")
        load.up.clear()
        load.fetching.clear()
        os.kill(srv.proc.pid, signal.SIGKILL)
        self.assertEqual(srv.proc.wait(timeout=10), -signal.SIGKILL)
        load.wait_parked()
        at_kill = load.summary()
        # The kill cut transactions under way (so "nothing without a 250 is visible" below is
        # checked against messages the server was receiving, not only ones never sent).
        cut = [b for b in load.broken if b.startswith("smtp message")]
        self.assertNotEqual(cut, [], f"the kill cut no SMTP transaction: {at_kill}")
        srv2 = self.start()  # the same --store, new ports
        load.ports = [(srv2.port, srv2.pop3_port)]
        # No lock left held: each mailbox logs in at once (nothing else is connected now), and
        # what a 250 was given for is there exactly once; nothing without a 250 is.
        present = collections.Counter()
        for box in BOXES:
            got = load.fetch_once(box, delete=False)
            self.assertIsNotNone(got, f"{box}: -ERR [IN-USE] after the restart: a lock outlived mailnetd")
            present.update(got)
        problems = [f"{k} present {n} times" for k, n in present.items() if n > 1]
        for i, s in enumerate(load.status):
            for box in recipients(i):
                key = (box, i)
                if s == "ok" and present[key] == 0 and load.committed[key] == 0 and key not in load.maybe:
                    problems.append(f"{box} message {i} got a 250 and is gone after the restart")
                if s == "ok" and present[key] and load.committed[key]:
                    problems.append(f"{box} message {i} was fetched and deleted, and is back")
                if s in ("failed", "unsent") and present[key]:
                    problems.append(f"{box} message {i} ({s}: no 250) is visible after the restart")
        self.assertEqual(problems[:20], [], f"{len(problems)} problems after the restart; at the kill: {at_kill}")
        # The load goes on against the new process, then everything is drained.
        load.up.set()
        load.fetching.set()
        load.finish("restart")
        print(f"restart: at the kill {at_kill}; at the end {load.summary()} in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        self.assertEqual(load.errors, [], load.summary())
        self.assertEqual(load.count("unsent"), 0, load.summary())
        self.check_exactly_once(load)
        self.assertIsNone(srv2.proc.poll(), "the restarted mailnetd is still running")
        files = store_files(self.store)
        self.assertEqual(files["new"] + files["cur"], [], "everything fetched and deleted")
        # tmp/ may keep the partial files of the DATA the kill cut off (removed after 36 hours).


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=170)
