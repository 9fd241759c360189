"""Server-rendered SVG bar charts: no chart library and no script, so the CSP stays strict.

Colours and sizes are SVG presentation attributes, not ``style``, which the CSP forbids.
"""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ("#2f7d32", "#1f5fa8", "#c26a00", "#7b3fa0", "#a83232", "#2a8c8c", "#6b6b6b")


def _fmt(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.3f}"


def grouped_bars(categories: list[str], series: dict[str, list[float]], *, title: str,
                 unit: str, width: int = 720, height: int = 240) -> Markup:
    """An SVG of one bar group per category, one bar per series (with a legend); every bar
    has a tooltip with its exact value. ``series[name][i]`` is the value at ``categories[i]``."""
    left, right, top, bottom = 64, 12, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for values in series.values() for v in values), default=0.0) or 1.0
    group_w = plot_w / max(len(categories), 1)
    # bars at most 40 px wide, a group centred in its slot: one day is not one wall of colour
    bar_w = min(40.0, max(2.0, (group_w * 0.8) / max(len(series), 1)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             'stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 4}" font-size="11" text-anchor="end">'
             f'{escape(_fmt(peak))}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" font-size="11" text-anchor="end">0</text>',
             f'<text x="8" y="{top + plot_h / 2}" font-size="11">{escape(unit)}</text>']
    for i, category in enumerate(categories):
        x0 = left + i * group_w + (group_w - bar_w * len(series)) / 2
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            h = plot_h * value / peak
            parts.append(
                f'<rect x="{x0 + j * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>'
                f'{escape(category)} · {escape(name)}: {escape(_fmt(value))} {escape(unit)}'
                '</title></rect>')
        parts.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" '
                     f'font-size="11" text-anchor="middle">{escape(category)}</text>')
    for j, name in enumerate(series):
        x = left + j * 150
        parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" '
                     f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{x + 14}" y="{height - 5}" '
                     f'font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
