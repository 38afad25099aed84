"""`ctpipe report [--out FILE]`: one static HTML page about the sealed windows' data quality.

Plots (matplotlib Agg, PNG embedded as base64; no network assets): records and dead-letter rate
per window coloured by verdict, drift scores over windows with their thresholds, and per-feature
distributions of a window against its predecessor (from the stored TFDV statistics). Tables:
every window's verdict, counts and reasons. Model history (when a registry is given): the
candidates' metrics over time from the training runs' records (``<root>/runs/train-*.json``,
rejected candidates included: they never reach the registry), each run's gate decision, the
policy that started it, the version it pushed, and the registry's versions with their aliases and
the production alias's moves (the promotions still in effect, every rollback).
"""
from __future__ import annotations

import base64
import html
import io

from core.errors import StorageError

_COLOURS = {"PASS": "#2e7d32", "WARN": "#f9a825", "QUARANTINED": "#c62828"}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f'{html.escape(alt)}</figcaption></figure>'


def _counts_plot(windows):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    ids = [w.window_id for w in windows]
    records = [w.manifest["record_count"] for w in windows]
    ax.bar(range(len(ids)), records, color=[_COLOURS.get(w.verdict, "#555") for w in windows])
    ax.set_ylabel("records (bar colour = verdict)")
    ax2 = ax.twinx()
    rates = [w.manifest.get("dead_letters", 0) / max(1, w.manifest["record_count"] + w.manifest.get("dead_letters", 0))
             for w in windows]
    ax2.plot(range(len(ids)), rates, "k.-", label="dead-letter rate")
    ax2.set_ylabel("dead-letter rate")
    ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=7)
    ax2.legend(loc="upper right")
    return fig


def _drift_plot(windows):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    series: dict = {}
    thresholds = {}
    for i, w in enumerate(windows):
        for feature, s in (((w.manifest.get("quality") or {}).get("drift") or {}).get("features") or {}).items():
            if s["score"] is not None:
                series.setdefault(feature, []).append((i, s["score"]))
                thresholds[feature] = (s["metric"], s["threshold"])
    for feature, points in sorted(series.items()):
        metric, _t = thresholds[feature]
        ax.plot([p[0] for p in points], [p[1] for p in points], ".-", label=f"{feature} ({metric})")
    for metric, t in sorted({v for v in thresholds.values()}):
        ax.axhline(t, linestyle="--", linewidth=0.8, color="grey")
    ax.set_xticks(range(len(windows)), [w.window_id for w in windows], rotation=90, fontsize=7)
    ax.set_ylabel("drift vs previous window")
    if series:
        ax.legend(fontsize=7, ncol=3)
    return fig


