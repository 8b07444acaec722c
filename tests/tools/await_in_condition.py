#!/usr/bin/env python3
"""await_in_condition.py PATH...: lists each `co_await` written in the condition of an `if`,
`while`, `switch` or `for`, or inside a gtest check (EXPECT_*, ASSERT_*: each expands to an
`if` whose condition holds its arguments).

GCC 12 can lay out a coroutine's frame wrongly when such a condition's co_await comes before
any other local (GCC PR106188; docs/libmailnet.md, "Coroutines and g++ 12"): the resume runs on
garbage. The test coroutine_frame_layout finds a frame that came out wrong in the binaries;
this check keeps the pattern out of the source, so whether a site is safe never depends on
where it stands in its coroutine. Await into a named local, then test it.

A line that holds `await-in-condition: intended` is not reported (the audit's probe, which
must hold the pattern). Comments, string and character literals are not looked into.
PATH: a C++ file, or a folder whose *.cpp, *.hpp and *.h files are read (not those under a
folder whose name begins with `build` or a dot).
Exit 0: none; 1: some (listed as FILE:LINE: the condition).
"""
import os
import re
import sys

HEAD = re.compile(r"\b(?:if|while|switch|for)\s*(?:constexpr\s*)?\(|\b(?:EXPECT|ASSERT)_[A-Z0-9_]+\s*\(")
MARK = "await-in-condition: intended"


def blank_comments_and_literals(text):
    """`text` with each comment and string/char literal's contents replaced by spaces (line
    ends kept, so offsets and line numbers stay); raw strings are not handled (none here)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * (j - i - 2) + c if j - i >= 2 else text[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def sites(path):
    raw = open(path, encoding="utf-8", errors="replace").read()
    text = blank_comments_and_literals(raw)
    lines = raw.split("\n")
    for m in HEAD.finditer(text):
        i, depth = m.end(), 1
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        condition = text[m.end():i - 1]
        if not re.search(r"\bco_await\b", condition):
            continue
        line = text.count("\n", 0, m.start()) + 1
        if MARK in lines[line - 1]:
            continue
        yield line, " ".join((m.group(0) + condition + ")").split())


def sources(paths):
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        for top, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(("build", ".")))
            yield from (os.path.join(top, f) for f in sorted(files) if f.endswith((".cpp", ".hpp", ".h")))


def main(paths):
    paths = list(sources(paths))
    found = 0
    for path in paths:
        for line, what in sites(path):
            print(f"{path}:{line}: co_await in a condition: {what[:160]}")
            found += 1
    if found:
        print(f"{found} co_await(s) in a condition: await into a named local first (docs/libmailnet.md)")
        return 1
    print(f"no co_await in a condition in {len(paths)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
