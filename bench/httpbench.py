#!/usr/bin/env python3
"""Helpers of bench/httprun (standard library only; pop3lib.py's and mailnetdbench.py's too).

  httpbench.py template OUT             the probe message (httpevents.js) with @@SUBJECT@@ in it
  httpbench.py fill PORT FIRST COUNT THREADS
                                        COUNT messages (numbers FIRST..FIRST+COUNT-1, 4 KiB,
                                        multipart/alternative, to r0..r9@bench.example in turn)
                                        over THREADS SMTP sessions at once (smtplib, one session
                                        each); prints "sent=N secs=S"
  httpbench.py clear KIND PORT          every message gone: mailnetd DELETE /api/v1/messages,
                                        MailDev DELETE /email/all; then checked empty
  httpbench.py paths KIND N             the GETs of one full listing of N messages, one a line
  httpbench.py check KIND PORT N        one full listing, parsed: exit 70 unless it holds N
                                        distinct messages; prints "messages=N bytes=B"
  httpbench.py report RAW DOC META      medians of RAW into DOC's block bench:http
"""
import http.client
import json
import os
import smtplib
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mailnetdbench import maildev  # noqa: E402
from pop3lib import WORDS, fmt, read_raw, write_block  # noqa: E402

MAILBOXES = 10           # r0..r9@bench.example, in turn
PAGE = 1000              # mailnetd's largest limit= (DESIGN.md)


def words(seed, n):
    return " ".join(WORDS[(seed * 7 + i * 13) % len(WORDS)] for i in range(n))


def message(seq, subject=None):
    """A transactional test mail of about 4 KiB as an application sends it: a display-name From,
    To, Reply-To, Date, Message-ID, List-Unsubscribe, multipart/alternative text + HTML with a
    link. LF line ends (smtplib makes them CRLF); no line starts with '.'."""
    k = seq % MAILBOXES
    subject = subject or f"Your order #{100000 + seq} has shipped"
    boundary = f"=_bench_{seq:08d}"
    text_lines = [f"Hello customer {k},", "", f"your order #{100000 + seq} is on its way.", ""]
    text_lines += [words(seq + i, 10) for i in range(22)]
    text_lines += ["", f"Track it: https://shop.example/track/{100000 + seq}?u=r{k}", "", "The shop"]
    text = "\n".join(text_lines) + "\n"
    html_rows = "\n".join(f"<p>{words(seq + i, 10)}</p>" for i in range(22))
    html = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Order {100000 + seq}</title></head>\n"
            f"<body style=\"font-family: sans-serif\">\n<h1>Your order #{100000 + seq} has shipped</h1>\n"
            f"<p>Hello customer {k},</p>\n{html_rows}\n"
            f"<p><a href=\"https://shop.example/track/{100000 + seq}?u=r{k}\">Track your parcel</a></p>\n"
            f"</body></html>\n")
    hdr = (f"From: \"Example Shop\" <orders@shop.example>\n"
           f"To: \"Customer {k}\" <r{k}@bench.example>\n"
           f"Reply-To: support@shop.example\n"
           f"Subject: {subject}\n"
           f"Date: Sat, 05 Dec 2026 12:{seq // 60 % 60:02d}:{seq % 60:02d} +0000\n"
           f"Message-ID: <order-{seq}.{k}@shop.example>\n"
           f"List-Unsubscribe: <https://shop.example/unsubscribe?u=r{k}>\n"
           f"X-Mailer: bench-httpbench\n"
           f"MIME-Version: 1.0\n"
           f"Content-Type: multipart/alternative; boundary=\"{boundary}\"\n\n")
    return (hdr + f"This is a multi-part message in MIME format.\n\n--{boundary}\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n" + text +
            f"\n--{boundary}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n" + html +
            f"\n--{boundary}--\n")


def template(out):
    with open(out, "w") as f:
        f.write(message(0, "@@SUBJECT@@").replace("r0@bench.example", "probe@bench.example"))


