"""The report's HTML: a complete page with inline CSS, sections, inline PNG images, tables.
No script and no external resource, so a page opens offline and can be mailed around."""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
body{background:#fff}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;height:auto;display:block;margin:.4em 0}img.grid{image-rendering:pixelated}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
.note{color:#666;font-size:.9em}.kv{columns:3 16em;font-size:.9em}.kv div{break-inside:avoid;padding:.1em 0}
.cols{display:flex;flex-wrap:wrap;gap:.5em}.cols img{max-width:360px}"""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document: inline CSS, no script, no external resource."""
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n<p class=note>Made by vaekit.</p></body></html>\n")


def _section(title: str, inner: str) -> str:
    return f"<section><h2>{_e(title)}</h2>\n{inner}</section>"


def _img(data: bytes, alt: str, grid: bool = False) -> str:
    """An <img> with the PNG inline; small image grids are shown at twice their size, pixelated."""
    size = ""
    if grid:
        width = int.from_bytes(data[16:20], "big")  # the PNG header's IHDR width
        size = f" class=grid width={2 * width}" if 2 * width <= 1060 else " class=grid"
    return f"<img{size} alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def _table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return json.dumps([round(x, 4) if isinstance(x, float) else x for x in v])
    return str(v)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
