"""Showing untrusted text (prompts, model output, annotators' words) as formatted text.

Everything the app shows that nobody here wrote goes through ``render_untrusted_markdown``:
markdown-it parses it with raw HTML disabled, so ``<div>`` in the text is shown as the
characters ``<div>``; the renderer turns images into plain links and math into MathML; nh3
(the Rust ``ammonia`` sanitizer) then keeps only an allowed set of elements and attributes, so
even a renderer bug cannot let markup through. The result goes into a ``gr.HTML`` component
as is: Gradio's own markdown pass would read the text a second time.
"""

from __future__ import annotations

import html

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
    "div", "span", "details", "summary",
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


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.use(dollarmath_plugin, allow_space=False, double_inline=True,
           renderer=_render_math)
    md.add_render_rule("image", _render_image)
    return md


_MD = _markdown()


def render_untrusted_markdown(text: str) -> str:
    """Safe HTML for untrusted markdown ``text``, for a ``gr.HTML`` component.

    Contract: the result contains only ``ALLOWED_TAGS``; no element loads anything by itself
    (no img, iframe, style, form or script); links are absolute http(s)/mailto, open in a new
    tab on click only and carry ``rel="noopener noreferrer nofollow"``; no event handler or
    inline style other than table alignment. Markdown (headings, lists, tables, blockquotes,
    code, ``$``/``$$`` math) keeps its formatting. Text over ``COLLAPSE_CHARS`` shows a preview
    and the whole text behind a "Show all" control; the text itself is never altered.
    """
    text = text or ""
    body = _CLEANER.clean(_MD.render(text))
    if len(text) <= COLLAPSE_CHARS:
        return f'<div class="rl-md">{body}</div>'
    preview = _CLEANER.clean(_MD.render(text[:PREVIEW_CHARS] + " …"))
    return (f'<div class="rl-md rl-long"><div class="rl-preview">{preview}</div>'
            f"<details><summary>Show all ({len(text):,} characters)</summary>{body}</details>"
            "</div>")


def conversation_html(messages: list[dict]) -> str:
    """The prompt as the annotator reads it: earlier turns labelled, the final question last."""
    if len(messages) == 1:
        return render_untrusted_markdown(messages[0]["content"])
    blocks = [f'<div class="rl-turn"><div class="rl-role"><strong>'
              f'{html.escape(str(m["role"]).capitalize())}:</strong></div>'
              f'{render_untrusted_markdown(m["content"])}</div>' for m in messages]
    return "<hr>".join(blocks)


def message_html(text: str) -> str:
    """One of the app's own messages, in the same place as a prompt."""
    return f'<div class="rl-md"><p>{html.escape(text)}</p></div>'


def candidate_html(text: str) -> str:
    if not text.strip():
        return '<div class="rl-md"><p><em>(empty response)</em></p></div>'
    return render_untrusted_markdown(text)


def candidate_title(index: int) -> str:
    return f"### Candidate {candidate_letter(index)}"
