"""Small HTML building blocks for the report: escaping, tables, notes, figures and the page shell.
Everything is inline (CSS in a <style> block, images as data URIs): the file opens anywhere, offline."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #dde2ea; --panel: #f6f8fb; --accent: #2457a6;
        --best: #dff3e4; --best-ink: #14632e; --warn: #fff6e0; --warn-line: #e8c66a; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef1f5; color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1160px; margin: 24px auto; background: white; padding: 8px 40px 40px;
       border-radius: 10px; box-shadow: 0 1px 4px rgba(0,0,0,.08); }
header { border-bottom: 2px solid var(--line); padding: 20px 0 12px; margin-bottom: 8px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: var(--muted); }
nav { margin: 12px 0 0; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; }
nav a:hover { text-decoration: underline; }
section { padding-top: 8px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p { margin: 8px 0; }
.caption, .muted { color: var(--muted); font-size: 13.5px; }
.headline { font-size: 16px; background: var(--panel); border-left: 4px solid var(--accent);
            padding: 10px 14px; margin: 14px 0; }
.headline.good { border-left-color: #2e8b57; }
.headline.bad { border-left-color: #c0392b; }
.note { background: var(--warn); border: 1px solid var(--warn-line); border-radius: 6px;
        padding: 8px 12px; margin: 10px 0; font-size: 14px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: 10px; margin: 14px 0; }
.fact { background: var(--panel); border-radius: 8px; padding: 10px 14px; }
.fact .label { color: var(--muted); font-size: 12.5px; text-transform: uppercase; letter-spacing: .04em; }
.fact .value { font-size: 17px; font-weight: 600; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 14px; min-width: 50%; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
thead th { border-bottom: 2px solid var(--line); }
th.group { text-align: center; border-left: 2px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.first-of-group, th.first-of-group { border-left: 2px solid var(--line); }
tbody tr:hover { background: #fafbfd; }
tfoot td { font-weight: 600; background: var(--panel); border-top: 2px solid var(--line); }
td.flag-bad { color: #b02a2a; font-weight: 700; }
table.finetune th, table.finetune td { padding: 5px 8px; }
table.finetune th, table.finetune td:first-child { white-space: normal; }  /* 9 columns fit the page */
ul.messages { font-size: 14px; margin: 6px 0 12px; padding-left: 22px; }
ul.messages li { margin: 3px 0; overflow-wrap: anywhere; }
td.best { background: var(--best); color: var(--best-ink); font-weight: 700; }
sup.regime { font-weight: 700; color: #b02a2a; margin-left: 2px; cursor: help; }
.regime-note { background: var(--warn); border-left: 4px solid #c0392b; padding: 8px 12px; margin: 10px 0;
               font-size: 14px; }
td.better { color: var(--best-ink); font-weight: 600; }
td.worse { color: #b02a2a; font-weight: 600; }
figure { margin: 14px 0 22px; }
figure img { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; }
details { margin: 8px 0; border: 1px solid var(--line); border-radius: 6px; background: var(--panel); }
details summary { cursor: pointer; padding: 8px 12px; font-weight: 600; }
pre { margin: 0; padding: 10px 14px; background: #fbfcfe; border-top: 1px solid var(--line); overflow-x: auto;
      font: 12.5px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; max-height: 480px; }
pre.block { border: 1px solid var(--line); border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
.fact .sub { color: var(--muted); font-size: 12.5px; font-weight: 400; }
footer { margin-top: 36px; color: var(--muted); font-size: 13px; border-top: 1px solid var(--line);
         padding-top: 10px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def number(value: object, digits: int = 4) -> str:
    """A score or loss for a table: fixed decimals; missing or non-finite values as a dash."""
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


@dataclass
class Cell:
    """A table cell: `text` is already HTML (escape it before); `classes` go on the <td>."""

    text: str
    classes: str = ""

    def render(self, tag: str = "td") -> str:
        attribute = f' class="{self.classes}"' if self.classes else ""
        return f"<{tag}{attribute}>{self.text}</{tag}>"


def as_cell(value: Cell | str) -> Cell:
    return value if isinstance(value, Cell) else Cell(value)


def table(header: Sequence[Cell | str], rows: Iterable[Sequence[Cell | str]],
          footer: Iterable[Sequence[Cell | str]] = (), group_header: str = "", css_class: str = "") -> str:
    """A table in a horizontally scrolling wrapper; `group_header` is an optional first <tr> (HTML)."""
    head = "".join(as_cell(c).render("th") for c in header)
    body = "\n".join("<tr>" + "".join(as_cell(c).render() for c in row) + "</tr>" for row in rows)
    foot = "\n".join("<tr>" + "".join(as_cell(c).render() for c in row) + "</tr>" for row in footer)
    attribute = f' class="{css_class}"' if css_class else ""
    return (f'<div class="table-wrap"><table{attribute}><thead>{group_header}<tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody>" + (f"<tfoot>{foot}</tfoot>" if foot else "") + "</table></div>")


def note(text: str) -> str:
    """A visible remark where a part of the run is missing or could not be read (text is escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def headline(text: str, good: bool | None, after_html: str = "") -> str:
    """A conclusion in one sentence, green when good, red when bad, plain when it cannot tell."""
    tone = {True: " good", False: " bad", None: ""}[good]
    return f'<p class="headline{tone}">{esc(text)}{after_html}</p>'


def figure(data_uri: str, alt: str, caption: str = "", css_class: str = "") -> str:
    """An embedded image; `caption` is HTML."""
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    attribute = f' class="{css_class}"' if css_class else ""
    return f'<figure{attribute}><img src="{data_uri}" alt="{esc(alt)}">{caption_html}</figure>'


def details(summary: str, body_html: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body_html}</details>"


def pre(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<pre{attribute}>{esc(text)}</pre>"


def facts(items: Sequence[tuple[str, str]]) -> str:
    """Key figures as a grid of small cards; values are HTML."""
    cards = "".join(f'<div class="fact"><div class="label">{esc(label)}</div><div class="value">{value}</div></div>'
                    for label, value in items)
    return f'<div class="facts">{cards}</div>'


@dataclass
class Section:
    anchor: str
    title: str
    body: str

    def render(self) -> str:
        return f'<section id="{self.anchor}"><h2>{esc(self.title)}</h2>\n{self.body}\n</section>'


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    links = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(s.render() for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header><h1>{esc(title)}</h1><p>{subtitle}</p><nav>{links}</nav></header>
{body}
<footer>{footer}</footer>
</main>
</body>
</html>
"""
