import re

from labeler.render import (ALLOWED_TAGS, COLLAPSE_CHARS, CandidateView, Controls, Notice,
                            candidate_badges, candidate_html, conversation_html, letters_list,
                            plural, render_untrusted_markdown, task_screen_html, word_diff,
                            word_diff_html)


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


def test_conversations_are_bubbles_with_the_system_prompt_shown_and_earlier_turns_folded():
    out = conversation_html([{"role": "system", "content": "Be <brief>"},
                             {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello"},
                             {"role": "<b>odd</b>", "content": "Last one"}])
    assert "Be &lt;brief&gt;" in out and "&lt;b&gt;odd&lt;/b&gt;" in out
    system, earlier = out.split("<details")[0], out.split("<details")[1].split("</details>")[0]
    last = out.split("</details>")[1]
    # The system prompt stays above the fold; the other earlier turns fold away.
    assert "rl-role-system" in system and "rl-role-system" not in earlier
    assert "(2 turns)" in earlier and "rl-role-assistant" in earlier and "Last one" in last
    assert "rl-role-other" in last  # an unknown role gets no class of its own
    assert "(empty response)" in candidate_html("  \n")
    single = conversation_html([{"role": "user", "content": "Just this"}])
    assert "<details" not in single and "Just this" in single


def test_headings_inside_texts_sit_below_the_titles():
    out = candidate_html("# Big\n## Smaller\n###### Least")
    assert "<h1" not in out and "<h2" not in out and "<h3" not in out
    assert "<h4>Big</h4>" in out and "<h5>Smaller</h5>" in out and "<h6>Least</h6>" in out
    assert "<h1>Big</h1>" in render_untrusted_markdown("# Big")  # the default is unchanged


def test_word_diff_runs_rebuild_both_texts():
    a, b = "The cat sat on the mat.\nSecond line", "The dog sat on the mat!\nSecond  line"
    runs = word_diff(a, b)
    assert "".join(t for op, t in runs if op != "ins") == a
    assert "".join(t for op, t in runs if op != "del") == b
    assert ("del", "cat") in runs and ("ins", "dog") in runs
    assert word_diff("same", "same") == [("same", "same")]
    # A replacement of several words reads as one change.
    assert word_diff("it is three quarters full", "it is two thirds full") == [
        ("same", "it is "), ("del", "three quarters"), ("ins", "two thirds"), ("same", " full")]
    assert word_diff("", "new") == [("ins", "new")]


def test_word_diff_html_is_escaped_and_counts_words():
    out = word_diff_html("<b>x</b> one", "<b>x</b> two", "Candidate A", "Candidate B")
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert '<span class="rl-diff-del">one</span>' in out
    assert '<span class="rl-diff-ins">two</span>' in out and "2 words differ" in out
    assert "identical" in word_diff_html("a b", "a b", "A", "B")


def test_plurals_letters_and_badges():
    assert (plural(1, "candidate"), plural(2, "candidate")) == ("1 candidate", "2 candidates")
    assert letters_list([1]) == "B" and letters_list([0, 1, 3]) == "A, B and D"
    assert candidate_badges("text", "length") == ("cut",)
    assert candidate_badges(" \n", "stop") == ("empty",)
    assert candidate_badges("ok", "stop") == ()
    assert candidate_badges("ok", "length", duplicate=True) == ("cut", "duplicate")


def test_the_task_screen_escapes_its_own_texts_and_marks_state():
    screen = task_screen_html(
        assignment_id=7, prompt_html="<p>P</p>",
        candidates=[CandidateView("<p>a</p>", ("cut",)), CandidateView("<p>b</p>")],
        controls=Controls((1, None), rationale="</textarea><script>x</script>"),
        layout="two-up", progress="1 done", notice=Notice("error", "<bad>"),
        suggestion="bt:<dir>", unranked=[1])
    assert "<script>" not in screen and "&lt;/textarea&gt;" in screen
    assert "&lt;bad&gt;" in screen and "bt:&lt;dir&gt;" in screen
    assert 'data-assignment="7"' in screen and 'data-k="2"' in screen
    assert "rl-layout-two-up" in screen and "rl-msg-error" in screen
    assert 'class="rl-candidate rl-missing" id="rl-cand-1"' in screen
    assert 'id="rl-rank-0"' in screen and 'id="rl-submit"' in screen
