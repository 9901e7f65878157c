from labeler.render import conversation_markdown, escape_markdown_html


def test_html_outside_code_is_escaped():
    text = 'Try <script>alert("x")</script> & <b>bold</b>'
    assert escape_markdown_html(text) == (
        'Try &lt;script&gt;alert("x")&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;')


def test_code_spans_and_fences_are_left_for_markdown_to_show_literally():
    text = "Use `a < b` here:\n```html\n<div>&nbsp;</div>\n```\nthen <i>x</i>"
    assert escape_markdown_html(text) == (
        "Use `a < b` here:\n```html\n<div>&nbsp;</div>\n```\nthen &lt;i&gt;x&lt;/i&gt;")


def test_an_unclosed_fence_runs_to_the_end():
    assert escape_markdown_html("x\n```\n<p>") == "x\n```\n<p>"


def test_multi_turn_prompts_label_each_turn():
    md = conversation_markdown([
        {"role": "system", "content": "Be <brief>"}, {"role": "user", "content": "Hi"}])
    assert md == "**System:**\n\nBe &lt;brief&gt;\n\n---\n\n**User:**\n\nHi"
