"""Showing untrusted text (prompts, model output, annotators' words) as formatted text.

Everything the app shows that nobody here wrote goes through ``render_untrusted_markdown``:
markdown-it parses it with raw HTML disabled, so ``<div>`` in the text is shown as the
characters ``<div>``; the renderer turns images into plain links and math into MathML; nh3
(the Rust ``ammonia`` sanitizer) then keeps only an allowed set of elements and attributes, so
even a renderer bug cannot let markup through. The result goes into a ``gr.HTML`` component
as is: Gradio's own markdown pass would read the text a second time.
"""

from __future__ import annotations

import bisect
import html
import itertools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

from data.rankings import candidate_letter

# Text longer than this is shown as a preview with the rest behind "show all": a page with a
# few hundred thousand characters per candidate stays responsive.
COLLAPSE_CHARS = 6000
PREVIEW_CHARS = 1500
# Larger formulas are shown as TeX source: converting them costs more than they are worth.
MAX_MATH_CHARS = 4000

MATHML_TAGS = {
    "math", "mi", "mn", "mo", "ms", "mspace", "mtext", "mrow", "mfrac", "msqrt", "mroot",
    "mstyle", "merror", "mpadded", "mphantom", "menclose", "msub", "msup", "msubsup", "munder",
    "mover", "munderover", "mmultiscripts", "mprescripts", "none", "mtable", "mtr", "mtd",
    "semantics", "annotation",
}
ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code",
    "pre", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a",
    "div", "span", "details", "summary", "wbr",
} | MATHML_TAGS
"""Every element a rendered text may contain; the browser tests assert nothing else appears."""

_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"style"}, "td": {"style"},  # table column alignment, filtered to text-align
    "math": {"display"},
    "mo": {"stretchy", "fence", "separator", "lspace", "rspace", "form", "largeop",
           "movablelimits", "accent"},
    "mover": {"accent"}, "munder": {"accentunder"},
    "mstyle": {"displaystyle", "scriptlevel", "mathvariant"},
    "mi": {"mathvariant"}, "mtext": {"mathvariant"},
    "mspace": {"width"}, "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mtable": {"columnalign", "rowspacing", "columnspacing"}, "mtd": {"columnalign"},
    "annotation": {"encoding"},
}
_CLASSES = {"div": {"rl-md", "rl-long", "rl-preview", "rl-turn", "rl-role", "math", "block"},
            "span": {"rl-image-link", "math", "inline"}, "code": {"rl-math-source"}}
_SCHEMES = {"http", "https", "mailto"}


def _keep_attribute(tag: str, attr: str, value: str) -> str | None:
    # Only absolute web and mail links: no javascript:, data: or relative app routes (a link
    # to /logout is not something a candidate should offer).
    if attr == "href":
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        return value if scheme in _SCHEMES else None
    return value


_CLEANER = nh3.Cleaner(
    tags=ALLOWED_TAGS, attributes=_ATTRIBUTES, allowed_classes=_CLASSES,
    attribute_filter=_keep_attribute, url_schemes=_SCHEMES,
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    filter_style_properties={"text-align"}, strip_comments=True,
    clean_content_tags={"script", "style"},
)


LONG_RUN_CHARS = 200
"""A run of text without a space at least this long gets a line-break opportunity (``<wbr>``)
every ``BREAK_EVERY`` characters."""
BREAK_EVERY = 32
_TAG = re.compile(r'(<[^>"]*(?:"[^"]*"[^>"]*)*>)')  # the serializer quotes attributes with "
_LONG_RUN = re.compile(r"[^\s<]{%d,}" % LONG_RUN_CHARS)


def _joins_previous(ch: str) -> bool:
    """Marks, joiners and modifiers that belong to the character before them."""
    return (unicodedata.category(ch)[0] == "M" or ch == "\u200d" or "\ufe00" <= ch <= "\ufe0f"
            or "\U0001f3fb" <= ch <= "\U0001f3ff" or "\U000e0020" <= ch <= "\U000e007f")


def _break_run(match: re.Match) -> str:
    run, parts, start = match.group(0), [], 0
    while len(run) - start > BREAK_EVERY:
        cut = start + BREAK_EVERY
        amp = run.rfind("&", start + 1, cut)
        if amp != -1 and run.find(";", amp, cut) == -1:
            cut = amp  # never inside an entity such as &amp;
        while cut < len(run) and (_joins_previous(run[cut]) or run[cut - 1] == "\u200d"):
            cut += 1
        if cut >= len(run):
            break
        parts.append(run[start:cut])
        start = cut
    parts.append(run[start:])
    return "<wbr>".join(parts)


