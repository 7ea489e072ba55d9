"""A self-contained HTML page: images embedded as base64, CSS inline, no scripts, no network.

Layout: a header with the study's facts, a table of contents, the findings, then one
card per section. Long tables are cut to their first rows (the CSV beside the page has
them all); wide ones scroll inside their card.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

import pandas as pd

__all__ = ["Image", "Section", "Table", "render_page"]

_STYLE = """
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2433;
       background: #eef1f5; margin: 0; }
header { background: #1f3a5f; color: #fff; padding: 20px 32px 16px; }
header h1 { margin: 0 0 10px; font-size: 24px; font-weight: 600; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
         gap: 4px 24px; margin: 0; }
.facts div { display: flex; gap: 8px; } .facts dt { color: #a9c1e0; min-width: 92px; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #d5dbe3;
      padding: 8px 32px; font-size: 14px; }
nav a { margin-right: 18px; color: #1f5fa8; text-decoration: none; white-space: nowrap; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 24px 48px; }
section { background: #fff; border: 1px solid #d5dbe3; border-radius: 8px; margin: 16px 0;
          padding: 4px 24px 16px; }
section h2 { font-size: 19px; margin: 14px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; color: #33415c; }
.findings { background: #f4f8ff; border-color: #9bb8e0; }
.findings ol { padding-left: 22px; margin: 6px 0; } .findings li { margin: 5px 0; }
.findings li.lead { font-weight: 600; }
.note { color: #7a4d00; background: #fff6e0; border-left: 3px solid #e0a800; padding: 4px 10px;
        margin: 6px 0; }
.rule { color: #33415c; font-size: 14px; margin: 4px 0; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #4a5568; margin-top: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid #e3e7ee; padding: 3px 9px; text-align: right;
         white-space: nowrap; }
th { background: #f2f4f8; position: sticky; top: 0; } tr:nth-child(even) td { background: #fafbfc; }
td:first-child, th:first-child { text-align: left; }
table.wrap th, table.wrap td { white-space: normal; text-align: left; vertical-align: top;
                               max-width: 420px; }
.more { font-size: 13px; color: #4a5568; }
"""


@dataclass(frozen=True)
class Image:
    """A PNG and what it shows."""

    name: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A display-ready frame (strings where rounding matters), its CSV and a row limit;
    ``wrap`` for tables of sentences (left-aligned, wrapped)."""

    title: str
    frame: pd.DataFrame
    csv: str = ""
    max_rows: int = 20
    caption: str = ""
    wrap: bool = False


@dataclass(frozen=True)
class Section:
    """A card: notes, rules and paragraphs, images, then tables."""

    id: str
    title: str
    paragraphs: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    images: tuple[Image, ...] = ()
    tables: tuple[Table, ...] = ()
    notes: tuple[str, ...] = ()


def _image(image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    caption = f"<figcaption>{escape(image.caption)}</figcaption>" if image.caption else ""
    alt = escape(image.caption or image.name)
    img = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
    return f'<figure id="fig-{escape(image.name)}">{img}{caption}</figure>'


def _table(t: Table) -> str:
    head = f"<h3>{escape(t.title)}</h3>"
    if t.caption:
        head += f'<p class="rule">{escape(t.caption)}</p>'
    if t.frame.empty:
        return head + '<p class="more">(no rows)</p>'
    shown = t.frame.head(t.max_rows).copy()
    for col in shown.columns[shown.dtypes == "Int64"]:
        # note: nullable integers print <NA>; a blank cell reads as "none"
        shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
    body = shown.to_html(
        index=False, float_format=lambda v: f"{v:.3g}", na_rep="", border=0,
        classes="wrap" if t.wrap else None,
    )  # fmt: skip
    more = []
    if len(t.frame) > t.max_rows:
        more.append(f"first {t.max_rows} of {len(t.frame)} rows")
    if t.csv:
        more.append(f'all rows and columns: <a href="{escape(t.csv)}">{escape(t.csv)}</a>')
    tail = f'<p class="more">{"; ".join(more)}</p>' if more else ""
    return f'{head}<div class="scroll">{body}</div>{tail}'


def _section(s: Section) -> str:
    parts = [f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>']
    parts += [f'<p class="note">{escape(n)}</p>' for n in s.notes]
    parts += [f'<p class="rule">{escape(r)}</p>' for r in s.rules]
    parts += [f"<p>{escape(p)}</p>" for p in s.paragraphs]
    parts += [_image(i) for i in s.images]
    parts += [_table(t) for t in s.tables]
    parts.append("</section>")
    return "\n".join(parts)


def render_page(
    title: str,
    facts: list[tuple[str, str]],
    findings: list[str],
    lead: int,
    sections: list[Section],
) -> str:
    """The page: header with ``facts``, contents, ``findings`` (the first ``lead`` in
    bold), then the sections in order."""
    fact_html = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    toc = '<a href="#findings">Findings</a>' + "".join(
        f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections
    )
    items = "".join(
        f"<li{' class=lead' if i < lead else ''}>{escape(f)}</li>" for i, f in enumerate(findings)
    )
    body = "\n".join(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><dl class='facts'>{fact_html}</dl></header>"
        f"<nav>{toc}</nav><main>"
        f"<section id='findings' class='findings'><h2>Findings</h2><ol>{items}</ol></section>"
        f"{body}</main></body></html>\n"
    )
