"""The dashboard page: plain HTML with inline SVG charts and two forms; no script, nothing from the internet."""

from __future__ import annotations

from html import escape
from typing import Any

from playbooks.canary import FIGURE_ROWS  # the same rows as `canary status`
from playbooks.dashboard.charts import Marker, Series, bar_chart, histogram_chart, line_chart
from playbooks.dashboard.html import table
from playbooks.dashboard.learned import gap_links, learned_html

WINDOWS = (7, 14, 30, 90)
STATUS_COLORS = {"answered": "#16a34a", "not_found": "#d97706", "maintenance": "#6b7280", "error": "#dc2626"}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
header{display:flex;gap:1.5rem;align-items:center;padding:.8rem 1.5rem;background:#0f172a;color:#f8fafc}
header h1{font-size:1.15rem;margin:0}header .who{margin-left:auto;opacity:.8}
main{padding:1rem 1.5rem;max-width:1400px}section{margin:0 0 1.6rem}h2{font-size:1.05rem;margin:.2rem 0 .6rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1rem}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:.7rem .9rem}
.card h3{font-size:.92rem;margin:0 0 .3rem}.kpis{display:flex;gap:1rem;flex-wrap:wrap}
.kpi{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:.5rem .9rem;min-width:120px}
.kpi b{display:block;font-size:1.25rem}svg.chart{width:100%;height:auto}#drift-card svg.chart{max-width:760px}
svg .grid{stroke:#e2e8f0}svg .tick,svg .legend{font-size:11px;fill:#475569}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #e2e8f0;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f1f5f9}.muted{color:#64748b}.flag{color:#fff;background:#dc2626;
border-radius:4px;padding:.1rem .45rem}.ok{color:#fff;background:#16a34a;border-radius:4px;padding:.1rem .45rem}
.pending{color:#fff;background:#d97706;border-radius:4px;padding:.1rem .45rem}.kpi.alert b{color:#dc2626}
.flash{padding:.6rem .9rem;border-radius:6px;margin-bottom:1rem;white-space:pre-wrap}.flash.good{background:#dcfce7}
.flash.bad{background:#fee2e2}form.inline{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.15rem}ul{margin:.2rem 0;padding-left:1.1rem}
"""


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def _money(v: float) -> str:
    return f"${v:.2f}" if v >= 1 or v == 0 else f"${v:.3f}"


def release_markers(overview: dict[str, Any]) -> list[Marker]:
    out = []
    for e in overview["release_events"]:
        if e["day"] is None or e["action"] == "bootstrap":
            continue
        color = "#dc2626" if e["action"] == "rollback" else "#2563eb"
        out.append(Marker(e["day"], f"{e['action']}: {e['previous']} → {e['release']} by {e['actor']} at {e['at']}",
                          color))
    return out


def charts(overview: dict[str, Any]) -> dict[str, str]:
    labels = overview["labels"]
    markers = release_markers(overview)
    per_day = overview["answers_per_day"]
    releases = overview["releases"]
    budget = overview["cost_usd"]["budget"]
    return {
        "Answers per day": bar_chart(
            "chart-answers", "Answers per day by outcome", labels,
            [Series(s, per_day[s], STATUS_COLORS[s]) for s in per_day], markers=markers),
        "Up-vote rate per release": line_chart(
            "chart-up-rate", "Share of up-votes among votes, per release and day", labels,
            [Series(name, r["up_rate"]) for name, r in releases.items()], y_max=1.0, y_format=_pct, markers=markers),
        "LLM fallback rate per release": line_chart(
            "chart-fallback-rate", "Share of LLM answers that fell back to excerpts, per release and day", labels,
            [Series(name, r["fallback_rate"]) for name, r in releases.items()], y_max=1.0, y_format=_pct,
            markers=markers),
        "Latency (question → answer)": line_chart(
            "chart-latency", "End-to-end latency p50 and p95, seconds", labels,
            [Series("p50", overview["latency_s"]["p50"], "#2563eb"),
             Series("p95", overview["latency_s"]["p95"], "#dc2626", dashed=True)],
            y_format=lambda v: f"{v:.1f}s", markers=markers),
        "LLM cost per day": bar_chart(
            "chart-cost", "LLM cost per day (USD) against the daily budget", labels,
            [Series("cost", overview["cost_usd"]["per_day"], "#7c3aed")], y_format=_money,
            hline=(budget, f"budget {_money(budget)}") if budget else None),
    }


def source_label(source: dict[str, Any]) -> str:
    heading = source["heading"]
    return f"{source['title']} › {heading}" if heading and heading != source["title"] else source["title"]


def gaps_html(gaps: dict[str, Any]) -> str:
    rows = []
    for g in gaps["groups"]:
        others = "".join(f"<li>{escape(q)}</li>" for q in g["questions"][1:])
        sources = "".join(f'<li>{escape(source_label(s))} <span class="muted">({escape(s["location"])}, '
                          f'×{s["count"]})</span></li>' for s in g["sources"])
        sources = sources or '<span class="muted">nothing retrieved</span>'
        reasons = ", ".join(f"{escape(r)} ×{c}" for r, c in g["reasons"].items()) or "—"
        rows.append([str(g["count"]), f"<b>{escape(g['label'])}</b>" + (f"<ul>{others}</ul>" if others else ""),
                     f"{g['unanswered']} unanswered, {g['downvoted']} down-voted" + gap_links(g), reasons,
                     f"<ul>{sources}</ul>" if g["sources"] else sources])
    note = (f'<p class="muted">{gaps["questions"]} questions, grouped by '
            f'{"meaning (embeddings)" if gaps["method"] == "embedding" else "shared words"}.</p>')
    return note + table(["asked", "question (and other phrasings)", "outcome", "down-vote reasons", "sources it found"],
                         rows, "No unanswered or down-voted questions in this window.")


def drift_html(drift: dict[str, Any]) -> str:
    badge = ('<span class="flag">shifted</span>' if drift["flagged"] else '<span class="ok">stable</span>'
             if drift["ks"] is not None and "not enough" not in drift["reason"] else '<span class="muted">—</span>')
    tw, lw = drift["this_week"], drift["last_week"]
    chart = histogram_chart("chart-drift", "Top retrieval score: this week vs last week", drift["edges"],
                            [Series(f"this week (n={tw['n']})", tw["hist"], "#2563eb"),
                             Series(f"last week (n={lw['n']})", lw["hist"], "#94a3b8")])

    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    stats = (f"<p>{badge} {escape(drift['reason'])}</p><p class='muted'>mean {fmt(tw['mean'])} vs {fmt(lw['mean'])}"
             f" (shift {fmt(drift['mean_shift'])}), KS D={fmt(drift['ks'])}, p={fmt(drift['p_value'])}; flagged at "
             f"p&lt;{drift['alpha']} or |shift|≥{drift['mean_shift_threshold']} with ≥{drift['min_samples']} "
             f"answers a week.</p>")
    return f'<div class="card" id="drift-card">{stats}{chart}</div>'


def controls_html(releases: dict[str, Any], csrf: str, days: int, canary: dict[str, Any] | None = None) -> str:
    options = "".join(f'<option value="{escape(r["name"])}">{escape(r["name"])}</option>'
                      for r in releases["releases"] if not r["active"])
    hidden = f'<input type="hidden" name="csrf" value="{escape(csrf)}"><input type="hidden" name="days" value="{days}">'
    return f"""<div class="grid"><div class="card"><h3>Kill-switch</h3>
<form class="inline" method="post" action="/dashboard/actions/kill" id="kill-form">{hidden}
<label>mode<select name="mode"><option>on</option><option>retrieval-only</option><option>off</option></select></label>
<label>where<input name="target" placeholder="everywhere, or slack:C0123…" size="22"></label>
<label>reason<input name="reason" size="28"></label><button type="submit">Set</button></form></div>
<div class="card"><h3>Rollback</h3><form class="inline" method="post" action="/dashboard/actions/rollback" id="rollback-form">
{hidden}<label>to release<select name="release"><option value="">the previous one</option>{options}</select></label>
<button type="submit">Roll back</button></form>
<p class="muted">Both go through the admin command handler and are written to the audit log.</p></div>
{canary_controls_html(releases, canary, hidden)}</div>"""


def canary_controls_html(releases: dict[str, Any], canary: dict[str, Any] | None, hidden: str) -> str:
    info = (canary or {}).get("canary")
    if info is not None and info["state"] == "running":
        return (f'<div class="card"><h3>Canary</h3><p><b>{escape(info["candidate"])}</b> is running '
                f'({info["share"]:g}%, {escape(info["mode"])}).</p><form class="inline" method="post" '
                f'action="/dashboard/actions/canary" id="canary-stop-form">{hidden}<input type="hidden" name="action" '
                'value="stop"><label>reason<input name="reason" size="28"></label><button type="submit">Stop the '
                'canary</button></form></div>')
    options = "".join(f'<option value="{escape(r["name"])}">{escape(r["name"])}</option>'
                      for r in releases["releases"] if not r["active"])
    return f"""<div class="card"><h3>Canary</h3><form class="inline" method="post" action="/dashboard/actions/canary"
id="canary-form">{hidden}<input type="hidden" name="action" value="start"><label>candidate<select name="release">{options}
</select></label><label>share %<input name="share" value="10" size="4"></label><label>exclude channels<input
name="exclude" placeholder="slack:C0123 …" size="18"></label><label>shadow<input type="checkbox" name="shadow"></label>
<button type="submit">Start canary</button></form><p class="muted">Rolled back or promoted automatically; see the
Canary section.</p></div>"""


def canary_html(view: dict[str, Any] | None) -> str:
    """The latest canary: each arm's figures with 95 % intervals, the sequential test per guard metric, the decision."""
    info = (view or {}).get("canary")
    if info is None:
        return '<p class="muted">No canary yet. Start one below (Controls) or with <code>canary RELEASE --share 10</code>.</p>'
    badge = {"running": "pending", "promoted": "ok", "rolled_back": "flag"}.get(info["state"], "muted")
    head = (f'<p><span class="{badge}" data-state="{escape(info["state"])}">{escape(info["state"])}</span> '
            f'<b>{escape(info["candidate"])}</b> vs {escape(info["baseline"])} — {escape(info["mode"])}, '
            f'{info["share"]:g}%{", excluding " + escape(", ".join(info["excluded"])) if info["excluded"] else ""}; '
            f'started {escape(info["started_at"][:16])} by {escape(info["started_by"])}, ends by '
            f'{escape(info["ends_by"][:16])} UTC; minimum {info["min_answers"]} candidate answers.</p>')
    decision = f'<p id="canary-decision">{escape(info["decision"])}</p>' if info["decision"] else ""
    if info["mode"] == "shadow":
        return head + f'<p>{escape((view or {})["shadow_text"])}</p>' + decision
    view = view or {}
    arms = view["arms"]
    rows = [["answers", str(arms["baseline"]["answers"]), str(arms["candidate"]["answers"])]]
    rows += [[escape(label), escape(fmt(arms["baseline"][key])), escape(fmt(arms["candidate"][key]))]
             for label, key, fmt in FIGURE_ROWS]
    tests = []
    for comp in view["verdict"]["comparisons"]:
        state = ('<span class="flag">worse</span>' if comp["worse"] else '<span class="ok">within margin</span>'
                 if comp["not_worse"] else '<span class="muted">undecided</span>')
        tests.append([escape(comp["metric"]), state, escape(comp["text"])])
    now = (f'<p>Now: <b>{escape(view["verdict"]["action"])}</b> — {escape(view["verdict"]["reason"])}</p>'
           if info["state"] == "running" else "")
    return (head + decision + now + table(["figure (95% interval)", "baseline", "candidate"], rows, "")
            + f'<h3>Sequential test: {escape(info["test"])}</h3>'
            + table(["guard metric", "state", "candidate − baseline (always-valid interval)"], tests, ""))


def releases_html(releases: dict[str, Any]) -> str:
    rows = [[("<b>" + escape(r["name"]) + "</b> ✓" if r["active"] else escape(r["name"])), escape(r["model"]),
             escape(str(r["index_version"] if r["index_version"] is not None else "latest")), str(r["retrieval_k"]),
             str(r["answers"]), f"{r['up']} / {r['down']}", str(r["fallbacks"]), escape(r["created_at"] or ""),
             escape(r["notes"] or "")] for r in releases["releases"]]
    history = [[escape(e["at"] or ""), escape(e["action"]) + (" (forced)" if e["forced"] else ""),
                escape(str(e["previous"] or "")), escape(e["release"]), escape(e["actor"])] for e in releases["history"]]
    return (table(["release", "model", "index", "k", "answers", "up / down", "fallbacks", "created", "notes"], rows,
                   "No releases yet.")
            + "<h3>Changes</h3>" + table(["when", "action", "from", "to", "by"], history, "No changes yet."))


def switches_html(switches: list[dict[str, Any]]) -> str:
    rows = [[escape(s["scope"]), escape(s["mode"]) + (" (lapsed)" if s["expired"] else ""), escape(s["reason"]),
             escape(s["set_by"]) + (" (automatic)" if s["automatic"] else ""), escape(s["set_at"] or "")]
            for s in switches]
    return table(["scope", "mode", "reason", "set by", "since"], rows, "No switches: Deskmate answers everywhere.")


def delivery_html(delivery: dict[str, Any]) -> str:
    """Replies the users have not got, each row marked: "answered, not yet delivered" (retried until the
    delivery deadline) or "delivery failed" (given up)."""
    rows = []
    for r in delivery["rows"]:
        badge = "pending" if r["delivery_state"] == "pending" else "flag"
        next_try = f'<br><span class="muted">next try {escape(r["next_attempt_at"])}</span>' if r["next_attempt_at"] else ""
        rows.append([str(r["interaction_id"]), f'<span class="{badge}" data-state="{escape(r["delivery_state"])}">'
                     f'{escape(r["label"])}</span>{next_try}', escape(r["status"]),
                     escape(f'{r["platform"]}:{r["channel"]}'), escape(r["answered_at"] or ""), str(r["attempts"]),
                     escape(r["error"] or "")])
    note = (f'<p class="muted">{delivery["undelivered"]} answered, not yet delivered (retried until the delivery '
            f'deadline); {delivery["failed"]} delivery failed; {delivery["failed_attempts"]} failed attempts.</p>')
    return note + table(["interaction", "delivery", "answer", "where", "answered", "attempts", "last error"], rows,
                         "Every answer reached its user.")


def sources_html(sources: dict[str, Any]) -> str:
    rows = []
    for r in sources["sources"]:
        status = r["status"] or "never synced"
        flagged = r["status"] in ("failed", "held", "partial")
        label = (f'<span class="flag" data-status="{escape(status)}">{escape(status)}</span>' if flagged
                 else escape(status))
        rows.append([escape(r["name"]) + ("" if r["declared"] else ' <span class="muted">(not declared)</span>'),
                     escape(r["kind"]), escape(r["schedule"]), label, escape(r["started_at"] or ""),
                     f'+{r["added"]} ~{r["updated"]} -{r["deleted"]} ={r["unchanged"]}', str(r["skipped"]),
                     escape("; ".join(r["errors"]))])
    error = f'<p class="flag">{escape(sources["error"])}</p>' if sources.get("error") else ""
    return error + table(["source", "kind", "schedule", "last run", "when", "documents", "skipped", "errors"], rows,
                          f"No sources declared in {sources['file']} (docs/sources.md).")


def audit_html(entries: list[dict[str, Any]]) -> str:
    rows = [[escape(e["at"] or ""), escape(e["actor"]), escape(e["where"]), f"<code>{escape(e['command'])}</code>",
             "yes" if e["allowed"] else "<b>refused</b>", escape(e["before"]), escape(e["after"]), escape(e["detail"])]
            for e in entries]
    return table(["when", "who", "where", "command", "allowed", "before", "after", "detail"], rows, "Empty.")


def render(*, viewer_label: str, days: int, overview: dict[str, Any], gaps: dict[str, Any], drift: dict[str, Any],
           releases: dict[str, Any], switches: list[dict[str, Any]], audit: list[dict[str, Any]], csrf: str,
           flash: tuple[str, bool] | None, delivery: dict[str, Any] | None = None,
           sources: dict[str, Any] | None = None, canary: dict[str, Any] | None = None,
           learned: dict[str, Any] | None = None) -> str:
    delivery = delivery or {"undelivered": 0, "failed": 0, "failed_attempts": 0, "rows": []}
    totals = overview["totals"]
    answered = totals.get("answered", 0) + totals.get("not_found", 0)
    votes = sum(r["votes"] for r in overview["releases"].values())
    global_mode = next((s["mode"] for s in switches if s["scope"] == "global" and not s["expired"]), "on")
    kpis = [("answers", str(answered)), ("not found", str(totals.get("not_found", 0))), ("votes", str(votes)),
            ("LLM cost", _money(overview["cost_usd"]["total"])), ("active release", overview["active_release"]),
            ("kill-switch (global)", global_mode), ("answered, not yet delivered", str(delivery["undelivered"])),
            ("delivery failed", str(delivery["failed"]))]
    alerts = {"answered, not yet delivered": delivery["undelivered"] > 0, "delivery failed": delivery["failed"] > 0}
    kpi_html = "".join(f'<div class="kpi{" alert" if alerts.get(k) else ""}" id="kpi-{k.replace(" ", "-").replace(",", "")}">'
                       f'<span class="muted">{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in kpis)
    chart_html = "".join(f'<div class="card"><h3>{escape(title)}</h3>{svg}</div>' for title, svg in charts(overview).items())
    window_options = "".join(f'<option value="{d}"{" selected" if d == days else ""}>last {d} days</option>'
                             for d in WINDOWS)
    flash_html = (f'<div class="flash {"good" if flash[1] else "bad"}" id="flash">{escape(flash[0])}</div>'
                  if flash else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Deskmate — operations</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>
<header><h1>Deskmate operations</h1><form method="get" action="/dashboard"><select name="days" id="window">{window_options}
</select> <button type="submit">Show</button></form><span class="who">signed in: {escape(viewer_label)}</span></header>
<main>{flash_html}
<section id="overview"><h2>Overview, {escape(overview['labels'][0])} – {escape(overview['labels'][-1])}</h2>
<div class="kpis">{kpi_html}</div><div class="grid" style="margin-top:1rem">{chart_html}</div></section>
<section id="delivery"><h2>Delivery</h2>{delivery_html(delivery)}</section>
<section id="gaps"><h2>Knowledge gaps</h2>{gaps_html(gaps)}</section>
{f'<section id="learned"><h2>Learned answers</h2>{learned_html(learned, csrf, days)}</section>' if learned else ""}
<section id="sources"><h2>Knowledge sources</h2>{sources_html(sources or {"file": "", "sources": []})}</section>
<section id="drift"><h2>Retrieval drift</h2>{drift_html(drift)}</section>
<section id="canary"><h2>Canary</h2>{canary_html(canary)}</section>
<section id="controls"><h2>Controls</h2>{controls_html(releases, csrf, days, canary)}</section>
<section id="releases"><h2>Releases</h2>{releases_html(releases)}</section>
<section id="switches"><h2>Kill-switches</h2>{switches_html(switches)}</section>
<section id="audit"><h2>Audit log</h2>{audit_html(audit)}</section>
</main></body></html>"""