def breakable(markup: str) -> str:
    """``markup`` (serialized, escaped HTML) with a ``<wbr>`` every ``BREAK_EVERY`` characters
    of each text run longer than ``LONG_RUN_CHARS`` without a space. A browser breaks such a
    run only where it overflows, and finds where by scanning to the run's end for each line:
    a 300,000-character run in a script broken by dictionary (Thai, Khmer) froze the tab for
    half a minute and more. The text itself, and what is copied from it, is unchanged."""
    parts = _TAG.split(markup)
    for n in range(0, len(parts), 2):  # the even parts are text between tags
        if len(parts[n]) >= LONG_RUN_CHARS:
            parts[n] = _LONG_RUN.sub(_break_run, parts[n])
    return "".join(parts)


def _render_image(self, tokens, idx, options, env) -> str:
    # Never fetched: an image becomes a link the annotator may choose to open.
    token = tokens[idx]
    alt = self.renderInline(token.children or [], options, env) or "image"
    src = html.escape(token.attrGet("src") or "")
    return f'<a href="{src}"><span class="rl-image-link">[image: {alt}]</span></a>'


def _render_math(tex: str, options: dict) -> str:
    display = bool(options.get("display_mode"))
    if len(tex) <= MAX_MATH_CHARS:
        try:
            return latex_to_mathml(tex, display="block" if display else "inline")
        except Exception:  # noqa: BLE001 - any parse failure shows the source instead
            pass
    return f'<code class="rl-math-source">{html.escape(tex)}</code>'


def _render_heading(self, tokens, idx, options, env) -> str:
    # Headings inside a text sit below the titles around it (a candidate's "# Answer" must not
    # look bigger than "Candidate A"): env["heading_offset"] levels down, h6 at most.
    token = tokens[idx]
    level = min(6, int(token.tag[1]) + int(env.get("heading_offset", 0)))
    return f"<h{level}>" if token.nesting == 1 else f"</h{level}>\n"


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.use(dollarmath_plugin, allow_space=False, double_inline=True,
           renderer=_render_math)
    md.add_render_rule("image", _render_image)
    md.add_render_rule("heading_open", _render_heading)
    md.add_render_rule("heading_close", _render_heading)
    return md


_MD = _markdown()


def render_untrusted_markdown(text: str, *, heading_offset: int = 0) -> str:
    """Safe HTML for untrusted markdown ``text``, for a ``gr.HTML`` component.

    Contract: the result contains only ``ALLOWED_TAGS``; no element loads anything by itself
    (no img, iframe, style, form or script); links are absolute http(s)/mailto, open in a new
    tab on click only and carry ``rel="noopener noreferrer nofollow"``; no event handler or
    inline style other than table alignment. Markdown (headings, lists, tables, blockquotes,
    code, ``$``/``$$`` math) keeps its formatting. Text over ``COLLAPSE_CHARS`` shows a preview
    and the whole text behind a "Show all" control; the text itself is never altered.
    ``heading_offset`` moves its headings that many levels down (h1 becomes h4 with 3).
    """
    text = text or ""
    env = {"heading_offset": heading_offset}
    body = breakable(_CLEANER.clean(_MD.render(text, env)))
    if len(text) <= COLLAPSE_CHARS:
        return f'<div class="rl-md">{body}</div>'
    preview = breakable(_CLEANER.clean(_MD.render(text[:PREVIEW_CHARS] + " …", dict(env))))
    return (f'<div class="rl-md rl-long"><div class="rl-preview">{preview}</div>'
            f"<details><summary>Show all ({len(text):,} characters)</summary>{body}</details>"
            "</div>")


# Texts inside the screen sit under its h3 titles ("Prompt", "Candidate A"): their own
# headings start at h4.
CONTENT_HEADING_OFFSET = 3
_ROLE_CLASSES = {"system", "user", "assistant", "tool"}


def _bubble(message: dict) -> str:
    role = str(message.get("role", ""))
    css = role if role in _ROLE_CLASSES else "other"
    return (f'<div class="rl-turn rl-bubble rl-role-{css}"><div class="rl-role">'
            f'{html.escape(role.capitalize())}</div>'
            f'{render_untrusted_markdown(message["content"], heading_offset=CONTENT_HEADING_OFFSET)}'
            "</div>")