def fill(port, first, count, threads):
    port, first, count, threads = int(port), int(first), int(count), int(threads)
    seqs = list(range(first, first + count))
    errors, t0 = [], time.monotonic()

    def worker(mine):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                s.ehlo("bench.example")
                for seq in mine:
                    s.sendmail("orders@shop.example", [f"r{seq % MAILBOXES}@bench.example"],
                               message(seq).replace("\n", "\r\n").encode())
        except Exception as e:  # noqa: BLE001: reported below, the run fails
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(seqs[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit(f"httpbench.py fill: {errors[0]}")
    print(f"sent={count} secs={time.monotonic() - t0:.3f}")


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=300)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def paths(kind, n):
    """mailnetd answers at most 1,000 summaries a request and has no cursor (DESIGN.md: limit ≤
    1000, newest first): up to 1,000 one GET, beyond it one GET per mailbox (each ≤ 1,000).
    MailDev's GET /email answers every message in one go."""
    n = int(n)
    if kind == "maildev":
        return ["/email"]
    if n <= PAGE:
        return [f"/api/v1/messages?limit={PAGE}"]
    if n > PAGE * MAILBOXES:
        raise SystemExit(f"httpbench.py: at most {PAGE * MAILBOXES} messages (10 mailboxes of 1,000)")
    return [f"/api/v1/messages?mailbox=r{k}%40bench.example&limit={PAGE}" for k in range(MAILBOXES)]


def clear(kind, port):
    if kind == "maildev":
        maildev(port, "clear")
    else:
        st, body = get(port, "/api/v1/messages", "DELETE")
        if st != 204:
            raise SystemExit(f"httpbench.py clear: DELETE /api/v1/messages answered {st} {body[:200]!r}")
    check(kind, port, 0, quiet=True)


def check(kind, port, n, quiet=False):
    n, ids, octets = int(n), set(), 0
    for p in paths(kind, max(int(n), 1)):
        st, body = get(port, p)
        if st != 200:
            raise SystemExit(f"httpbench.py check: {p} answered {st}")
        octets += len(body)
        j = json.loads(body)
        for m in (j if kind == "maildev" else j["messages"]):
            ids.add(m["id"])
    if len(ids) != n:
        raise SystemExit(f"httpbench.py check: {kind} lists {len(ids)} messages, not {n}")
    if not quiet:
        print(f"messages={len(ids)} bytes={octets}")


# ---- report ---------------------------------------------------------------------------------
SERVERS = [("mailnetd", "mailnetd"), ("maildev", "MailDev")]


def report(raw, doc, meta):
    """RAW lines: `FIG SERVER RUN VALUE [key=val ...]`; FIG: list_N_cC (messages listed/s),
    ev_p50, ev_p99 (ms from the 250), ev_data_p50, ev_data_p99 (ms from the end of DATA)."""
    vals, by_run, extra = read_raw(raw, ("list_", "ev_", "fill_"))

    def med(fig, srv):
        v = vals.get((fig, srv))
        return statistics.median(v) if v else None

    def emed(fig, srv, k):
        v = extra.get((fig, srv, k))
        return statistics.median(v) if v else None

    def ms(x):
        return "—" if x is None else (f"{x:.2f}" if abs(x) < 10 else f"{x:,.1f}")

    def cell(fig, srv, f=fmt):
        m = med(fig, srv)
        return "—" if m is None else f"{f(m)} ({', '.join(f(x) for x in vals[(fig, srv)])})"

    def rf(r):
        return "—" if r is None else (f"{r:.2f}×" if r < 10 else f"{r:.1f}×")

    def per_run_ratio(fig, invert=False):
        rs = []
        for (f, s, run), v in sorted(by_run.items()):
            o = by_run.get((f, "maildev", run))
            if f == fig and s == "mailnetd" and v and o:
                rs.append(o / v if invert else v / o)
        return (statistics.median(rs) if rs else None), rs

    def pct(x):
        return "—" if x is None else f"{x:.0%}"

    def per_server(fig, key, f):
        return " | ".join("—" if emed(fig, s, key) is None else f(emed(fig, s, key)) for s, _ in SERVERS)

    rows = ["| figure | unit | " + " | ".join(f"{t}: median (runs)" for _, t in SERVERS) + " | mailnetd vs MailDev |",
            "|---|---|---|---|---|"]
    targets = []
    figs = sorted({f for f, _ in vals if f.startswith("list_")},
                  key=lambda f: (int(f.split("_")[1]), int(f.split("_")[2][1:])))
    for fig in figs:
        n, c = int(fig.split("_")[1]), int(fig.split("_")[2][1:])
        r, l = per_run_ratio(fig)
        reqs = emed(fig, "mailnetd", "requests_per_listing")
        how = f"mailnetd {reqs:.0f} GET{'s' if reqs and reqs > 1 else ''}, MailDev 1" if reqs else ""
        rows.append(f"| messages listed per second, {n:,} stored, {c} client{'s' if c > 1 else ''} "
                    f"(full listings; {how}) | msg/s | " +
                    " | ".join(cell(fig, s) for s, _ in SERVERS) +
                    f" | **{rf(r)}** (runs {', '.join(rf(x) for x in l)}) |")
        rows.append("| … one full listing's time, p50 | ms | " + per_server(fig, "p50_ms", ms) + " | |")
        rows.append("| … octets of one full listing | octets | " + per_server(fig, "bytes", fmt) + " | |")
        rows.append("| … the server's CPU, the load client's CPU (user + kernel) | of one core | " +
                    " | ".join("—" if emed(fig, s, "server_cpu") is None else
                               f"{pct(emed(fig, s, 'server_cpu'))}, {pct(emed(fig, s, 'client_cpu'))}"
                               for s, _ in SERVERS) + " | |")
        targets.append((f"messages listed per second ≥ 10× MailDev, {n:,} stored, {c} client{'s' if c > 1 else ''} "
                        f"(is {rf(r)})", r is not None and r >= 10))
    for fig, what in (("ev_p50", "p50"), ("ev_p99", "p99")):
        if not any((fig, s) in vals for s, _ in SERVERS):
            continue
        n = emed("ev_p50", "mailnetd", "probes") or emed("ev_p50", "maildev", "probes")
        # A delay at or below 0 is an event read before (or with) the 250: no delay at all, so
        # no ratio; the target then holds when MailDev's is above 0.
        mine, theirs = med(fig, "mailnetd"), med(fig, "maildev")
        if mine is not None and theirs is not None and mine <= 0:
            verdict = "mailnetd's event comes before its 250" + ("; MailDev's after" if theirs > 0 else "")
            ok = theirs > 0
        else:
            r, l = per_run_ratio(fig, invert=True)
            verdict = f"{rf(r)} (runs {', '.join(rf(x) for x in l)})"
            ok = r is not None and r >= 10
        rows.append(f"| delay from the SMTP 250 to the event on an open stream (mailnetd SSE `event: new`, "
                    f"MailDev socket.io `newMail`; below 0: the event was read first), {what} of {n:.0f} probes "
                    f"per run | ms | " + " | ".join(cell(fig, s, ms) for s, _ in SERVERS) + f" | **{verdict}** |")
        targets.append((f"event delay from the 250, {what}: ≥ 10× lower than MailDev's, or none ({verdict})", ok))
    for fig, what in (("ev_data_p50", "p50"), ("ev_data_p99", "p99")):
        if not any((fig, s) in vals for s, _ in SERVERS):
            continue
        r, l = per_run_ratio(fig, invert=True)
        rows.append(f"| information: from the end of DATA (the final dot written) to the event, {what} (mailnetd "
                    f"fsyncs before its 250 and its event, MailDev does not) | ms | " +
                    " | ".join(cell(fig, s, ms) for s, _ in SERVERS) +
                    f" | {rf(r)} (runs {', '.join(rf(x) for x in l)}) |")
    if ("ev_p50", "mailnetd") in vals or ("ev_p50", "maildev") in vals:
        rows.append("| … events read before the 250 (summed over the runs) | probes | " +
                    " | ".join(f"{sum(extra.get(('ev_p50', s, 'before_250'), [])):.0f}" for s, _ in SERVERS) + " | |")
        rows.append("| … the SMTP DATA itself (end of data written to its 250), p50 | ms | " +
                    per_server("ev_p50", "smtp_p50_ms", ms) + " | |")
        rows.append("| … the server's CPU, the probe's (node) CPU during the probes | of one core | " +
                    " | ".join("—" if emed("ev_p50", s, "server_cpu") is None else
                               f"{pct(emed('ev_p50', s, 'server_cpu'))}, {pct(emed('ev_p50', s, 'client_cpu'))}"
                               for s, _ in SERVERS) + " | |")
    for fig, label in (("fill_1", "filling: SMTP msg/s of the fill (8 smtplib sessions; information)"),):
        if any((fig, s) in vals for s, _ in SERVERS):
            rows.append(f"| {label} | msg/s | " + " | ".join(cell(fig, s) for s, _ in SERVERS) + " | |")
    ttab = ["| target | result |", "|---|---|"] + [f"| {t} | {'met' if ok else '**not met**'} |" for t, ok in targets]
    note = ("Ratios: listing rate mailnetd's ÷ MailDev's, event delay MailDev's ÷ mailnetd's, so above 1× mailnetd "
            "is ahead; each the median of the per-run ratios. The target is the issue's: at least 10× MailDev.")
    write_block(doc, "http", meta + "\n\n" + note + "\n\n" + "\n".join(rows) + "\n\n" + "\n".join(ttab))


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "paths":
        print("\n".join(paths(*a)))
    else:
        {"template": template, "fill": fill, "clear": clear, "check": check, "report": report}[cmd](*a)