def _distribution_plots(current, previous):
    import matplotlib.pyplot as plt

    from transforms.validate_windows import load_window_stats
    from transforms.validation import _feature_map, standard_histogram, value_frequencies

    now, before = _feature_map(load_window_stats(current)), _feature_map(load_window_stats(previous))
    out = []
    for name in sorted(set(now) & set(before)):
        a, b = now[name], before[name]
        fig, ax = plt.subplots(figsize=(4.5, 2.6))
        hist_a, hist_b = standard_histogram(a), standard_histogram(b)
        if hist_a and hist_b:
            for hist, label, colour in ((hist_b, previous.window_id, "#90a4ae"), (hist_a, current.window_id, "#1565c0")):
                total = sum(c for _l, _h, c in hist) or 1
                ax.stairs([c / total for _l, _h, c in hist], [hist[0][0]] + [h for _l, h, _c in hist],
                          label=label, color=colour, fill=colour == "#90a4ae", alpha=0.8)
        else:
            fa, fb = value_frequencies(a), value_frequencies(b)
            if not fa or not fb or len(set(fa) | set(fb)) > 30:
                plt.close(fig)
                continue
            keys = sorted(set(fa) | set(fb))
            ta, tb = sum(fa.values()) or 1, sum(fb.values()) or 1
            xs = range(len(keys))
            ax.bar([x - 0.2 for x in xs], [fb.get(k, 0) / tb for k in keys], 0.4, label=previous.window_id,
                   color="#90a4ae")
            ax.bar([x + 0.2 for x in xs], [fa.get(k, 0) / ta for k in keys], 0.4, label=current.window_id,
                   color="#1565c0")
            ax.set_xticks(list(xs), keys, rotation=90, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
        out.append((name, _png(fig)))
    return out


def training_runs(root: str) -> list[dict]:
    """The run records of training runs under ``root``, oldest first."""
    from core import layout, storage

    records = [storage.read_json(p) for p in storage.glob(storage.join(layout.runs_dir(root), "train-*.json"))]
    return sorted((r for r in records if r.get("kind") == "train"), key=lambda r: r.get("finished_at") or 0)


def _metrics_plot(runs):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    xs = range(len(runs))
    for name, style in (("auc", "o-"), ("accuracy", "s-")):
        ax.plot(xs, [(r.get("metrics") or {}).get(name) for r in runs], style, label=name, markersize=4)
    blessed = [i for i, r in enumerate(runs) if (r.get("blessing") or {}).get("blessed")]
    rejected = [i for i in xs if i not in blessed]
    for idx, colour, label in ((blessed, _COLOURS["PASS"], "blessed"), (rejected, _COLOURS["QUARANTINED"], "rejected")):
        ax.scatter(idx, [(runs[i].get("metrics") or {}).get("auc") for i in idx], s=80, facecolors="none",
                   edgecolors=colour, label=label, zorder=3)
    ax.set_xticks(list(xs), [r["run_id"][-8:] for r in runs], rotation=90, fontsize=7)
    ax.set_ylabel("candidate metric (held-out)")
    ax.legend(fontsize=7, ncol=4)
    return fig


def _iso(epoch_s) -> str:
    import datetime as dt

    if not epoch_s:
        return ""
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value if value is not None else ""))


def model_history(root: str, registry, model: str) -> list[str]:
    """The HTML parts of the model-history section."""
    runs = training_runs(root)
    parts = [f"<h2>Model history: {html.escape(model)}</h2>"]
    if runs:
        parts.append(_img(_png(_metrics_plot(runs)), "candidate metrics per training run (circles: gate decision)"))
    rows = []
    for r in runs:
        blessing = r.get("blessing") or {}
        trigger = r.get("trigger") or {}
        fired = ", ".join(p["policy"] for p in trigger.get("policies", [])) or "ctpipe train"
        failed = "; ".join(c["description"] for c in blessing.get("checks", []) if not c.get("passed"))
        windows = r.get("windows") or []
        span = f"{windows[0]['window_id']} .. {windows[-1]['window_id']} ({len(windows)})" if windows else ""
        metrics = r.get("metrics") or {}
        rows.append(f"<tr><td>{_iso(r.get('finished_at'))}</td><td><code>{html.escape(r['run_id'])}</code></td>"
                    f"<td>{html.escape(fired)}</td><td>{html.escape(span)}</td><td>{_fmt(metrics.get('auc'))}</td>"
                    f"<td>{_fmt(metrics.get('accuracy'))}</td><td>{_fmt(metrics.get('example_count'))}</td>"
                    f"<td style='color:{_COLOURS['PASS'] if blessing.get('blessed') else _COLOURS['QUARANTINED']}'>"
                    f"{'blessed' if blessing.get('blessed') else 'rejected'}</td>"
                    f"<td>{'v' + str(r['version']) if r.get('version') else ''}</td><td>{html.escape(failed)}</td></tr>")
    parts += ["<h3>Training runs and gate decisions</h3><table id='runs'><tr><th>finished</th><th>run</th>"
              "<th>started by</th><th>windows</th><th>auc</th><th>accuracy</th><th>examples</th><th>gate</th>"
              "<th>pushed</th><th>failed checks</th></tr>", *rows, "</table>"]
    if not runs:
        parts.append("<p>No training run recorded under this root yet.</p>")
    versions = registry.list_versions(model) if registry is not None else []
    vrows = [f"<tr><td>v{v.version}</td><td>{html.escape(v.created_at)}</td><td>{_fmt(v.metrics.get('auc'))}</td>"
             f"<td>{_fmt(v.metrics.get('accuracy'))}</td><td>{'yes' if v.blessed else 'no (forced)'}</td>"
             f"<td>{html.escape(', '.join(v.aliases))}</td><td><code>{html.escape(str(v.lineage.get('run_id')))}"
             f"</code></td></tr>" for v in versions]
    parts += ["<h3>Registry versions</h3><table id='versions'><tr><th>version</th><th>pushed</th><th>auc</th>"
              "<th>accuracy</th><th>blessed</th><th>aliases</th><th>run</th></tr>", *vrows, "</table>"]
    if registry is not None:
        moves = [dict(e, kind="promote") for e in registry.alias_history(model, "production")]
        moves += [dict(e, kind="rollback") for e in registry.alias_rollbacks(model, "production")]
        mrows = [f"<tr><td>{html.escape(str(m.get('at', '')))}</td><td>{m['kind']}</td>"
                 f"<td>{html.escape(str(m.get('from', '')))}</td><td>{html.escape(str(m.get('version', m.get('to', ''))))}"
                 f"</td><td>{html.escape(str(m.get('reason', '')))}</td></tr>"
                 for m in sorted(moves, key=lambda m: str(m.get("at", "")))]
        parts += ["<h3>Production alias moves</h3><table id='alias-moves'><tr><th>at</th><th>kind</th><th>from</th>"
                  "<th>to</th><th>reason</th></tr>", *mrows, "</table>"]
    return parts