def conversation_html(messages: list[dict]) -> str:
    """The prompt as the annotator reads it: a single question as text; a conversation as chat
    bubbles, its earlier turns folded away behind one control and the final turn last."""
    if len(messages) == 1:
        return render_untrusted_markdown(messages[0]["content"],
                                         heading_offset=CONTENT_HEADING_OFFSET)
    # The system prompt sets the rules the answers follow: always in view, above the fold.
    system = [m for m in messages[:-1] if m.get("role") == "system"]
    earlier = [m for m in messages[:-1] if m.get("role") != "system"]
    last = messages[-1]
    fold = ""
    if earlier:
        turns = "s" if len(earlier) != 1 else ""
        fold = (f'<details class="rl-earlier"><summary>Earlier in the conversation '
                f'({len(earlier)} turn{turns})</summary>'
                f'{"".join(_bubble(m) for m in earlier)}</details>')
    return (f'<div class="rl-chat">{"".join(_bubble(m) for m in system)}{fold}'
            f'{_bubble(last)}</div>')


def message_html(text: str) -> str:
    """One of the app's own messages, in the same place as a prompt."""
    return f'<div class="rl-md"><p>{html.escape(text)}</p></div>'


def candidate_html(text: str) -> str:
    if not text.strip():
        return '<div class="rl-md"><p><em>(empty response)</em></p></div>'
    return render_untrusted_markdown(text, heading_offset=CONTENT_HEADING_OFFSET)


