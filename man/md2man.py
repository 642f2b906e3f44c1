#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""md2man - a manual page (roff, man macros) from one of cowpool's docs.

    md2man.py SOURCE.md NAME SECTION VERSION OUTPUT

The docs are the one source: docs/cowpool.md is cowpool(1), docs/cowpoold.md
cowpoold(8).  This reads the small Markdown subset they are written in:
headings (a code block under the title is the SYNOPSIS), paragraphs, fenced code blocks, bullet and numbered lists, pipe
tables, `code`, **bold**, *emphasis* and [links](target).  The first
heading, "name(N) — summary", becomes the NAME section.  Anything else is
kept as text, so a page never loses words, only formatting.
"""
import re
import sys


def esc(text):
    """Escape roff specials in running text."""
    text = text.replace("\\", "\\e")
    text = text.replace("—", "\\(em").replace("–", "\\(en")
    text = text.replace("→", "->").replace("←", "<-")
    text = text.replace("≤", "<=").replace("≥", ">=").replace("×", "x")
    return text


def inline(text):
    """Markdown inline markup to roff font changes."""
    out = []
    pos = 0
    pat = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|"
                     r"\[([^\]]+)\]\(([^)]+)\)")
    for m in pat.finditer(text):
        out.append(esc(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + esc(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + esc(m.group(2)) + "\\fR")
        elif m.group(3) is not None:
            out.append("\\fI" + esc(m.group(3)) + "\\fR")
        else:
            label, target = m.group(4), m.group(5)
            out.append(inline(label))
            if not target.startswith("#"):
                out.append(" (" + esc(target) + ")")
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def line_out(s):
    """A text line, protected when it starts like a roff request."""
    if s.startswith(".") or s.startswith("'"):
        return "\\&" + s
    return s


def table_cells(row):
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells = re.split(r"(?<!\\)\|", row)
    return [c.strip().replace("\\|", "|") for c in cells]


def convert(src, name, section, version):
    lines = src.split("\n")
    out = ['.\\" Generated from the docs by man/md2man.py: edit the .md file.',
           '.TH "%s" "%s" "" "cowpool %s" "cowpool"' % (
               name.upper(), section, version)]
    i = 0
    # NAME from the title line
    if lines and lines[0].startswith("# "):
        title = lines[0][2:].strip()
        m = re.match(r"([\w-]+)\(\d\)\s*[—-]+\s*(.*)", title)
        summary = m.group(2) if m else title
        out += [".SH NAME", line_out(esc(name) + " \\- " + inline(summary))]
        i = 1
    para = []
    # A code block right under the title is the synopsis; the text after
    # it, up to the first section, the description.
    j = i
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j < len(lines) and lines[j].startswith("```"):
        k = j + 1
        syn = []
        while k < len(lines) and not lines[k].startswith("```"):
            syn.append(lines[k])
            k += 1
        out += [".SH SYNOPSIS", ".nf"]
        out += [line_out(esc(x)) for x in syn]
        out += [".fi", ".SH DESCRIPTION"]
        i = k + 1

    def flush():
        if para:
            out.append(".PP")
            for p in para:
                out.append(line_out(inline(p)))
            para.clear()

    while i < len(lines):
        ln = lines[i]
        if ln.startswith("```"):
            flush()
            out += [".PP", ".nf", ".RS 4"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(line_out(esc(lines[i])))
                i += 1
            out += [".RE", ".fi"]
            i += 1
            continue
        m = re.match(r"(#{2,6})\s+(.*)", ln)
        if m:
            flush()
            level = len(m.group(1))
            text = m.group(2).strip()
            if level == 2:
                out.append('.SH "%s"' % inline(text).upper().replace('"', "'"))
            else:
                out.append('.SS "%s"' % inline(text).replace('"', "'"))
            i += 1
            continue
        if ln.startswith("|") and i + 1 < len(lines) and \
                re.match(r"^\|?\s*:?-{3,}", lines[i + 1]):
            flush()
            head = table_cells(ln)
            i += 2
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(table_cells(lines[i]))
                i += 1
            # one tagged paragraph per row: the first cell is the tag, the
            # other cells follow under their column names
            for r in rows:
                out.append(".TP")
                out.append(line_out(inline(r[0]) if r else ""))
                rest = []
                for k in range(1, len(r)):
                    h = head[k] if k < len(head) and head[k] else ""
                    cell = inline(r[k])
                    rest.append((inline(h) + ": " if h and len(r) > 2 else "")
                                + cell)
                out.append(line_out("; ".join(rest) if rest else ""))
            continue
        m = re.match(r"^(\s*)([*+-]|\d+\.)\s+(.*)", ln)
        if m:
            flush()
            indent = len(m.group(1))
            bullet = "\\(bu" if not m.group(2)[0].isdigit() else m.group(2)
            item = [m.group(3)]
            i += 1
            while i < len(lines) and lines[i].strip() and \
                    not re.match(r"^\s*([*+-]|\d+\.)\s+", lines[i]) and \
                    not lines[i].startswith("```") and \
                    not lines[i].startswith("#"):
                item.append(lines[i].strip())
                i += 1
            if indent:
                out.append(".RS 4")
            out.append('.IP "%s" 4' % bullet)
            for p in item:
                out.append(line_out(inline(p)))
            if indent:
                out.append(".RE")
            continue
        if not ln.strip():
            flush()
            i += 1
            continue
        para.append(ln.strip())
        i += 1
    flush()
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 6:
        sys.stderr.write("usage: md2man.py SOURCE.md NAME SECTION VERSION "
                         "OUTPUT\n")
        return 2
    src, name, section, version, dst = sys.argv[1:]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    page = convert(text, name, section, version)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
