import re

from labeler.render import (ALLOWED_TAGS, COLLAPSE_CHARS, conversation_html, candidate_html,
                            render_untrusted_markdown)


def _tags(html: str) -> set[str]:
    return {t.lower() for t in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html)}


def test_raw_html_is_shown_as_text():
    out = render_untrusted_markdown('Try <script>alert("x")</script> & <b>bold</b>')
    assert "<script" not in out and "<b>" not in out
    assert "&lt;script&gt;" in out and "&lt;b&gt;bold&lt;/b&gt;" in out and "&amp;" in out


def test_code_tricks_that_fooled_the_old_escaping_stay_text():
    # Escaped backticks, and a fence that does not start a line, are not code to markdown.
    for text in ('\\`<div style="position:fixed;inset:0">x</div>\\`',
                 'see ```<form action="/logout"><input></form>```',
                 '`a` <img src=x onerror=alert(1)> `b`'):
        out = render_untrusted_markdown(text)
        assert _tags(out) <= {"div", "p", "code"}, out
        assert "&lt;" in out  # the markup is there, as characters


def test_code_keeps_its_characters():
    out = render_untrusted_markdown("Use `a < b` here:\n```html\n<div>&nbsp;</div>\n```")
    assert "<code>a &lt; b</code>" in out
    assert "<pre><code" in out and "&lt;div&gt;&amp;nbsp;&lt;/div&gt;" in out


def test_images_become_links_and_are_never_loaded():
    out = render_untrusted_markdown("![beacon](https://tracker.example/p.gif) ![out](/logout)")
    assert "<img" not in out
    assert '<a href="https://tracker.example/p.gif"' in out and "[image: beacon]" in out
    # A relative app route keeps no link at all.
    assert "/logout" not in out and "[image: out]" in out


def test_links_open_on_click_only_and_never_run_code():
    out = render_untrusted_markdown("[ok](https://example.com) [js](javascript:alert(1)) "
                                    "[d](data:text/html,<b>x</b>) [rel](/logout) "
                                    "<https://auto.example>")
    assert out.count("<a ") == 3  # ok, the autolink and the relative one (without href)
    assert 'href="https://example.com"' in out and 'href="https://auto.example"' in out
    assert "javascript:" not in out.split("[js]")[0] and 'href="javascript' not in out
    assert 'href="data' not in out and 'href="/logout"' not in out
    for anchor in re.findall(r"<a [^>]*>", out):
        assert 'rel="noopener noreferrer nofollow"' in anchor and 'target="_blank"' in anchor


def test_markdown_structure_keeps_rendering():
    out = render_untrusted_markdown(
        "# Title\n\n> tip\n\n- a\n- b\n\n1. one\n\n| x | y |\n|:-|-:|\n| 1 | 2 |\n\n"
        "**bold** *it* ~~gone~~\n\n$x^2$ and $$\\frac{a}{b}$$")
    for tag in ("h1", "blockquote", "ul", "ol", "li", "table", "th", "td", "strong", "em",
                "s", "math", "msup", "mfrac"):
        assert f"<{tag}" in out, tag
    assert "&gt; tip" not in out
    assert 'style="text-align:left"' in out


def test_bad_math_shows_its_source():
    out = render_untrusted_markdown("$\\frac{$")
    assert "<math" not in out and "rl-math-source" in out


def test_only_allowed_tags_for_a_mix_of_everything():
    text = ("<iframe src=//x></iframe><svg onload=alert(1)><style>*{}</style>"
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>"
            "\n\n```\n</code></pre><img src=x>\n```\n\n[x](vbscript:msgbox)")
    assert _tags(render_untrusted_markdown(text)) <= ALLOWED_TAGS


def test_long_text_collapses_without_losing_any_of_it():
    text = "word " * (COLLAPSE_CHARS // 5) + "THE-END"
    out = render_untrusted_markdown(text)
    assert "<details>" in out and "Show all" in out and "THE-END" in out
    assert "THE-END" not in out.split("<details>")[0]  # the preview is shorter
    short = render_untrusted_markdown("short")
    assert "<details>" not in short


def test_prompts_label_each_turn_and_empty_candidates_say_so():
    out = conversation_html([{"role": "system", "content": "Be <brief>"},
                             {"role": "user", "content": "Hi"}])
    assert "<strong>System:</strong>" in out and "Be &lt;brief&gt;" in out
    assert out.index("System") < out.index("User") and "<hr>" in out
    assert "(empty response)" in candidate_html("  \n")
