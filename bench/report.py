"""Writes a run's results: ``results.json``, ``report.md`` (tables) and PNG plots; and the short
summary printed on the terminal.

``python -m bench.report DIR`` draws the report and plots again from ``DIR/results.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.results import BASELINES, SYSTEMS, Result, Series

SYSTEM_ORDER = list(SYSTEMS)
COLORS = {
    "http-direct": "#7f7f7f",
    "s3-direct": "#bcbd22",
    "hf-snapshot-download": "#8c564b",
    "fc-fuse-hf": "#9467bd",
    "fc-fuse-http": "#1f77b4",
    "fc-client-http": "#17becf",
    "http-parallel": "#525252",
    "conn-direct": "#c49c94",
    "conn-parallel": "#8c564b",
    "fc-fuse-conn": "#9467bd",
    "fc-client-conn": "#c5b0d5",
    "fc-fuse-s3": "#2ca02c",
    "fc-client-s3": "#98df8a",
    "rclone-s3": "#ff7f0e",
    "s3fs-s3": "#d62728",
}


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _sorted(series: list[Series]) -> list[Series]:
    cases: list[str] = []
    for s in series:
        if s.case not in cases:
            cases.append(s.case)
    return sorted(
        series,
        key=lambda s: (
            s.metric,
            cases.index(s.case),
            SYSTEM_ORDER.index(s.system) if s.system in SYSTEM_ORDER else 99,
        ),
    )


# ---- summary ------------------------------------------------------------------------------


def summary_rows(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    """One row per (scenario, case, metric) of the headline metric; a column per system:
    ``median (speed-up vs the no-cache read)``."""
    systems = [s for s in SYSTEM_ORDER if any(x.system == s for r in results for x in r.series)]
    header = ["scenario", "case", "unit", *systems]
    rows = []
    for r in results:
        if not r.series:
            continue
        metric = r.extra.get("headline_metric") or r.series[0].metric
        ratios: dict[tuple[str, str], float] = {}
        for x in r.speedups():  # the first baseline of a system: its single-stream read
            if x["metric"] == metric:
                ratios.setdefault((x["case"], x["system"]), x["speedup"])
        cases: list[str] = []
        for s in r.series:
            if s.metric == metric and s.case not in cases:
                cases.append(s.case)
        for case in cases:
            cells = []
            for system in systems:
                s = r.find(case, system, metric)
                if s is None:
                    cells.append("")
                    continue
                ratio = ratios.get((case, system))
                cells.append(
                    fmt(s.median) + (f" ({fmt_ratio(ratio)})" if ratio is not None else "")
                )
            if any(cells):
                rows.append([r.name, case, metric, *cells])
    return header, rows


def terminal_summary(results: list[Result]) -> str:
    header, rows = summary_rows(results)
    # Drop empty columns, then align.
    keep = [i for i in range(len(header)) if i < 3 or any(row[i] for row in rows)]
    header = [header[i] for i in keep]
    rows = [[row[i] for i in keep] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


# ---- markdown -----------------------------------------------------------------------------


def scenario_markdown(r: Result, plots: list[str]) -> str:
    out = [f"## {r.title}", ""]
    if r.error:
        out += ["**This scenario failed:**", "", "```", r.error.strip()[-8000:], "```", ""]
    if r.params:
        out.append("Parameters: " + ", ".join(f"`{k}={v}`" for k, v in r.params.items()))
        out.append("")
    ratios: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for x in r.speedups():
        ratios.setdefault((x["case"], x["system"], x["metric"]), []).append(x)
    rows = []
    for s in _sorted(r.series):
        vs = "; ".join(
            f"{fmt_ratio(x['speedup'])} vs {x['baseline']} ({x['baseline_case']})"
            for x in ratios.get((s.case, s.system, s.metric), [])
        )
        rows.append(
            [
                s.case,
                s.system,
                s.metric + ("" if s.higher_is_better else " (lower is better)"),
                fmt(s.median),
                fmt(min(s.values)) if s.values else "—",
                fmt(max(s.values)) if s.values else "—",
                str(len(s.values)),
                vs,
            ]
        )
    if rows:
        header = ["case", "system", "unit", "median", "min", "max", "runs", "speed-up"]
        out += [_table(header, rows), ""]
    if r.skipped:
        out.append("Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in r.skipped.items()))
        out.append("")
    for note in r.notes:
        out.append(f"- {note}")
    if r.notes:
        out.append("")
    extra = {k: v for k, v in r.extra.items() if k != "headline_metric"}
    if extra:
        out += ["Details:", "", "```json", json.dumps(extra, indent=1, default=str), "```", ""]
    for p in plots:
        out += [f"![{r.name}]({p})", ""]
    out.append(f"_Scenario time: {r.seconds:.0f} s._")
    out.append("")
    return "\n".join(out)


def write_markdown(
    path: Path, meta: dict[str, Any], results: list[Result], plots: dict[str, list[str]]
) -> None:
    out = [
        f"# fluidcache benchmark — {meta['started']} ({meta['params']['sizes']['mode']} mode)",
        "",
    ]
    out += [f"Command: `{meta['command']}`  ", f"Wall time: {meta['wall_seconds']:.0f} s", ""]
    m = meta["machine"]
    out += ["## Machine", ""]
    out.append(
        _table(
            ["CPU", "cores", "memory", "kernel", "load average (start → end)"],
            [
                [
                    m["cpu"],
                    str(m["cores"]),
                    f"{m['memory_bytes'] / 2**30:.1f} GiB",
                    m["kernel"],
                    f"{m['load_start']} → {m.get('load_end', '?')}",
                ]
            ],
        )
    )
    out += ["", "## Versions", ""]
    out.append(_table(["component", "version"], [[k, v] for k, v in meta["versions"].items()]))
    out += ["", "## Setup", ""]
    for line in meta["setup"]:
        out.append(f"- {line}")
    out += ["", "Systems compared:", ""]
    out.append(_table(["system", "what it is"], [[k, v] for k, v in SYSTEMS.items()]))
    out += ["", "Every parameter of this run:", "", "```json"]
    out += [json.dumps(meta["params"], indent=1), "```", ""]
    out += ["## Summary", ""]
    out.append(
        "Medians over the repetitions; in brackets, how many times faster than reading the same "
        "source with no cache (`http-direct` for HTTP, `s3-direct` for S3)."
    )
    out.append("")
    header, rows = summary_rows(results)
    out += [_table(header, rows), ""]
    for r in results:
        out.append(scenario_markdown(r, plots.get(r.name, [])))
    path.write_text("\n".join(out))


# ---- plots --------------------------------------------------------------------------------


def plot_all(results: list[Result], out_dir: Path) -> dict[str, list[str]]:
    """One PNG per scenario and metric (bars by case and system, or lines where series have an
    x); returns scenario -> file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, list[str]] = {}
    for r in results:
        files: list[str] = []
        groups: dict[tuple[str, str], list[Series]] = {}
        for s in r.series:
            groups.setdefault((s.group, s.metric), []).append(s)
        for (group, metric), series in groups.items():
            fig, ax = plt.subplots(figsize=(10, 5.2), dpi=100)
            if group:
                _lines(ax, series)
            else:
                _bars(ax, series)
                _expected(ax, series, r.extra.get("expected", {}).get(metric))
            better = "higher" if series[0].higher_is_better else "lower"
            ax.set_ylabel(f"{metric} ({better} is better)")
            ax.set_title(f"{r.title}" + (f" — {group}" if group else "") + f" [{metric}]")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8, loc="best")
            fig.tight_layout()
            slug = "".join(c if c.isalnum() else "_" for c in f"{r.name}_{group}_{metric}")
            name = "_".join(p for p in slug.split("_") if p) + ".png"
            fig.savefig(out_dir / name)
            plt.close(fig)
            files.append(name)
        written[r.name] = files
    return written


