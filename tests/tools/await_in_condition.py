#!/usr/bin/env python3
"""await_in_condition.py PATH...: lists each `co_await` (or `co_yield`) written in the condition
of an `if`, `while`, `switch` or `for`, or inside a gtest check (EXPECT_*, ASSERT_*, GTEST_*:
each expands to an `if` whose condition holds its arguments).

GCC 12 can lay out a coroutine's frame wrongly when such a condition's co_await comes before
any other local (GCC PR106188; docs/libmailnet.md, "Coroutines and g++ 12"): the resume runs on
garbage. The test coroutine_frame_layout finds a frame that came out wrong in the binaries;
this check keeps the pattern out of the source, so whether a site is safe never depends on
where it stands in its coroutine. Await into a named local, then test it.

PATH: a file, or a folder whose C++ files (*.cpp, *.cc, *.hpp, *.h, *.ipp, *.inl) and Markdown
files (*.md: their ```cpp blocks) are read; not those under a top-level folder whose name
begins with `build`, nor under any folder whose name begins with a dot.

Comments, string literals (raw ones too) and character literals are not looked into; a digit
separator (1'000) is no literal. Not seen: a macro of our own that expands to an `if` (there is
none). Reported though harmless: a coroutine lambda written inside a condition.

A line that holds `await-in-condition: intended` is not reported: the audit's probe
(tests/tools/coro_frame_probe.cpp), which must hold the pattern. The check needs at least one
such line among what it reads and fails without it: that is how it shows it sees the pattern.
Exit 0: no site but the intended ones; 1: some (listed as FILE:LINE), no intended one seen, or
no file read.
"""
import os
import re
import sys

HEAD = re.compile(r"\b(?:if|while|switch|for)\s*(?:constexpr\s*)?\(|\b(?:GTEST_)?(?:EXPECT|ASSERT)_[A-Z0-9_]+\s*\(")
AWAIT = re.compile(r"\b(?:co_await|co_yield)\b")
MARK = "await-in-condition: intended"
CPP = (".cpp", ".cc", ".hpp", ".h", ".ipp", ".inl")
RAW = re.compile(r'R"([^()\\\s"]{0,16})\(')


def blank(text, i, j):
    """text[i:j] as spaces, its line ends kept."""
    return re.sub(r"[^\n]", " ", text[i:j])


def code_only(text):
    """`text` with the contents of each comment and literal replaced by spaces; same length,
    same line ends, so offsets and line numbers stay."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text, i, j))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(blank(text, i, j))
            i = j
        elif (m := RAW.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
                                            or text[i - 1] in "uU8L"):
            end = ")" + m.group(1) + '"'
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text, i, j))
            i = j
        elif c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum() \
                and re.search(r"(?:^|[^\w])(?:0[xXbB])?[0-9][\w']*$", text[max(0, i - 40):i]):
            out.append(c)  # a digit separator: 1'000, 0xFF'FF
            i += 1
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j, n)
            if j < n and text[j] == c:
                j += 1  # the closing quote; an unclosed literal ends before its line's end
            out.append(blank(text, i, j))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def markdown_code(text):
    """The C++ blocks (```cpp) of a Markdown text, everything else blanked (line ends kept)."""
    out, inside = [], False
    for line in text.split("\n"):
        fence = line.strip().startswith("```")
        if fence:
            inside = not inside and line.strip()[3:].strip().lower() in ("cpp", "c++")
            out.append("")
        else:
            out.append(line if inside else "")
    return "\n".join(out)


def sites(path):
    """(line, condition, intended) of each co_await in a condition of `path`."""
    raw = open(path, encoding="utf-8", errors="replace").read()
    text = code_only(markdown_code(raw) if path.endswith(".md") else raw)
    lines = raw.split("\n")
    for m in HEAD.finditer(text):
        i, depth = m.end(), 1
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        condition = text[m.end():i - 1]
        if not AWAIT.search(condition):
            continue
        line = text.count("\n", 0, m.start()) + 1
        yield line, " ".join((m.group(0) + condition + ")").split()), MARK in lines[line - 1]


def sources(paths):
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        if not os.path.isdir(path):
            yield path
            continue
        for top, dirs, files in os.walk(path):
            at_top = os.path.samefile(top, path)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (at_top and d.startswith("build")))
            yield from (os.path.join(top, f) for f in sorted(files) if f.endswith(CPP + (".md",)))


def main(paths):
    try:
        files = list(sources(paths))
    except FileNotFoundError as e:
        print(f"no such file or folder: {e}", file=sys.stderr)
        return 1
    if not files:
        print("no file to read", file=sys.stderr)
        return 1
    found = intended = 0
    for path in files:
        for line, what, meant in sites(path):
            if meant:
                intended += 1
                continue
            print(f"{path}:{line}: co_await in a condition: {what[:160]}")
            found += 1
    if found:
        print(f"{found} co_await(s) in a condition: await into a named local first (docs/libmailnet.md)")
        return 1
    if not intended:
        print(f"no site marked '{MARK}' was seen in {len(files)} files: the check does not see the pattern "
              "(or the probe is not among them)")
        return 1
    print(f"no co_await in a condition in {len(files)} files (the {intended} intended site(s) seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
