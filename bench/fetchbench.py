#!/usr/bin/env python3
"""Helpers of bench/fetchrun, the fetch benchmark (standard library only; pop3lib.py's too).

  fetchbench.py expect MAILDIR OUT        what a fetch of MAILDIR must deliver: the size and SHA-1
                                          of every message (LF line ends), as JSON into OUT
  fetchbench.py verify MAILDIR EXPECT     the messages in MAILDIR's new/ and cur/ against EXPECT
                                          (CR LF read as LF: some fetchers store CRLF); prints
                                          "ok=0|1 files=F bytes=B missing=M unexpected=U tmp=T"
  fetchbench.py run SECS -- CMD...        runs CMD under /usr/bin/time in its own process group
                                          (the group is killed after SECS); prints "rc=N secs=S
                                          cpu=C sys=K maxrss_kib=M" (C: CMD's CPU seconds, its
                                          children's included, K of them in the kernel; M: the
                                          largest peak RSS of CMD and the children it waited
                                          for, wait4's rusage)
  fetchbench.py report RAW DOC META       medians of RAW into DOC's block bench:fetch
"""
import collections
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pop3lib import fmt, read_raw, write_block  # noqa: E402


def digests(maildir):
    out = collections.Counter()
    files = nbytes = 0
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            files += 1
            nbytes += len(data)
            data = data.replace(b"\r\n", b"\n")
            out[(len(data), hashlib.sha1(data).hexdigest())] += 1
    return out, files, nbytes


def expect(maildir, out):
    d, files, nbytes = digests(maildir)
    with open(out, "w") as f:
        json.dump({"files": files, "bytes": nbytes, "messages": [[k[0], k[1], n] for k, n in sorted(d.items())]}, f)
    print(f"files={files} bytes={nbytes}")


def verify(maildir, exp_file):
    with open(exp_file) as f:
        exp = json.load(f)
    want = collections.Counter({(s, h): n for s, h, n in exp["messages"]})
    got, files, nbytes = digests(maildir)
    missing = sum((want - got).values())
    unexpected = sum((got - want).values())
    tmp = os.path.join(maildir, "tmp")
    left = len(os.listdir(tmp)) if os.path.isdir(tmp) else 0
    ok = int(missing == 0 and unexpected == 0 and left == 0)
    print(f"ok={ok} files={files} bytes={nbytes} missing={missing} unexpected={unexpected} tmp={left}")


def run(secs, dash, *cmd):
    assert dash == "--"
    with tempfile.NamedTemporaryFile("r", prefix="fetchbench-time.") as tf:
        t0 = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=float(secs))
            rc = p.returncode
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the fetcher and whatever it started
            out, _ = p.communicate()
            rc = 124
        t1 = time.monotonic()
        words = tf.read().split()
    # time writes "Command exited with non-zero status N" before the figures when CMD failed.
    try:
        maxrss, user, system = int(words[-3]), float(words[-2]), float(words[-1])
    except (IndexError, ValueError):
        maxrss, user, system = 0, 0.0, 0.0
    if rc != 0:
        sys.stderr.write(out.decode(errors="replace")[-2000:])
    print(f"rc={rc} secs={t1 - t0:.4f} cpu={user + system:.2f} sys={system:.2f} maxrss_kib={maxrss}")


# ---- report -------------------------------------------------------------------------------
SETS = [
    # key, label, messages, octets each
    ("A", "set A: 1,000 × 4 KiB", 1000, 4096),
    ("B", "set B: 100 × 1 MiB", 100, 1024 * 1024),
]
FETCHERS = ["pop3c", "mpop", "fetchmail", "getmail6"]
TARGETS = {"A": 5.0, "B": 1.5}
RSS_TARGET_KIB = 8 * 1024


