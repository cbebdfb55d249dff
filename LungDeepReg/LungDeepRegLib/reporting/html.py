"""The HTML page of the QA report: one self-contained file with inline CSS.

Only the PNG figures live beside it (same folder, relative links). Every piece of text that
reaches the page passes through :func:`escape` here; callers hand over plain strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape as _escape

_NUMERIC = re.compile(r"^[-+]?\d")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Arial, sans-serif; margin: 1.5em auto;
       max-width: 1200px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.meta { color: #666; margin-top: 0; }
.summary { background: #f4f7fb; border: 1px solid #b9c9de; border-radius: 6px;
           padding: 0.6em 1.2em 1em; }
.summary table th { text-align: left; padding-right: 1.5em; font-weight: 600; }
.checks { list-style: none; padding-left: 0; }
.checks li { margin: 0.2em 0; padding: 0.15em 0.5em; border-left: 4px solid #999; }
.checks li.ok { border-color: #2e7d32; } .checks li.warn { border-color: #e65100;
  background: #fff3e0; } .checks li.info { border-color: #1565c0; }
table.data { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
table.data th { background: #eef1f5; } table.data td.num { text-align: right; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #333; font-size: 0.92em; max-width: 1000px; }
.warnings { background: #fff3e0; border: 2px solid #e65100; border-radius: 6px;
            padding: 0.4em 1.2em 0.6em; margin: 0.8em 0; }
.warnings h2 { border: none; margin: 0.3em 0; color: #bf360c; }
.note { color: #8a5a00; font-style: italic; } code, .mono { font-family: monospace; }
"""


@dataclass
class Check:
    """One line of the summary's verdict list: ``status`` is ok, warn or info."""

    status: str
    text: str


@dataclass
class Section:
    """A report section: optional figure with caption, tables, and notes (plain text)."""

    anchor: str
    heading: str
    figure: str | None = None  # PNG file name in the report folder
    caption: str = ""
    paragraphs: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # HTML made by :func:`table`
    note: str | None = None  # why the section has no data


def escape(text: object) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe in attributes)."""
    return _escape(str(text), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> str:
    """A data table; cells that start with a number are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{escape(v)}</td>' if _NUMERIC.match(str(v))
                        else f"<td>{escape(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f'<table class="data">{title}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def page(title: str, generated: str, summary: Sequence[tuple[str, str]],
         checks: Sequence[Check], sections: Sequence[Section],
         warnings: Sequence[str] = ()) -> str:
    """The complete HTML document; ``warnings`` (failed self-checks of the run) come first,
    in a highlighted box, because they say whether the rest can be trusted."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", f'<p class="meta">{escape(generated)}</p>',
        _warnings(warnings), _summary(summary, checks), _contents(sections),
    ]
    parts += [_section(section) for section in sections]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _warnings(messages: Sequence[str]) -> str:
    if not messages:
        return ""
    items = "".join(f"<li>{escape(message)}</li>" for message in messages)
    return (f'<section class="warnings" id="warnings"><h2>Warnings: check this result before '
            f"using it</h2><ul>{items}</ul></section>")


def _summary(rows: Sequence[tuple[str, str]], checks: Sequence[Check]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    items = "".join(f'<li class="{escape(c.status)}">{escape(c.text)}</li>' for c in checks)
    return (f'<section class="summary" id="summary"><h2>Summary</h2><table>{body}</table>'
            f'<ul class="checks">{items}</ul></section>')


def _contents(sections: Sequence[Section]) -> str:
    links = " &middot; ".join(f'<a href="#{escape(s.anchor)}">{escape(s.heading)}</a>'
                              for s in sections)
    return f"<nav><p>{links}</p></nav>"


def _section(section: Section) -> str:
    parts = [f'<section id="{escape(section.anchor)}">', f"<h2>{escape(section.heading)}</h2>"]
    if section.note:
        parts.append(f'<p class="note">{escape(section.note)}</p>')
    parts += [f"<p>{escape(text)}</p>" for text in section.paragraphs]
    if section.figure:
        parts.append(f'<figure><img src="{escape(section.figure)}" '
                     f'alt="{escape(section.heading)}"><figcaption>'
                     f"{escape(section.caption)}</figcaption></figure>")
    parts += list(section.tables)
    parts.append("</section>")
    return "\n".join(parts)
