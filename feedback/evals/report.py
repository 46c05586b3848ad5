"""Eval reports: a terminal table (rich), JSON, and one self-contained HTML page with SVG charts.

The HTML page has no script and loads nothing: styles and charts (generated SVG) are inline, so it can be
attached to a ticket or opened from disk. Charts: one bar per release for each quality metric, and latency
and cost per answer as distributions (every item a dot; box from p25 to p75; p50 and p95 marked).
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from feedback.evals.metrics import METRIC_BY_KEY, METRICS, QUALITY_KEYS, percentile
from feedback.evals.runner import EvalResult, compare

PALETTE = ("#2f6fde", "#e2711d", "#2a9d8f", "#9b5de5", "#d62839", "#6c757d")


# --- formatting ------------------------------------------------------------------------------------------

def _not_found(cfg: dict[str, Any]) -> str:
    """The release's "not found" cut-off: a calibrated relevance level, or (older releases) a raw cosine."""
    level = cfg.get("not_found_level")
    return f"relevance {level:g}" if isinstance(level, (int, float)) else f"cosine {cfg.get('min_score')}"

def fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    unit = METRIC_BY_KEY[key].unit if key in METRIC_BY_KEY else ""
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "usd":
        return f"${value:.4f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def fmt_delta(key: str, delta: float | None) -> str:
    if delta is None:
        return "—"
    unit = METRIC_BY_KEY[key].unit
    if unit == "ms":
        return f"{delta:+,.0f} ms"
    if unit == "usd":
        return f"{delta:+.4f}"
    return f"{delta:+.3f}"


def describe(result: EvalResult) -> str:
    fp, cfg = result.fingerprint, result.meta.get("release_config", {})
    judge = fp.get("judge") or "off (no API key)"
    return (f"release [bold]{result.release}[/bold] — kb {cfg.get('kb')} v{fp.get('index_version')}, "
            f"k={cfg.get('retrieval_k')}, generation {fp.get('generation')}, judge {judge}; "
            f"{result.summary['n']} items ({result.summary['n_answerable']} answerable, "
            f"{result.summary['n_unanswerable']} unanswerable) in {result.meta.get('seconds', 0):.1f} s")