def render_report(root: str, window_id: str | None = None, registry=None, model: str | None = None) -> str:
    """The HTML text of the report over the sealed windows under ``root``; with ``registry`` and
    ``model``, also the model history."""
    import matplotlib

    matplotlib.use("Agg")
    from core import window_store

    windows = window_store.list_sealed(root)
    if not windows:
        raise StorageError(f"no sealed windows under {root}; run `ctpipe backfill` first")
    by_id = {w.window_id: w for w in windows}
    if window_id is not None and window_id not in by_id:
        raise StorageError(f"no sealed window {window_id!r} under {root}; see `ctpipe windows list`")
    focus = by_id[window_id] if window_id else windows[-1]
    index = windows.index(focus)
    verdicts = {v: sum(1 for w in windows if w.verdict == v) for v in ("PASS", "WARN", "QUARANTINED")}
    rows = []
    for w in windows:
        dead = w.manifest.get("dead_letters", 0)
        total = w.manifest["record_count"] + dead
        rows.append(
            f'<tr><td>{w.window_id}</td><td>v{w.version}</td><td>{w.manifest["record_count"]}</td><td>{dead}</td>'
            f'<td>{dead / total if total else 0:.2%}</td><td style="color:{_COLOURS.get(w.verdict, "#000")}">'
            f'{w.verdict}{" (released)" if w.released else ""}</td>'
            f'<td>{html.escape("; ".join(w.manifest["validation"]["reasons"]))}</td></tr>')
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ctpipe data-quality report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}figure{display:inline-block;margin:4px}"
        "figcaption{font-size:11px;color:#555}</style></head><body>",
        f"<h1>ctpipe data-quality report</h1><p>storage root: <code>{html.escape(root)}</code>; "
        f"{len(windows)} sealed windows; " + ", ".join(f"{k}: {v}" for k, v in verdicts.items()) + "</p>",
        "<h2>Counts, dead-letter rate and verdicts</h2>", _img(_png(_counts_plot(windows)), "records per window"),
        "<h2>Drift scores over windows</h2>", _img(_png(_drift_plot(windows)), "drift scores"),
    ]
    if index > 0:
        previous = windows[index - 1]
        parts.append(f"<h2>Distributions: {focus.window_id} against {previous.window_id}</h2>")
        parts += [_img(png, f"distribution of {name}") for name, png in _distribution_plots(focus, previous)]
    else:
        parts.append(f"<h2>Distributions</h2><p>{focus.window_id} is the first window: no predecessor.</p>")
    parts += ["<h2>Windows</h2><table id='windows'><tr><th>window</th><th>version</th><th>records</th>"
              "<th>dead letters</th><th>dead-letter rate</th><th>verdict</th><th>reasons</th></tr>",
              *rows, "</table>"]
    if model is not None:
        parts += model_history(root, registry, model)
    parts.append("</body></html>")
    return "\n".join(parts)