def candidate_title(index: int) -> str:
    return f"Candidate {candidate_letter(index)}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 candidate``, ``2 candidates``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def letters_list(indices: Sequence[int]) -> str:
    """``B``, ``B and C``, ``A, B and D``."""
    names = [candidate_letter(i) for i in indices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --- word diff ----------------------------------------------------------------------------------

MAX_DIFF_CHARS = 100_000
"""Longer texts are not compared: the view says so instead (the comparison stays near-linear,
but a page showing two such texts marked word by word does not)."""
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
_EXACT_CELLS = 100_000
"""Token pairs the exact comparison may visit in one diff, over all the gaps that have no
anchor; a gap beyond what is left is shown as a replacement."""
_LEVELS = 16
"""Nested levels of anchors at most (each costs at most O(n log n) over the whole text)."""


def _unique_anchors(a, b, alo, ahi, blo, bhi) -> list[tuple[int, int]]:
    """Positions (i, j) of tokens that occur once in ``a[alo:ahi]`` and once in
    ``b[blo:bhi]``, the longest subsequence of them in the same order on both sides."""
    count_a = Counter(a[alo:ahi])
    count_b = Counter(b[blo:bhi])
    where_b = {b[j]: j for j in range(blo, bhi)
               if count_b[b[j]] == 1 and count_a.get(b[j]) == 1}
    pairs = [(i, where_b[a[i]]) for i in range(alo, ahi) if a[i] in where_b]
    # Longest increasing run of j (patience sorting): O(k log k).
    tails: list[int] = []
    tail_at: list[int] = []
    back = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tail_at.append(n)
        else:
            tails[k], tail_at[k] = j, n
        back[n] = tail_at[k - 1] if k else -1
    chain, n = [], tail_at[-1] if tail_at else -1
    while n != -1:
        chain.append(pairs[n])
        n = back[n]
    return chain[::-1]


def _exact_matches(a, b, alo, ahi, blo, bhi) -> list[tuple[int, int, int]]:
    """A longest common subsequence of two small gaps, by dynamic programming."""
    la, lb = ahi - alo, bhi - blo
    table = [[0] * (lb + 1) for _ in range(la + 1)]
    for i in range(la - 1, -1, -1):
        row, below, x = table[i], table[i + 1], a[alo + i]
        for j in range(lb - 1, -1, -1):
            row[j] = below[j + 1] + 1 if x == b[blo + j] else max(below[j], row[j + 1])
    matches, i, j = [], 0, 0
    while i < la and j < lb:
        if a[alo + i] == b[blo + j]:
            matches.append((alo + i, blo + j, 1))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return matches


def _matching_blocks(a: list[str], b: list[str]) -> list[tuple[int, int, int]]:
    """Runs ``(i, j, n)`` of equal tokens, in order, as a patience diff finds them: the common
    start and end are matched, then tokens found once on each side anchor the match in their
    longest common order, and each gap between anchors is matched the same way; a gap with
    no such token is matched exactly while ``_EXACT_CELLS`` lasts, else it is a replacement.

    Unlike ``difflib``, whose cost on unrelated texts grows with the cube of their length,
    this costs O(n log n) per level of gaps, with at most ``_LEVELS`` levels."""
    blocks: list[tuple[int, int, int]] = []
    cells = _EXACT_CELLS
    gaps = [(0, len(a), 0, len(b), 0)]
    while gaps:
        alo, ahi, blo, bhi, level = gaps.pop()
        n = 0
        while alo + n < ahi and blo + n < bhi and a[alo + n] == b[blo + n]:
            n += 1
        if n:
            blocks.append((alo, blo, n))
            alo, blo = alo + n, blo + n
        n = 0
        while ahi - n > alo and bhi - n > blo and a[ahi - n - 1] == b[bhi - n - 1]:
            n += 1
        if n:
            blocks.append((ahi - n, bhi - n, n))
            ahi, bhi = ahi - n, bhi - n
        if alo == ahi or blo == bhi:
            continue
        anchors = _unique_anchors(a, b, alo, ahi, blo, bhi) if level < _LEVELS else []
        if not anchors:
            size = (ahi - alo) * (bhi - blo)
            if size <= cells and not set(a[alo:ahi]).isdisjoint(b[blo:bhi]):
                cells -= size
                blocks += _exact_matches(a, b, alo, ahi, blo, bhi)
            continue
        for i, j in anchors:
            blocks.append((i, j, 1))
            gaps.append((alo, i, blo, j, level + 1))
            alo, blo = i + 1, j + 1
        gaps.append((alo, ahi, blo, bhi, level + 1))
    return sorted(blocks)


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """``difflib``-style (tag, i1, i2, j1, j2) spans, with ``equal``, ``replace``, ``delete``
    and ``insert`` tags."""
    ops, i, j = [], 0, 0
    for bi, bj, n in [*_matching_blocks(a, b), (len(a), len(b), 0)]:
        if i < bi or j < bj:
            tag = "replace" if i < bi and j < bj else "delete" if i < bi else "insert"
            ops.append((tag, i, bi, j, bj))
        if n:
            if ops and ops[-1][0] == "equal" and ops[-1][2] == bi and ops[-1][4] == bj:
                ops[-1] = ("equal", ops[-1][1], bi + n, ops[-1][3], bj + n)
            else:
                ops.append(("equal", bi, bi + n, bj, bj + n))
        i, j = bi + n, bj + n
    return ops


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """The changes from ``a`` to ``b`` as (op, text) runs, op one of ``same``, ``del`` (only in
    a), ``ins`` (only in b). Joining the ``same`` and ``del`` runs gives ``a`` back; ``same``
    and ``ins`` give ``b``.

    >>> word_diff("the cat sat", "the dog sat")
    [('same', 'the '), ('del', 'cat'), ('ins', 'dog'), ('same', ' sat')]
    """
    ta, tb = _TOKEN.findall(a or ""), _TOKEN.findall(b or "")
    ops = []
    for tag, i1, i2, j1, j2 in _opcodes(ta, tb):
        if tag == "equal":
            ops.append(("same", "".join(ta[i1:i2])))
        else:
            ops.append(("del", "".join(ta[i1:i2])))
            ops.append(("ins", "".join(tb[j1:j2])))
    # Neighbouring replacements with only spaces between them read as one ("three quarters"
    # became "two thirds"), not as word-by-word alternation.
    runs: list[tuple[str, str]] = []
    deleted = inserted = ""
    for n, (op, text) in enumerate(ops):
        if op == "del":
            deleted += text
        elif op == "ins":
            inserted += text
        elif (text.isspace() and deleted and inserted and n + 1 < len(ops)
              and ops[n + 1][0] != "same" and any(ops[n + 1][1:])):
            deleted, inserted = deleted + text, inserted + text
        else:
            runs += [r for r in (("del", deleted), ("ins", inserted)) if r[1]]
            deleted = inserted = ""
            if text:
                runs.append(("same", text))
    runs += [r for r in (("del", deleted), ("ins", inserted)) if r[1]]
    merged: list[tuple[str, str]] = []
    for op, text in runs:
        if merged and merged[-1][0] == op:
            merged[-1] = (op, merged[-1][1] + text)
        else:
            merged.append((op, text))
    return merged


def word_diff_html(a: str, b: str, label_a: str, label_b: str) -> str:
    """The diff of two candidates as escaped text: words only in ``a`` struck through, words
    only in ``b`` underlined, with a one-line summary. Texts over ``MAX_DIFF_CHARS`` are not
    compared; the view says why."""
    la, lb = html.escape(label_a), html.escape(label_b)
    longest = max(len(a or ""), len(b or ""))
    if longest > MAX_DIFF_CHARS:
        return (f'<div class="rl-diff"><h3>Differences between {la} and {lb}</h3>'
                f'<p class="rl-diff-summary rl-diff-too-long">Not compared: '
                f'{la if len(a or "") == longest else lb} has {longest:,} characters, and the '
                f"differences are shown for texts of up to {MAX_DIFF_CHARS:,}. Read the two "
                f"candidates side by side instead.</p></div>")
    runs = word_diff(a, b)
    changed = sum(len(_TOKEN.findall(t)) - len(re.findall(r"\s+", t))
                  for op, t in runs if op != "same")
    parts = []
    for op, text in runs:
        escaped = breakable(html.escape(text))
        parts.append(escaped if op == "same" else
                     f'<span class="rl-diff-{op}">{escaped}</span>')
    summary = ("The two texts are identical." if changed == 0 else
               f"{plural(changed, 'word')} differ: <span class=\"rl-diff-del\">only in {la}"
               f"</span>, <span class=\"rl-diff-ins\">only in {lb}</span>.")
    return (f'<div class="rl-diff"><h3>Differences between {la} and {lb}</h3>'
            f'<p class="rl-diff-summary">{summary}</p>'
            f'<div class="rl-diff-text">{"".join(parts)}</div></div>')


# --- the Rank tab's screen ----------------------------------------------------------------------

BADGES = {"cut": "Cut off at the token limit", "empty": "Empty answer",
          "duplicate": "Same text as another candidate"}
LAYOUT_NAMES = {"side-by-side": "Side by side", "two-up": "Two per row", "stacked": "Stacked"}

def keys_legend(k: int, revise: bool, guidelines: bool = True) -> tuple[tuple[str, str], ...]:
    """The keys the task screen answers, with the real rank range; no skip when revising, no
    guidelines key when there are none."""
    keys = [(f"1–{min(k, 9)}", "rank the highlighted candidate (1 = best)"),
            ("← → / J K", "move the highlight"), ("Enter", "submit"),
            ("Ctrl+Enter", "submit from a text field"), ("S", "skip"), ("X", "all bad"),
            ("R", "write why"), ("E", "expand"), ("D", "differences with the next"),
            ("?", "guidelines"), ("Esc", "close, or leave a text field")]
    return tuple(kv for kv in keys if not (revise and kv[0] == "S")
                 and not (not guidelines and kv[0] == "?"))


def candidate_badges(text: str, finish_reason: str | None,
                     duplicate: bool = False) -> tuple[str, ...]:
    """Marks on a candidate: cut off by the token limit, empty, the same text as another
    candidate of the item (an annotator would otherwise hunt for a difference that is not
    there)."""
    badges = []
    if finish_reason == "length":
        badges.append("cut")
    if not (text or "").strip():
        badges.append("empty")
    if duplicate:
        badges.append("duplicate")
    return tuple(badges)


@dataclass(frozen=True)
class CandidateView:
    html: str
    badges: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notice:
    """The line above the task: ``ok`` (saved), ``error`` (not saved), ``info``."""
    kind: str
    text: str
    ranking_id: int | None = None
    """The vote just stored, offered to be changed."""


@dataclass(frozen=True)
class Controls:
    """What the screen's controls start from: a draft, a suggestion, a refused submission."""
    ranks: tuple[int | None, ...]
    all_bad: bool = False
    rationale: str = ""
    demonstration: str = ""
    from_draft: bool = False
    """The annotator's own saved draft, which the screen then says it restored."""


# Each screen carries a new number, so the page redraws it even when the same text comes back
# (a refusal repeated, the same differences asked twice).
_SCREEN_NUMBERS = itertools.count(1)


def _attr(value) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Guidelines:
    """The project's guidelines as one screen carries them."""
    html: str
    """Rendered by ``render_untrusted_markdown`` (the admin's markdown, raw HTML escaped)."""
    version: str | None
    changed: bool = False
    """True when they changed since this annotator last opened them (or never opened)."""


NO_GUIDELINES = Guidelines("", None)


def guidelines_html(text: str) -> str:
    return render_untrusted_markdown(text, heading_offset=2)


def _guide_button(guide: Guidelines) -> str:
    if guide.version is None:
        return ""
    mark = ('<span class="rl-guide-new" id="rl-guide-new"> · updated</span>'
            if guide.changed else "")
    return (f'<button type="button" class="rl-link-btn" id="rl-guide-btn" '
            f'data-rl-action="guidelines" aria-controls="rl-guidelines" aria-expanded="false">'
            f'Guidelines{mark}<span class="rl-key-hint"> (?)</span></button>')


def _guide_panel(guide: Guidelines) -> str:
    """A side panel over the page (opened with ``?``): the task under it does not move."""
    if guide.version is None:
        return ""
    return (f'<aside class="rl-guide rl-closed" id="rl-guidelines" role="dialog" '
            f'aria-label="Guidelines" data-version="{_attr(guide.version)}">'
            f'<div class="rl-guide-head"><strong>Guidelines</strong>'
            f'<button type="button" data-rl-action="guidelines">Close'
            f'<span class="rl-key-hint"> (Esc)</span></button></div>{guide.html}</aside>')


def _notice_html(notice: Notice | None) -> str:
    if notice is None:
        return '<div id="rl-message" class="rl-msg rl-msg-none" role="status"></div>'
    change = ""
    if notice.ranking_id is not None:
        change = (f' <button type="button" class="rl-link-btn" data-rl-action="reopen" '
                  f'data-ranking="{notice.ranking_id}">Change it</button>')
    role = "alert" if notice.kind == "error" else "status"
    return (f'<div id="rl-message" class="rl-msg rl-msg-{_attr(notice.kind)}" role="{role}">'
            f'{html.escape(notice.text)}{change}</div>')


def _topline(progress: str, layout: str | None, guide: Guidelines = NO_GUIDELINES) -> str:
    layouts = ""
    if layout is not None:
        buttons = "".join(
            f'<button type="button" class="rl-layout-btn" data-rl-action="layout" '
            f'data-layout="{name}" aria-pressed="{str(name == layout).lower()}">{label}</button>'
            for name, label in LAYOUT_NAMES.items())
        layouts = f'<span class="rl-layouts" role="group" aria-label="Layout">{buttons}</span>'
    return (f'<div class="rl-topline"><span id="rl-progress">{html.escape(progress)}</span>'
            f'<button type="button" class="rl-link-btn" data-rl-action="recent">'
            f'Your last submissions</button>{_guide_button(guide)}{layouts}</div>')


def _rank_buttons(index: int, k: int, rank: int | None) -> str:
    return "".join(
        f'<button type="button" class="rl-rank-btn" tabindex="-1" data-rl-action="rank" '
        f'data-index="{index}" data-rank="{r}" aria-pressed="{str(r == rank).lower()}" '
        f'title="Rank {r}">{r}</button>' for r in range(1, k + 1))


def _legend(k: int, revise: bool, guidelines: bool) -> str:
    keys = " · ".join(f"<kbd>{html.escape(key)}</kbd> {html.escape(v)}"
                      for key, v in keys_legend(k, revise, guidelines))
    return f'<div class="rl-legend" id="rl-legend"><strong>Keys:</strong> {keys}</div>'


def task_screen_html(*, assignment_id: int, prompt_html: str,
                     candidates: Sequence[CandidateView], controls: Controls, layout: str,
                     progress: str, notice: Notice | None = None,
                     suggestion: str | None = None, unranked: Sequence[int] = (),
                     revises: int | None = None, guide: Guidelines = NO_GUIDELINES) -> str:
    """One task as the annotator sees it, controls included; the page's script
    (labeler/static/rank.js) keeps the ranks in the browser until submit.

    ``prompt_html`` and each candidate's ``html`` come from this module's renderers; every
    other text here is escaped. ``suggestion`` names the scorer the pre-filled ranks come from.
    ``unranked`` marks candidates a refused submission left without a rank. ``revises`` is the
    vote being changed (a revision screen: no skip, a cancel instead). ``guide`` is the
    project's guidelines, in a side panel that ``?`` opens.
    """
    k = len(candidates)
    state = {"ranks": list(controls.ranks), "all_bad": controls.all_bad,
             "suggested": suggestion is not None}
    missing = set(unranked)
    cards, bar = [], []
    for i, cand in enumerate(candidates):
        rank = controls.ranks[i] if i < len(controls.ranks) else None
        badges = "".join(f'<span class="rl-badge rl-badge-{b}">{BADGES[b]}</span>'
                         for b in cand.badges)
        flag = " rl-missing" if i in missing else ""
        letter = candidate_letter(i)
        cards.append(
            f'<article class="rl-candidate{flag}" id="rl-cand-{i}" data-index="{i}">'
            f'<header class="rl-cand-head"><h3 class="rl-cand-title">{candidate_title(i)}</h3>'
            f'{badges}<span class="rl-rank-pill" data-index="{i}"></span>'
            f'<span class="rl-cand-tools"><span class="rl-head-ranks" role="group" '
            f'aria-label="Rank of {candidate_title(i)}, 1 = best" title="1 = best">'
            f'{_rank_buttons(i, k, rank)}</span>'
            f'<button type="button" class="rl-tool-btn" data-rl-action="expand" '
            f'data-index="{i}" aria-expanded="false">Expand</button></span></header>'
            f'<div class="rl-cand-body" id="rl-text-{i}">{cand.html}</div></article>')
        bar.append(f'<div class="rl-bar-item{flag}" id="rl-rank-{i}" data-index="{i}" '
                   f'role="group" aria-label="Rank of {candidate_title(i)}">'
                   f'<button type="button" class="rl-bar-letter" tabindex="-1" '
                   f'data-rl-action="focus" data-index="{i}" title="Highlight {letter}">'
                   f'{letter}</button>{_rank_buttons(i, k, rank)}</div>')
    def options(chosen: int) -> str:
        return "".join(f'<option value="{i}"{" selected" if i == chosen else ""}>'
                       f'{candidate_letter(i)}</option>' for i in range(k))
    suggestion_note = ""
    if suggestion is not None:
        suggestion_note = (f'<div class="rl-suggestion" id="rl-suggestion">The ranks are a '
                           f'suggestion from the model scores ({html.escape(suggestion)}): '
                           f'check them and change any you disagree with.</div>')
    if revises is None:
        second = '<button type="button" id="rl-skip" data-rl-action="skip">Skip</button>'
        submit_label = "Submit"
    else:
        second = ('<button type="button" id="rl-cancel" data-rl-action="back">'
                  'Cancel</button>')
        submit_label = "Save the change"
    checked = " checked" if controls.all_bad else ""
    mode = "task" if revises is None else "revise"
    keys = f"Keys: 1–{min(k, 9)} rank · ←→ move · Enter submit" + (
        " · S skip" if revises is None else "") + (
        " · ? guidelines" if guide.version else "")
    return (
        f'<div class="rl-task rl-layout-{_attr(layout)}{" rl-many" if k > 4 else ""}" '
        f'data-mode="{mode}" '
        f'data-n="{next(_SCREEN_NUMBERS)}" '
        f'data-assignment="{assignment_id}" data-k="{k}" '
        f'data-revises="{"" if revises is None else revises}" '
        f'data-state="{_attr(json.dumps(state))}" tabindex="-1">'
        f'{_topline(progress, layout, guide)}{_notice_html(notice)}'
        f'<section class="rl-prompt-block"><h3 class="rl-section-title">Prompt</h3>'
        f'<div id="rl-prompt">{prompt_html}</div></section>{suggestion_note}'
        f'<div class="rl-candidates" id="rl-candidates">{"".join(cards)}</div>'
        f'<section class="rl-extra">'
        f'<label class="rl-check"><input type="checkbox" id="rl-all-bad"{checked}> '
        f'All candidates are bad</label>'
        f'<label class="rl-field" for="rl-rationale">Why? (optional)</label>'
        f'<textarea id="rl-rationale" rows="2">{html.escape(controls.rationale)}</textarea>'
        f'<details class="rl-demo"{" open" if controls.demonstration else ""}>'
        f'<summary>Write a better answer (optional)</summary>'
        f'<label class="rl-field" for="rl-demonstration">Your answer is stored as an example '
        f'and ranked above all candidates</label>'
        f'<textarea id="rl-demonstration" rows="6">{html.escape(controls.demonstration)}'
        f'</textarea></details>'
        f'<div class="rl-compare"><label>Show the differences between '
        f'<select id="rl-diff-a">{options(0)}</select> and <select id="rl-diff-b">{options(1)}'
        f'</select></label> <button type="button" data-rl-action="diff">Compare</button></div>'
        f'{_legend(k, revises is not None, guide.version is not None)}</section>'
        f'<div class="rl-bar" id="rl-bar"><div class="rl-bar-state" id="rl-bar-state" '
        f'aria-live="polite"><span class="rl-bar-label">Ranks: 1 = best</span> '
        f'<span id="rl-order" class="rl-order"></span>'
        f'<span id="rl-tie-note" class="rl-tie-note"></span>'
        f'<span id="rl-draft-state" class="rl-draft-state">'
        f'{"· draft restored" if controls.from_draft else ""}</span></div>'
        f'<div class="rl-bar-ranks">{"".join(bar)}</div>'
        f'<div class="rl-bar-actions"><button type="button" id="rl-bar-all-bad" '
        f'class="rl-all-bad-btn" data-rl-action="all-bad" aria-pressed="'
        f'{str(controls.all_bad).lower()}" title="All candidates are bad (X)">All bad'
        f'<span class="rl-key-hint"> (X)</span></button>'
        f'<button type="button" id="rl-submit" class="rl-primary" '
        f'data-rl-action="submit">{submit_label}</button>{second}</div>'
        f'<div class="rl-bar-keys">{keys}</div></div>{_guide_panel(guide)}</div>')


def message_screen_html(*, mode: str, title: str, detail: str = "", progress: str = "",
                        notice: Notice | None = None, guide: Guidelines = NO_GUIDELINES) -> str:
    """A screen with nothing to rank (``waiting``, ``empty``, ``idle``): what is happening, and
    no control that could not act."""
    top = _topline(progress, None, guide) if progress or guide.version else ""
    extra = f'<p class="rl-state-detail" id="rl-state-detail">{html.escape(detail)}</p>' \
        if detail else ""
    return (f'<div class="rl-task rl-state" data-mode="{_attr(mode)}" '
            f'data-n="{next(_SCREEN_NUMBERS)}">{top}'
            f'{_notice_html(notice)}<div id="rl-prompt" class="rl-state-box">'
            f'<div class="rl-md"><p class="rl-state-title">{html.escape(title)}</p></div>'
            f'{extra}</div>{_guide_panel(guide)}</div>')


@dataclass(frozen=True)
class RecentRow:
    ranking_id: int
    prompt: str
    summary: str
    when: str


def recent_screen_html(rows: Sequence[RecentRow], *, progress: str) -> str:
    """The annotator's last submissions, each with a button that reopens it."""
    if rows:
        items = "".join(
            f'<li class="rl-recent-item"><button type="button" data-rl-action="reopen" '
            f'data-ranking="{r.ranking_id}">Change</button> <span class="rl-recent-when">'
            f'{html.escape(r.when)}</span> <span class="rl-recent-summary">'
            f'{html.escape(r.summary)}</span><div class="rl-recent-prompt">'
            f'{html.escape(r.prompt)}</div></li>' for r in rows)
        body = f'<ol class="rl-recent" id="rl-recent">{items}</ol>'
    else:
        body = '<p>You have not submitted anything yet.</p>'
    return (f'<div class="rl-task rl-state" data-mode="recent" data-n="{next(_SCREEN_NUMBERS)}">'
            f'{_topline(progress, None)}'
            f'<section class="rl-prompt-block"><h3 class="rl-section-title">Your last '
            f'submissions</h3>{body}<button type="button" id="rl-back" data-rl-action="back">'
            f'Back to ranking</button></section></div>')


def overlay_html(content: str) -> str:
    """A panel over the page (the differences view) with its close button."""
    return (f'<div class="rl-diff-overlay" role="dialog" data-n="{next(_SCREEN_NUMBERS)}">'
            f'<button type="button" data-rl-action="close-diff">Close'
            f'<span class="rl-key-hint"> (Esc)</span></button>'
            f'{content}</div>')


def header_html(user_name: str) -> str:
    """Who is logged in, and the log-out link. (The guidelines come with each Rank screen,
    so that an admin's change reaches annotators on their next task.)"""
    return (f'<div class="rl-header"><span class="rl-user">Logged in as <strong id="rl-user">'
            f'{html.escape(user_name)}</strong></span> <a href="/logout" id="rl-logout">'
            f'Log out</a></div>')