# --- terminal --------------------------------------------------------------------------------------------
def print_run(console: Console, result: EvalResult, *, worst: int = 8) -> None:
    console.print(describe(result))
    table = Table(title=f"Eval of '{result.release}' on {result.meta.get('dataset_name', result.dataset)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("what it measures", style="dim")
    for m in METRICS:
        table.add_row(m.label, fmt(m.key, result.summary.get(m.key)), m.help)
    console.print(table)
    extra = result.summary
    console.print(f"fallback rate {fmt('', extra.get('fallback_rate'))} · errors {extra.get('errors')} · "
                  f"total cost ${extra.get('cost_total_usd', 0):.4f} (+ judge ${extra.get('judge_cost_usd', 0):.4f})"
                  + (f" · stored as eval run #{result.run_id}" if result.run_id else ""))
    problems = [i for i in result.items if i.problem]
    if problems and worst:
        items = Table(title=f"Items with a problem ({len(problems)} of {len(result.items)}; "
                            f"showing {min(worst, len(problems))})")
        for col in ("qid", "question", "problem", "cited", "relevant"):
            items.add_column(col, overflow="fold")
        for i in problems[:worst]:
            items.add_row(i.qid, i.question[:60], i.problem or "", ", ".join(i.cited_doc_ids) or "—",
                          ", ".join(i.relevant_doc_ids) or "(unanswerable)")
        console.print(items)


def print_comparison(console: Console, a: EvalResult, b: EvalResult, comparison: dict[str, Any] | None = None,
                     *, limit: int = 15) -> None:
    comparison = comparison or compare(a, b)
    console.print(f"A: {describe(a)}")
    console.print(f"B: {describe(b)}")
    table = Table(title=f"'{a.release}' (A) vs '{b.release}' (B) on {a.meta.get('dataset_name', a.dataset)}")
    table.add_column("metric")
    table.add_column(f"A {a.release}", justify="right")
    table.add_column(f"B {b.release}", justify="right")
    table.add_column("Δ (B−A)", justify="right")
    for row in comparison["metrics"]:
        style = {"b": "green", "a": "red"}.get(row["better"] or "", "")
        delta = fmt_delta(row["key"], row["delta"])
        table.add_row(row["label"], fmt(row["key"], row["a"]), fmt(row["key"], row["b"]),
                      f"[{style}]{delta}[/{style}]" if style else delta)
    console.print(table)
    console.print(f"Per item (score: correct answer, or correct 'not found'; ties within ±{comparison['margin']}): "
                  f"[green]B better on {len(comparison['wins'])}[/green], "
                  f"[red]worse on {len(comparison['losses'])}[/red], same on {comparison['ties']}")
    for title, rows, style in (("B better", comparison["wins"], "green"), ("B worse", comparison["losses"], "red")):
        if not rows:
            continue
        items = Table(title=f"{title} ({len(rows)})", title_style=style)
        for col in ("qid", "question", "A", "B", "A cites", "B cites"):
            items.add_column(col, overflow="fold")
        for r in rows[:limit]:
            items.add_row(r["qid"], r["question"][:55], f"{r['a_score']:.2f} {r['a_status']}",
                          f"{r['b_score']:.2f} {r['b_status']}", ", ".join(r["a_cited"]) or "—",
                          ", ".join(r["b_cited"]) or "—")
        console.print(items)


# --- JSON ------------------------------------------------------------------------------------------------
def to_json(results: list[EvalResult], *, items: bool = True) -> str:
    payload: dict[str, Any] = {"runs": [r.to_dict(items=items) for r in results]}
    if len(results) == 2:
        payload["comparison"] = compare(results[0], results[1])
    return json.dumps(payload, indent=1, ensure_ascii=False, default=str)


# --- HTML ------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def metric_bars_svg(results: list[EvalResult], keys: tuple[str, ...] = QUALITY_KEYS) -> str:
    """Grouped horizontal bars, one group per quality metric (0..1), one bar per release."""
    keys = tuple(k for k in keys if any(r.summary.get(k) is not None for r in results))
    n = len(results)
    bar_h, gap, label_w, plot_w, value_w = 14, 14, 190, 420, 56
    group_h = n * bar_h + gap
    height = len(keys) * group_h + 34
    width = label_w + plot_w + value_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="quality metrics per release">']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + tick * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 22}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{tick:g}</text>')
    for g, key in enumerate(keys):
        y0 = 6 + g * group_h
        metric = METRIC_BY_KEY[key]
        arrow = "" if metric.higher_is_better else " (lower is better)"
        parts.append(f'<text x="{label_w - 8}" y="{y0 + n * bar_h / 2 + 4:.1f}" class="label" '
                     f'text-anchor="end">{_e(metric.label + arrow)}</text>')
        for r_i, result in enumerate(results):
            value = result.summary.get(key)
            y = y0 + r_i * bar_h
            color = PALETTE[r_i % len(PALETTE)]
            if value is None:
                parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 3}" class="value">n/a</text>')
                continue
            w = max(0.0, min(1.0, float(value))) * plot_w
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}">'
                         f'<title>{_e(result.release)}: {_e(metric.label)} {value:.3f}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}" class="value">{value:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def distribution_svg(results: list[EvalResult], values_of: Any, *, unit: str, title: str) -> str:
    """One row per release: every item as a dot, a p25–p75 box, p50 and p95 marks, on a shared axis."""
    series = [[float(v) for v in values_of(r)] for r in results]
    everything = [v for s in series for v in s]
    if not everything:
        return f'<p class="note">No {_e(title.lower())} to show.</p>'
    hi = max(everything)
    if hi <= 0:
        return f'<p class="note">Every answer: 0 {_e(unit)} ({_e(title.lower())}).</p>'
    label_w, plot_w, row_h = 130, 520, 38
    height = len(results) * row_h + 40
    width = label_w + plot_w + 30

    def x(v: float) -> float:
        return label_w + v / hi * plot_w

    def show(v: float) -> str:
        return f"{v:,.0f} ms" if unit == "ms" else f"${v:.4f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{_e(title)}">']
    for k in range(5):
        v = hi * k / 4
        parts.append(f'<line x1="{x(v):.1f}" y1="4" x2="{x(v):.1f}" y2="{height - 26}" class="grid"/>'
                     f'<text x="{x(v):.1f}" y="{height - 10}" class="tick" text-anchor="middle">{_e(show(v))}</text>')
    for r_i, (result, values) in enumerate(zip(results, series)):
        y = 10 + r_i * row_h
        mid = y + row_h / 2 - 4
        color = PALETTE[r_i % len(PALETTE)]
        parts.append(f'<text x="{label_w - 8}" y="{mid + 4:.1f}" class="label" text-anchor="end">'
                     f'{_e(result.release)}</text>')
        if not values:
            continue
        p25, p50, p75, p95 = (percentile(values, q) or 0.0 for q in (25, 50, 75, 95))
        parts.append(f'<rect x="{x(p25):.1f}" y="{mid - 9:.1f}" width="{max(1.0, x(p75) - x(p25)):.1f}" height="18" '
                     f'fill="{color}" fill-opacity="0.18" stroke="{color}"/>')
        for i, v in enumerate(values):
            jitter = ((i * 7919) % 13 - 6) * 0.9
            parts.append(f'<circle cx="{x(v):.1f}" cy="{mid + jitter:.1f}" r="2.6" fill="{color}" fill-opacity="0.7"/>')
        parts.append(f'<line x1="{x(p50):.1f}" y1="{mid - 12:.1f}" x2="{x(p50):.1f}" y2="{mid + 12:.1f}" '
                     f'stroke="#111" stroke-width="2"><title>p50 {_e(show(p50))}</title></line>')
        parts.append(f'<line x1="{x(p95):.1f}" y1="{mid - 12:.1f}" x2="{x(p95):.1f}" y2="{mid + 12:.1f}" '
                     f'stroke="#111" stroke-dasharray="3 2"><title>p95 {_e(show(p95))}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6475;margin:0 0 16px}.card{background:#fff;border:1px solid #e3e6eb;border-radius:8px;padding:16px;margin:12px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#fafbfc;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#137333;font-weight:600}.worse{color:#b3261e;font-weight:600}.note{color:#5b6475}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
svg .grid{stroke:#e7e9ee}svg .tick{font-size:10px;fill:#6b7280}svg .label{font-size:12px;fill:#1d2330}
svg .value{font-size:10px;fill:#374151}.legend span{margin-right:18px}.pill{font-size:11px;padding:1px 6px;border-radius:8px;background:#eef1f6}
.win{background:#eaf6ee}.loss{background:#fdecea}code{font-size:12px}
"""


def render_html(results: list[EvalResult], *, title: str | None = None) -> str:
    """The report page for one run, or a side-by-side comparison of several runs on the same dataset."""
    if not results:
        raise ValueError("no results to report")
    dataset = results[0].meta.get("dataset_name", results[0].dataset)
    names = " vs ".join(r.release for r in results)
    title = title or f"Deskmate eval — {names} on {dataset}"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    legend = "".join(f'<span><i class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(r.release)}</span>'
                     for i, r in enumerate(results))
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
           f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body><main>",
           f"<h1>{_e(title)}</h1><p class=sub>Generated {generated} · dataset <code>{_e(results[0].dataset)}</code> · "
           f"{results[0].summary['n']} items</p>"]

    # releases
    out.append("<div class=card><table><tr><th>release</th><th>kb / index</th><th>k</th><th>not found below</th>"
               "<th>generation</th><th>judge</th><th>run</th></tr>")
    for i, r in enumerate(results):
        cfg, fp = r.meta.get("release_config", {}), r.fingerprint
        out.append(f"<tr><td><i class=swatch style='background:{PALETTE[i % len(PALETTE)]}'></i>{_e(r.release)}</td>"
                   f"<td>{_e(cfg.get('kb'))} v{_e(fp.get('index_version'))}</td><td>{_e(cfg.get('retrieval_k'))}</td>"
                   f"<td>{_e(_not_found(cfg))}</td><td>{_e(fp.get('generation'))}</td>"
                   f"<td>{_e(fp.get('judge') or 'off (no API key)')}</td>"
                   f"<td>{'#' + str(r.run_id) if r.run_id else '—'} · {r.meta.get('seconds', 0):.1f} s</td></tr>")
    out.append("</table></div>")

    # metric table
    out.append("<h2>Figures</h2><div class=card><table><tr><th>metric</th>")
    out += [f"<th class=num>{_e(r.release)}</th>" for r in results]
    if len(results) == 2:
        out.append("<th class=num>Δ</th>")
    out.append("<th>what it measures</th></tr>")
    comparison = compare(results[0], results[1]) if len(results) == 2 else None
    for idx, m in enumerate(METRICS):
        out.append(f"<tr><td>{_e(m.label)}</td>")
        out += [f"<td class=num>{_e(fmt(m.key, r.summary.get(m.key)))}</td>" for r in results]
        if comparison is not None:
            row = comparison["metrics"][idx]
            css = {"b": "better", "a": "worse"}.get(row["better"] or "", "")
            out.append(f"<td class='num {css}'>{_e(fmt_delta(m.key, row['delta']))}</td>")
        out.append(f"<td class=note>{_e(m.help)}</td></tr>")
    out.append("</table></div>")

    # charts
    out.append(f"<h2>Quality per release</h2><div class=card><p class=legend>{legend}</p>{metric_bars_svg(results)}</div>")
    out.append("<h2>Latency per answer (retrieval + generation)</h2><div class=card>"
               + distribution_svg(results, lambda r: [i.latency_ms for i in r.items if not i.error], unit="ms",
                                  title="Latency")
               + "<p class=note>Each dot is one question; the box spans p25–p75, the solid line is p50, "
                 "the dashed line p95.</p></div>")
    out.append("<h2>Cost per answer</h2><div class=card>"
               + distribution_svg(results, lambda r: [i.cost_usd for i in r.items if not i.error], unit="USD",
                                  title="Cost per answer")
               + "</div>")

    # wins / losses
    if comparison is not None:
        out.append(f"<h2>Per item: '{_e(comparison['b'])}' against '{_e(comparison['a'])}'</h2><div class=card>"
                   f"<p><span class=better>better on {len(comparison['wins'])}</span> · "
                   f"<span class=worse>worse on {len(comparison['losses'])}</span> · same on {comparison['ties']} "
                   f"<span class=note>(score: a correct answer — judge grade or token F1 — or a correct "
                   f"'not found'; ties within ±{comparison['margin']})</span></p>")
        rows = comparison["wins"] + comparison["losses"]
        if rows:
            out.append("<table><tr><th>qid</th><th>question</th><th class=num>A</th><th class=num>B</th>"
                       "<th>A cites</th><th>B cites</th><th>relevant</th></tr>")
            for r in rows:
                css = "win" if r in comparison["wins"] else "loss"
                out.append(f"<tr class={css}><td>{_e(r['qid'])}</td><td>{_e(r['question'])}</td>"
                           f"<td class=num>{r['a_score']:.2f} <span class=pill>{_e(r['a_status'])}</span></td>"
                           f"<td class=num>{r['b_score']:.2f} <span class=pill>{_e(r['b_status'])}</span></td>"
                           f"<td>{_e(', '.join(r['a_cited']) or '—')}</td><td>{_e(', '.join(r['b_cited']) or '—')}</td>"
                           f"<td>{_e(', '.join(r['relevant']) or '(unanswerable)')}</td></tr>")
            out.append("</table>")
        out.append("</div>")

    # items of each run
    for i, r in enumerate(results):
        out.append(f"<h2><i class=swatch style='background:{PALETTE[i % len(PALETTE)]}'></i>Items — {_e(r.release)}</h2>"
                   "<div class=card><table><tr><th>qid</th><th>question</th><th>status</th><th>problem</th>"
                   "<th class=num>recall</th><th class=num>F1</th><th class=num>judge</th><th>cited</th><th>relevant</th>"
                   "<th class=num>ms</th></tr>")
        for item in r.items:
            css = "loss" if item.problem else ""
            status = item.error and f"error: {item.error[:60]}" or item.status + (" (fallback)" if item.fallback else "")
            out.append(f"<tr class='{css}'><td>{_e(item.qid)}</td><td title='{_e(item.answer[:600])}'>{_e(item.question)}</td>"
                       f"<td>{_e(status)}</td><td>{_e(item.problem or '')}</td><td class=num>{_e(fmt('', item.recall))}</td>"
                       f"<td class=num>{_e(fmt('', item.f1))}</td><td class=num>{_e(fmt('', item.judge))}</td>"
                       f"<td>{_e(', '.join(item.cited_doc_ids) or '—')}</td>"
                       f"<td>{_e(', '.join(item.relevant_doc_ids) or ('(unanswerable)' if item.answerable is False else '?'))}</td>"
                       f"<td class=num>{item.latency_ms:,.0f}</td></tr>")
        out.append("</table></div>")
    out.append("<p class=note>Hover a question for the answer; hover a bar or a mark for its value.</p></main></body></html>")
    return "".join(out)