def _bars(ax: Any, series: list[Series]) -> None:
    cases: list[str] = []
    for s in series:
        if s.case not in cases:
            cases.append(s.case)
    systems = [x for x in SYSTEM_ORDER if any(s.system == x for s in series)]
    width = 0.8 / max(1, len(systems))
    values = [v for s in series for v in s.values if v > 0]
    for i, system in enumerate(systems):
        xs, ys, lo, hi = [], [], [], []
        for j, case in enumerate(cases):
            s = next((s for s in series if s.case == case and s.system == system), None)
            if s is None or not s.values:
                continue
            xs.append(j + (i - (len(systems) - 1) / 2) * width)
            ys.append(s.median)
            lo.append(s.median - min(s.values))
            hi.append(max(s.values) - s.median)
        ax.bar(
            xs,
            ys,
            width,
            yerr=[lo, hi],
            capsize=2,
            label=system,
            color=COLORS.get(system),
            hatch="//" if system in BASELINES else None,
        )
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=15 if len(cases) > 4 else 0, fontsize=8)
    if values and max(values) / min(values) > 50:
        ax.set_yscale("log")


def _expected(ax: Any, series: list[Series], model: dict[str, Any] | None) -> None:
    """A model's prediction per case (computed, not measured), drawn as markers on the bars.

    ``model`` is ``{"label": ..., "values": {case: value}}``.
    """
    if not model:
        return
    cases = list(dict.fromkeys(s.case for s in series))
    points = [(cases.index(c), v) for c, v in model["values"].items() if c in cases]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, marker="_", s=900, color="black", label=model["label"], zorder=5)


def _lines(ax: Any, series: list[Series]) -> None:
    """One line per system, through its series' x positions."""
    lines: dict[tuple[str, str], list[Series]] = {}
    for s in series:
        if s.x is not None and s.values:
            what = s.case.split(": ", 1)[1] if ": " in s.case else ""
            lines.setdefault((s.system, what), []).append(s)
    order = sorted(lines, key=lambda k: SYSTEM_ORDER.index(k[0]) if k[0] in SYSTEM_ORDER else 99)
    for system, what in order:
        ss = sorted(lines[(system, what)], key=lambda s: s.x or 0.0)
        ax.errorbar(
            [s.x for s in ss],
            [s.median for s in ss],
            yerr=[[s.median - min(s.values) for s in ss], [max(s.values) - s.median for s in ss]],
            marker="o",
            capsize=3,
            label=f"{system} — {what}" if what else system,
            color=COLORS.get(system),
            linestyle="--" if system in BASELINES else "-",
        )
    xs = sorted({s.x for s in series if s.x is not None})
    if xs and xs[-1] / max(xs[0], 1) >= 16:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])


def write_json(path: Path, meta: dict[str, Any], results: list[Result]) -> None:
    doc = {**meta, "scenarios": {r.name: r.as_dict() for r in results}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    import sys

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    doc = json.loads((out / "results.json").read_text())
    results = [Result.from_dict(d) for d in doc.pop("scenarios").values()]
    plots = plot_all(results, out)
    write_markdown(out / "report.md", doc, results, plots)
    print(terminal_summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
