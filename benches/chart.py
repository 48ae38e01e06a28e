#!/usr/bin/env python3
"""Bar chart of the ovlfs time ratios written by benches/system.sh (Python stdlib only).

Usage: chart.py RATIOS.tsv OUT.svg [TITLE]

RATIOS.tsv: one line per workload: label, ovlfs/kernel, ovlfs/fuse-overlayfs, kernel target
(ratios are time ratios, lower is better; empty when not measured or no target).
The x axis is logarithmic and centred on 1 (parity); the performance targets are drawn as ticks:
a dark one for the kernel target of the workload, an orange one at 0.8 for fuse-overlayfs.
"""

import math
import sys
from xml.sax.saxutils import escape

KERNEL_COLOR = "#3b6ea8"
FO_COLOR = "#e08a1e"


def parse(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (4 - len(parts))
            label, rk, rf, target = parts[:4]

            def num(s):
                try:
                    return float(s)
                except ValueError:
                    return None

            rows.append((label, num(rk), num(rf), num(target)))
    return rows


def chart(rows, title):
    values = [v for _, rk, rf, _ in rows for v in (rk, rf) if v] + [0.8, 1.0]
    lo = 2 ** math.floor(math.log2(min(values)))
    hi = 2 ** math.ceil(math.log2(max(values)))
    if hi <= lo:
        hi = lo * 2
    left, right, top, bar, gap = 330, 60, 60, 11, 12
    plot_w = 520
    row_h = 2 * bar + gap
    height = top + len(rows) * row_h + 60
    width = left + plot_w + right

    def x(v):
        return left + plot_w * (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(title)}</text>',
        f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">time ratio, log scale; '
        f'left of 1 = ovlfs faster; ticks = performance targets</text>',
    ]
    # Grid: powers of two.
    v = lo
    while v <= hi * 1.0001:
        gx = x(v)
        stroke = "#000" if abs(v - 1) < 1e-9 else "#ddd"
        out.append(
            f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{top + len(rows) * row_h}" '
            f'stroke="{stroke}" stroke-width="1"/>'
        )
        text = f"{v:g}×"
        out.append(
            f'<text x="{gx:.1f}" y="{top + len(rows) * row_h + 16}" text-anchor="middle">'
            f"{text}</text>"
        )
        v *= 2
    base = x(1.0)
    for i, (label, rk, rf, target) in enumerate(rows):
        y0 = top + i * row_h
        out.append(
            f'<text x="{left - 8}" y="{y0 + bar + 4}" text-anchor="end">{escape(label)}</text>'
        )
        for j, (value, color, limit) in enumerate(
            ((rk, KERNEL_COLOR, target), (rf, FO_COLOR, 0.8))
        ):
            y = y0 + j * bar
            if value is None:
                out.append(
                    f'<text x="{base + 4:.1f}" y="{y + bar - 2}" fill="#999" '
                    f'font-size="10">n/a</text>'
                )
                continue
            vx = x(min(max(value, lo), hi))
            x1, x2 = sorted((base, vx))
            out.append(
                f'<rect x="{x1:.1f}" y="{y + 1}" width="{max(x2 - x1, 1):.1f}" '
                f'height="{bar - 2}" fill="{color}"/>'
            )
            miss = limit is not None and value > limit
            # The label goes past both the bar's end and the target tick.
            lx = x(limit) if limit is not None else vx
            if vx >= base:
                anchor, tx = "start", max(x2, lx) + 5
            else:
                anchor, tx = "end", min(x1, lx) - 5
            style = ' font-weight="bold" fill="#b00"' if miss else ""
            out.append(
                f'<text x="{tx:.1f}" y="{y + bar - 2}" text-anchor="{anchor}" font-size="10"'
                f"{style}>{value:.2f}</text>"
            )
            if limit is not None:
                out.append(
                    f'<line x1="{lx:.1f}" y1="{y}" x2="{lx:.1f}" y2="{y + bar}" '
                    f'stroke="#222" stroke-width="1.5"/>'
                )
    ly = height - 22
    out += [
        f'<rect x="{left}" y="{ly - 9}" width="12" height="10" fill="{KERNEL_COLOR}"/>',
        f'<text x="{left + 16}" y="{ly}">ovlfs / kernel overlayfs</text>',
        f'<rect x="{left + 200}" y="{ly - 9}" width="12" height="10" fill="{FO_COLOR}"/>',
        f'<text x="{left + 216}" y="{ly}">ovlfs / fuse-overlayfs</text>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: chart.py RATIOS.tsv OUT.svg [TITLE]")
    rows = parse(sys.argv[1])
    title = sys.argv[3] if len(sys.argv) > 3 else "ovlfs time ratios"
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(chart(rows, title))


if __name__ == "__main__":
    main()