def report(raw, doc, meta):
    vals, by_run, extra = read_raw(raw, ("fetch_", "retr_", "floor_", "disk_", "nodisk_"))
    runs = sorted({int(r) for (_f, _s, r) in by_run if r.isdigit()})
    failed = {}
    with open(raw) as f:
        for line in f:
            p = line.split()
            if len(p) >= 4 and p[0].startswith("failed_"):
                failed.setdefault((p[0][len("failed_"):], p[1]), []).append(" ".join(p[2:]))

    def med(fig, srv):
        v = vals.get((fig, srv))
        return statistics.median(v) if v else None

    def cell(fig, srv, f=fmt):
        v = vals.get((fig, srv))
        fails = failed.get((fig[len("fetch_"):], srv))
        if fails:
            # "RUN why": which runs failed and how; the runs that did not, for orientation only.
            text = "; ".join(("run " + x) for x in fails[:3])
            ok = f"; the other runs: {', '.join(f(x) for x in v)} msg/s" if v else ""
            return f"**failed** ({text}{ok})"
        if not v:
            return "—"
        return f"{f(statistics.median(v))} ({', '.join(f(x) for x in v)})"

    def xmed(fig, srv, key):
        v = extra.get((fig, srv, key))
        return statistics.median(v) if v else None

    lines = [meta, ""]
    head = "| figure | unit | " + " | ".join(f"{x}: median (runs)" for x in FETCHERS) + " | pop3c vs the best peer |"
    lines += [head, "|" + "---|" * (len(FETCHERS) + 3)]
    results = {}
    for key, label, n, size in SETS:
        fig = f"fetch_{key}"
        if not any((fig, s) in vals or (key, s) in failed for s in FETCHERS):
            continue
        peers = [s for s in FETCHERS[1:] if (fig, s) in vals and (key, s) not in failed]
        # Per run: pop3c over the fastest peer of that run (all were measured minutes apart).
        ratios = []
        for r in runs:
            mine = by_run.get((fig, "pop3c", str(r)))
            theirs = [by_run.get((fig, s, str(r))) for s in peers]
            theirs = [t for t in theirs if t]
            if mine and theirs and (key, "pop3c") not in failed:
                ratios.append(mine / max(theirs))
        best = max(peers, key=lambda s: med(fig, s)) if peers else None
        ratio = statistics.median(ratios) if ratios else None
        results[key] = (ratio, best)
        rtext = "—"
        if ratio is not None:
            rtext = (f"**{ratio:.2f}×** {best} (runs {', '.join(f'{x:.2f}' for x in ratios)}; "
                     f"of the medians {med(fig, 'pop3c') / med(fig, best):.2f}×)")
        lines.append(f"| {label}: messages/s (whole run of the fetcher: start to exit) | msg/s | "
                     + " | ".join(cell(fig, s) for s in FETCHERS) + f" | {rtext} |")
        mib = {s: [x * size / (1 << 20) for x in vals.get((fig, s), [])] for s in FETCHERS}

        def mcell(s):
            if (key, s) in failed:
                return "failed" + (f" (the other runs: {', '.join(fmt(x) for x in mib[s])})" if mib[s] else "")
            v = mib[s]
            return f"{fmt(statistics.median(v))} ({', '.join(fmt(x) for x in v)})" if v else "—"
        lines.append(f"| {label}: MiB/s of messages (as stored, LF) | MiB/s | "
                     + " | ".join(mcell(s) for s in FETCHERS) + " | same ratio |")
        rss = {s: vals.get((f"fetch_{key}_rss", s)) for s in FETCHERS}

        def rcell(s):
            if (key, s) in failed and not rss[s]:
                return "failed"
            v = rss[s]
            return f"{fmt(max(v))} (runs {', '.join(fmt(x) for x in v)})" if v else "—"
        rbest = None
        if peers and rss.get("pop3c"):
            rbest = min(peers, key=lambda s: max(rss[s]))
        rr = (f"{max(rss['pop3c']) / max(rss[rbest]):.2f}× the leanest peer's ({rbest})" if rbest else "—")
        lines.append(f"| {label}: peak RSS (largest of the runs) | KiB | " + " | ".join(rcell(s) for s in FETCHERS)
                     + f" | {rr} |")

        def ccell(s):
            if (key, s) in failed and xmed(fig, s, "cpu") is None:
                return "failed"
            c, k, dc = xmed(fig, s, "cpu"), xmed(fig, s, "sys_cpu"), xmed(fig, s, "server_cpu")
            if c is None:
                return "—"
            return f"{c * 100:.0f}% ({k * 100:.0f}% in the kernel); Dovecot {dc * 100:.0f}%"
        lines.append(f"| {label}: CPU of the fetcher (its children included; in the kernel) and of Dovecot, shares of one core over the fetch | % | "
                     + " | ".join(ccell(s) for s in FETCHERS) + " | |")
    lines.append("")

    # The limits of the same run: Dovecot's own pipelined RETR rate, the disk's fsync'd rate.
    lim = ["| limit (same run) | unit | median (runs) | how |", "|---|---|---|---|"]
    for key, label, n, size in SETS:
        fig = f"nodisk_{key}"
        if (fig, "pop3c") in vals:
            v = vals[(fig, "pop3c")]
            mibs = [x * size / (1 << 20) for x in v]
            lim.append(f"| pop3c with no disk, {label} | msg/s (MiB/s) | {fmt(statistics.median(v))} "
                       f"({', '.join(fmt(x) for x in v)}); {fmt(statistics.median(mibs))} MiB/s | `pop3c fetch --stdout --keep` "
                       f"into /dev/null, timed as the fetches are (start to exit): the network, Dovecot and pop3c without the Maildir |")
        fig = f"floor_{key}"
        if (fig, "dovecot") in vals:
            v = vals[(fig, "dovecot")]
            lim.append(f"| Dovecot's shortest fetch, {label} | msg/s (ms a fetch) | {fmt(statistics.median(v))} "
                       f"({', '.join(fmt(x) for x in v)}); {n / statistics.median(v) * 1000:.0f} ms | `popload retr --batch {n}`: "
                       f"one session from the connect to the close after QUIT (USER, PASS, LIST, every RETR sent at once, read and "
                       f"discarded), no process start: about what a fetcher that cost nothing would take (an estimate: "
                       f"a fetcher could leave out the LIST) |")
        fig = f"retr_{key}"
        if (fig, "dovecot") in vals:
            v = vals[(fig, "dovecot")]
            mibs = [x * size / (1 << 20) for x in v]
            lim.append(f"| Dovecot's pipelined RETR, {label} | msg/s (MiB/s) | {fmt(statistics.median(v))} "
                       f"({', '.join(fmt(x) for x in v)}); {fmt(statistics.median(mibs))} MiB/s | `popload retr --batch 50`: "
                       f"one session, RETR 1..N in pipelined batches of 50, read and discarded; the RETR phase only |")
    disk = sorted({f for (f, s) in vals if f.startswith("disk_")}, key=lambda f: (f.split("_")[1], int(f.split("_")[2])))
    said = set()
    for fig in disk:
        _, kind, threads = fig.split("_")
        v = vals[(fig, "disk")]
        what = ("raw system calls: open tmp/ (O_EXCL), write 4 KiB, fsync, close, link into new/, unlink, open and fsync new/"
                if kind == "raw" else "libmailnet's Maildir delivery, pop3c's own path: the same steps, the new/ fsyncs shared by group commit")
        how = "as above" if kind in said else f"`mailnet-maildir-rate` at the start and at the end of the run: {what}"
        said.add(kind)
        lim.append(f"| the disk: fsync'd 4 KiB Maildir deliveries, {kind}, {threads} thread{'s' if threads != '1' else ''} | files/s | "
                   f"{fmt(statistics.median(v))} ({', '.join(fmt(x) for x in v)}) | {how} |")
    lines += lim + [""]

    tg = ["| target | result |", "|---|---|"]
    for key, label, n, size in SETS:
        if key not in results:
            continue
        ratio, best = results[key]
        goal = TARGETS[key]
        if ratio is None:
            tg.append(f"| {label}: ≥ {goal}× the fastest peer | **not measured** (pop3c or every peer failed) |")
        else:
            verdict = 'met' if ratio >= goal else '**not met**'
            # What the target asks in time, beside the shortest fetch Dovecot allows in this run.
            peer, floor = vals.get((f"fetch_{key}", best)), vals.get((f"floor_{key}", "dovecot"))
            if ratio < goal and peer and floor:
                need, fl = goal * statistics.median(peer), statistics.median(floor)
                verdict += (f": {goal}× {best} is {fmt(need)} msg/s, {n / need * 1000:.0f} ms a fetch; Dovecot's shortest "
                            f"fetch took {n / fl * 1000:.0f} ms ({fmt(fl)} msg/s)"
                            + (", longer than the target allows" if fl < need else ""))
            tg.append(f"| {label}: ≥ {goal}× the fastest peer (is {ratio:.2f}× {best}) | {verdict} |")
    v = vals.get(("fetch_B_rss", "pop3c"))
    if v:
        tg.append(f"| set B: pop3c peak RSS < 8 MiB (is {max(v):,.0f} KiB = {max(v) / 1024:.2f} MiB, the largest of "
                  f"{len(v)} runs) | {'met' if max(v) < RSS_TARGET_KIB else '**not met**'} |")
    lines += tg
    write_block(doc, "fetch", "\n".join(lines))


if __name__ == "__main__":
    cmds = {"expect": expect, "verify": verify, "run": run, "report": report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
