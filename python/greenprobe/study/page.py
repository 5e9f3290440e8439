"""The report's HTML, rendered with Jinja2 with autoescape: every value that comes from the spec, the
data or the machine is escaped where a template writes it. Only the templates and the report's own
fixed texts are markup; a part that is a plain string is written as text, escaped, so a value can
never become a tag, whichever way it reaches the page."""

from __future__ import annotations

import functools
import html

import jinja2
from markupsafe import Markup


def _written(value) -> Markup:
    """How a template writes a value: markup as it is, anything else as html.escape writes it (the
    report's entities, &#x27; for an apostrophe, stay the ones it has always had)."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value)))


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, finalize=_written)


@functools.lru_cache(maxsize=None)
def _template(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


def render(template: str, **values) -> Markup:
    """``template`` (Jinja2) with ``values``, each escaped where it is written."""
    return Markup(_template(template).render(**values))


def text(fixed: str) -> Markup:
    """One of the report's own fixed texts (no value in it) as markup."""
    return Markup(fixed)


def table(headers: list, rows: list) -> Markup:
    return render("<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>"
                  "{% for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}"
                  "</tbody></table>", headers=headers, rows=rows)


def image(name: str, png_bytes: bytes) -> Markup:
    import base64

    return render("<p><img alt='{{ name }}' src='data:image/png;base64,{{ data }}'></p>", name=name,
                  data=base64.b64encode(png_bytes).decode())


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}"
         "th{background:#eee}.warn{background:#fff3cd;padding:.6em;border:1px solid #e0c060}"
         "img{max-width:100%}")


def page(title: str, parts: list) -> str:
    """The whole self-contained page: ``parts`` in order (markup as it is, strings as text)."""
    return render("<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title><style>{{ style }}"
                  "</style></head><body>\n{% for part in parts %}{{ part }}\n{% endfor %}</body></html>",
                  title=title, style=text(STYLE), parts=parts)
