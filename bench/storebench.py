#!/usr/bin/env python3
"""Helper of bench/storerun (standard library only; pop3lib.py's too).

  storebench.py report RAW DOC META   medians of RAW (`FIG STORE RUN VALUE` lines: FIG deliver,
                                      retr1, retr3; STORE maildir, pg1, pg3) into DOC's block
                                      bench:store
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pop3lib import fmt, read_raw, write_block  # noqa: E402


def report(raw, doc, meta):
    vals, _, _ = read_raw(raw, ("deliver", "retr"))
    med = {k: statistics.median(v) for k, v in vals.items()}
    spread = {k: (min(v), max(v)) for k, v in vals.items()}

    def cell(fig, store):
        if (fig, store) not in med:
            return "—"
        lo, hi = spread[(fig, store)]
        return f"{fmt(med[(fig, store)])} ({fmt(lo)}–{fmt(hi)})"

    def ratio(a, b):
        if a not in med or b not in med or med[b] == 0:
            return None
        return med[a] / med[b]

    target = ratio(("deliver", "pg3"), ("deliver", "maildir"))
    verdict = "—" if target is None else f"{target:.2f}× ({'met' if target >= 1 else 'not met'})"
    lines = [
        f"Run of {meta}. Medians (min–max).",
        "",
        "| | Maildir, one process | PostgreSQL, one front-end | PostgreSQL, three front-ends |",
        "|---|---|---|---|",
        f"| deliveries/s (smtpd; 20 smtp-source clients, 4 KiB, a connection per message) | {cell('deliver', 'maildir')} | {cell('deliver', 'pg1')} | {cell('deliver', 'pg3')} |",
        f"| RETR msg/s, one session (pop3d; 4 KiB, pipelined) | {cell('retr1', 'maildir')} | {cell('retr1', 'pg1')} | — |",
        f"| RETR msg/s, three sessions at once (three mailboxes) | {cell('retr3', 'maildir')} (one pop3d) | — | {cell('retr3', 'pg3')} (one session per front-end) |",
        "",
        f"Target: deliveries with three front-ends at least the one-process Maildir figure: {verdict}.",
    ]
    r1 = ratio(("retr1", "pg1"), ("retr1", "maildir"))
    if r1 is not None:
        lines.append(f"RETR on PostgreSQL, one session: {r1:.2f}× Maildir's.")
    block = "\n".join(lines)
    if doc == "/dev/stdout":
        print(block)
    else:
        write_block(doc, "store", block)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "report":
        report(*sys.argv[2:])
    else:
        sys.exit(__doc__)
