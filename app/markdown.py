"""A small Markdown -> HTML renderer that keeps per-character token provenance.

Chat answers stream in token by token, and each character knows whether the draft proposed it
(accepted) or the target produced it itself; the renderer tints literal text by that source while
still rendering fenced code blocks (with a copy link), headings, lists, quotes and inline
`code` / **bold** / *italic*. An unclosed fence renders as code, so streaming looks right.
Pure: no Qt.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

NONE, DRAFT, TARGET, PROMPT, NGRAM, JACOBI = 0, 1, 2, 3, 4, 5
# drafted-and-accepted tokens by who proposed them (engine TokenTree.sources)
SOURCE_CODES = {"draft": DRAFT, "prompt": PROMPT, "ngram": NGRAM, "jacobi": JACOBI}
DRAFTED = frozenset(SOURCE_CODES.values())
TINTS = {DRAFT: "#d5f0d8", TARGET: "#f9dfc4"}  # background per source (light appearance)
# the colours render() paints with; app/theme.py passes a dark set in dark mode
LIGHT_COLORS = {"draft": TINTS[DRAFT], "target": TINTS[TARGET], "prompt": "#cfe3fa",
                "ngram": "#eed7f5", "jacobi": "#f5efbf", "code_bg": "#eeeeee",
                "block_bg": "#f4f4f4", "block_border": "#dddddd", "muted": "#777777",
                "quote": "#555555"}
COPY_SCHEME = "copy"  # anchors "copy:N" copy code block N

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+#.-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+")
_BULLET = re.compile(r"^\s*[-*+]\s+")
_ORDERED = re.compile(r"^\s*\d+[.)]\s+")
_QUOTE = re.compile(r"^\s*>\s?")
_INLINE = re.compile(r"`([^`\n]+)`|\*\*([^*\n]+)\*\*|__([^_\n]+)__|\*([^*\n]+)\*")


@dataclass
class Rendered:
    html: str
    code_blocks: list[str]


class _Writer:
    def __init__(self, text: str, sources, tint: bool, colors: dict[str, str],
                 by_source: bool = False):
        self.text = text
        self.colors = colors
        # by source: each drafting source its colour; else every accepted draft token as "draft"
        self.tints = {code: colors[name] if by_source else colors["draft"]
                      for name, code in SOURCE_CODES.items()} | {TARGET: colors["target"]}
        self.sources = sources if (tint and sources is not None) else None
        self.out: list[str] = []

    def literal(self, start: int, end: int) -> None:
        """Escaped text[start:end], wrapped in tint spans by source runs."""
        if start >= end:
            return
        if self.sources is None:
            self.out.append(html.escape(self.text[start:end]))
            return
        def color_at(k: int) -> str | None:  # runs join by colour: sources may share one
            return self.tints.get(self.sources[k] if k < len(self.sources) else NONE)

        i = start
        while i < end:
            color = color_at(i)
            j = i + 1
            while j < end and color_at(j) == color:
                j += 1
            chunk = html.escape(self.text[i:j])
            self.out.append(f'<span style="background-color:{color}">{chunk}</span>'
                            if color else chunk)
            i = j

    def inline(self, start: int, end: int) -> None:
        pos = start
        for m in _INLINE.finditer(self.text, start, end):
            self.literal(pos, m.start())
            group = next(g for g in range(1, 5) if m.group(g) is not None)
            tag = {1: "code", 2: "b", 3: "b", 4: "i"}[group]
            open_tag = (f'<code style="background-color:{self.colors["code_bg"]}">' if tag == "code"
                        else f"<{tag}>")
            self.out.append(open_tag)
            self.literal(m.start(group), m.end(group))
            self.out.append(f"</{tag}>")
            pos = m.end()
        self.literal(pos, end)

    def raw(self, s: str) -> None:
        self.out.append(s)


def _lines(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for line in text.split("\n"):
        spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    return spans


def render(text: str, sources=None, tint: bool = True,
           colors: dict[str, str] | None = None, by_source: bool = False) -> Rendered:
    """HTML for `text`; `sources[i]` (NONE, TARGET or a SOURCE_CODES value) is the origin of
    character i. `by_source`: tint accepted draft tokens by who proposed them (draft model,
    prompt lookup, n-gram pool, Jacobi window), else all alike.

    `colors` (keys as LIGHT_COLORS) follow the window's appearance; default LIGHT_COLORS.
    """
    c = colors or LIGHT_COLORS
    w = _Writer(text, sources, tint, c, by_source)
    blocks: list[str] = []
    lines = _lines(text)
    i, n = 0, len(lines)
    list_tag: str | None = None

    def close_list():
        nonlocal list_tag
        if list_tag:
            w.raw(f"</{list_tag}>")
            list_tag = None

    while i < n:
        s, e = lines[i]
        line = text[s:e]
        fence = _FENCE.match(line)
        if fence:
            close_list()
            lang = fence.group(2)
            j = i + 1
            while j < n and not _FENCE.match(text[lines[j][0]:lines[j][1]]):
                j += 1
            code_start = lines[i + 1][0] if i + 1 < n else e
            code_end = lines[j - 1][1] if j - 1 > i else code_start
            blocks.append(text[code_start:code_end])
            label = html.escape(lang) + " · " if lang else ""
            w.raw(
                '<table width="100%" cellspacing="0" cellpadding="6" '
                f'style="background-color:{c["block_bg"]}; border:1px solid {c["block_border"]}; '
                'margin:4px 0px">'
                f'<tr><td align="right" style="color:{c["muted"]}; font-size:small">{label}'
                f'<a href="{COPY_SCHEME}:{len(blocks) - 1}">Copy</a></td></tr><tr><td>'
                '<pre style="margin:0px; font-family:monospace">'
            )
            w.literal(code_start, code_end)
            w.raw("</pre></td></tr></table>")
            i = j + 1
            continue
        if not line.strip():
            close_list()
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            close_list()
            level = min(len(heading.group(1)) + 2, 6)  # h3.. so answers don't shout
            w.raw(f"<h{level}>")
            w.inline(s + heading.end(), e)
            w.raw(f"</h{level}>")
            i += 1
            continue
        bullet = _BULLET.match(line) or _ORDERED.match(line)
        if bullet:
            tag = "ul" if _BULLET.match(line) else "ol"
            if list_tag != tag:
                close_list()
                w.raw(f"<{tag}>")
                list_tag = tag
            w.raw("<li>")
            w.inline(s + bullet.end(), e)
            w.raw("</li>")
            i += 1
            continue
        close_list()
        quote = _QUOTE.match(line)
        if quote:
            w.raw(f'<blockquote style="color:{c["quote"]}">')
            w.inline(s + quote.end(), e)
            w.raw("</blockquote>")
            i += 1
            continue
        # a paragraph: consecutive plain lines joined by <br>
        w.raw("<p>")
        first = True
        while i < n:
            s, e = lines[i]
            line = text[s:e]
            if not line.strip() or _FENCE.match(line) or _HEADING.match(line) or \
                    _BULLET.match(line) or _ORDERED.match(line) or _QUOTE.match(line):
                break
            if not first:
                w.raw("<br>")
            w.inline(s, e)
            first = False
            i += 1
        w.raw("</p>")
    close_list()
    return Rendered("".join(w.out), blocks)
