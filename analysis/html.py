"""A self-contained HTML page: images embedded as base64, no scripts, no network."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path

import pandas as pd

__all__ = ["Section", "render_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: 1em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #8a5a00; } .findings li { margin: 0.2em 0; }
"""


@dataclass(frozen=True)
class Section:
    """A titled block: notes, paragraphs, images, then tables (title, frame, csv link)."""

    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[tuple[str, pd.DataFrame, str], ...] = ()
    images: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(title: str, frame: pd.DataFrame, link: str, max_rows: int = 20) -> str:
    head = f"<h3>{escape(title)}</h3>"
    if link:
        head += f'<p><a href="{escape(link)}">{escape(link)}</a>'
        if len(frame) > max_rows:
            head += f" ({len(frame)} rows; first {max_rows} shown)"
        head += "</p>"
    if frame.empty:
        return head + "<p>(empty)</p>"
    shown = frame.head(max_rows).copy()
    for col in shown.columns[shown.dtypes == "Int64"]:
        # note: nullable integers print <NA>; a blank cell reads as "none"
        shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
    body = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
    return head + body


def _section(s: Section) -> str:
    parts = [f"<h2>{escape(s.title)}</h2>"]
    parts += [f'<p class="note">{escape(n)}</p>' for n in s.notes]
    parts += [f"<p>{escape(p)}</p>" for p in s.paragraphs]
    parts += [_image(p) for p in s.images]
    parts += [_table(*t) for t in s.tables]
    return "\n".join(parts)


def render_page(title: str, findings: list[str], sections: list[Section]) -> str:
    items = "".join(f"<li>{escape(f)}</li>" for f in findings)
    body = "\n".join(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><h2>Findings</h2><ul class='findings'>{items}</ul>"
        f"{body}</body></html>\n"
    )
