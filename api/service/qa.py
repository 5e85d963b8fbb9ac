"""The QA page at ``/``: nightly status, catalogue counts and science plots, server-rendered.

Every block of the page is one :class:`QaQuery`: a title, its ADQL and the kind of block
it renders as. The page runs each query through the read path as a catalogue reader
(:mod:`skyledger.schema.readpath`, with a row cap per query), and shows under each block
the ADQL and a link that runs it at ``/tap/sync``, so what a plot shows can be checked and
reused. The queries are ADQL that is also valid PostgreSQL (no TOP: ORDER BY and the row
cap instead), so they run through the read path as they stand.

No JavaScript and no external resources: plots are inline SVG (:mod:`.plots`).
``GET /qa/{key}.svg`` serves one plot on its own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import fastapi
import psycopg
from fastapi.responses import HTMLResponse, Response
from skyledger.schema.errors import QueryError, SkyledgerError
from skyledger.schema.readpath import Limits, QueryResult, connect_reader, run_statement
from skyledger.schema.settings import Settings

from .plots import PALETTE, Figure, Series, render_svg

__all__ = ["QUERIES", "QaQuery", "router", "tap_url"]

router = fastapi.APIRouter()


@dataclass(frozen=True)
class QaQuery:
    """One block of the page: its data is exactly what ``adql`` returns."""

    key: str
    title: str
    #: how the rows are shown: a table ("runs", "files", "counts") or a plot ("bpt",
    #: "histogram", "rotation_curves", "gradients")
    kind: str
    adql: str
    #: what the block shows and how to read it
    caption: str
    #: said instead of an empty frame when the query returns no rows
    no_data: str
    #: the row cap of this query (the settings' query_max_rows caps it further)
    max_rows: int = 5000

    @property
    def is_plot(self) -> bool:
        return self.kind in PLOT_KINDS


def tap_url(adql: str, response_format: str = "csv") -> str:
    """The TAP synchronous query that returns the rows of ``adql``."""
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "RESPONSEFORMAT": response_format, "QUERY": adql}
    return "/tap/sync?" + urlencode(params, quote_via=quote)


def _bpt_line(alias: str, spectrum: str, line: str) -> str:
    # Component 0 is the narrow (or only) component, the one the BPT diagram is defined on.
    return (
        f"JOIN catalog.lines AS {alias} ON {alias}.spectrum_id = {spectrum}.spectrum_id AND {alias}.line = '{line}'\n"
        f"  AND {alias}.component = 0 AND {alias}.flux > 0"
    )


def _own_or_other_arm(spectrum: str, line: str) -> str:
    # As the nebula task does: the lines of the classified spectrum, and where it lacks one
    # (a two-arm cube's bin measures H-beta in its blue arm, H-alpha in its red one) those
    # of another spectrum of its source.
    return (
        f"({spectrum}.spectrum_id = n.spectrum_id OR NOT EXISTS (SELECT own.spectrum_id FROM catalog.lines AS own "
        f"WHERE own.spectrum_id = n.spectrum_id AND own.line = '{line}'))"
    )


QUERIES: tuple[QaQuery, ...] = (
    QaQuery(
        key="runs",
        title="Last runs of every task",
        kind="runs",
        # A self-join counts the runs of the same task at least as new (ADQL has no window
        # functions, and ADQL 2.0 no scalar subquery in a comparison).
        adql="""SELECT r.task, r.run_id, r.version, r.status, r.n_inputs, r.n_results, r.n_flagged, r.error,
       r.device, r.started_at, r.finished_at, r.is_current
FROM catalog.runs AS r
JOIN catalog.runs AS newer ON newer.task = r.task AND newer.run_id >= r.run_id
GROUP BY r.task, r.run_id, r.version, r.status, r.n_inputs, r.n_results, r.n_flagged, r.error,
       r.device, r.started_at, r.finished_at, r.is_current
HAVING COUNT(*) <= 3
ORDER BY r.task, r.run_id DESC""",
        caption="The three newest runs of each task, newest first; 'current' marks the runs the catalogue views read.",
        no_data="No task has run yet.",
        max_rows=500,
    ),
    QaQuery(
        key="ingest_files",
        title="Ingested files",
        kind="files",
        adql="""SELECT f.file_id, f.survey, f.file, f.file_version, f.status, f.reason, f.reader, f.n_sources,
       f.n_spectra, f.n_lines, f.started_at, f.duration_s
FROM catalog.ingest_files AS f
ORDER BY f.file_id DESC""",
        caption="Every file the ingest has seen, newest first, with the reason of every rejection.",
        no_data="No file has been ingested yet.",
        max_rows=50,
    ),
    QaQuery(
        key="counts",
        title="Catalogue rows per survey and task",
        kind="counts",
        adql="""SELECT s.survey, 'spectra' AS what, COUNT(*) AS n FROM catalog.spectra AS s GROUP BY s.survey
UNION ALL
SELECT s.survey, 'sources', COUNT(DISTINCT s.source_id) FROM catalog.spectra AS s GROUP BY s.survey
UNION ALL
SELECT s.survey, 'lines', COUNT(*) FROM catalog.lines AS x
  JOIN catalog.spectra AS s ON s.spectrum_id = x.spectrum_id GROUP BY s.survey
UNION ALL
SELECT s.survey, 'stellar_kinematics', COUNT(*) FROM catalog.stellar_kinematics AS x
  JOIN catalog.spectra AS s ON s.spectrum_id = x.spectrum_id GROUP BY s.survey
UNION ALL
SELECT s.survey, 'abundances', COUNT(*) FROM catalog.abundances AS x
  JOIN catalog.spectra AS s ON s.spectrum_id = x.spectrum_id GROUP BY s.survey
UNION ALL
SELECT s.survey, 'nebula_class', COUNT(*) FROM catalog.nebula_class AS x
  JOIN catalog.spectra AS s ON s.spectrum_id = x.spectrum_id GROUP BY s.survey
UNION ALL
SELECT g.survey, 'rotation', COUNT(*) FROM catalog.rotation AS x
  JOIN (SELECT DISTINCT parent_source_id, survey FROM catalog.spectra) AS g
    ON g.parent_source_id = x.source_id GROUP BY g.survey
UNION ALL
SELECT g.survey, 'metallicity_gradients', COUNT(*) FROM catalog.metallicity_gradients AS x
  JOIN (SELECT DISTINCT parent_source_id, survey FROM catalog.spectra) AS g
    ON g.parent_source_id = x.source_id GROUP BY g.survey
ORDER BY 1, 2""",
        caption="Rows of each catalog view per survey (rotation fits and gradients are per galaxy, counted by the survey "
        "of the galaxy's spectra).",
        no_data="The catalogue is empty: nothing has been ingested yet.",
        max_rows=2000,
    ),
    QaQuery(
        key="bpt",
        title="BPT diagram",
        kind="bpt",
        adql=f"""SELECT n.spectrum_id, n.class, n.context,
       LOG10(n2.flux / ha.flux) AS log_nii_ha, LOG10(o3.flux / hb.flux) AS log_oiii_hb
FROM catalog.nebula_class AS n
JOIN catalog.spectra AS s ON s.spectrum_id = n.spectrum_id
JOIN catalog.spectra AS red ON red.source_id = s.source_id
JOIN catalog.spectra AS blue ON blue.source_id = s.source_id
{_bpt_line("ha", "red", "HA6563")}
{_bpt_line("n2", "red", "NII6584")} AND n2.source_task = ha.source_task
{_bpt_line("hb", "blue", "HB4861")} AND hb.source_task = ha.source_task
{_bpt_line("o3", "blue", "OIII5007")} AND o3.source_task = ha.source_task
WHERE n.method = 'diagnostic'
  AND {_own_or_other_arm("red", "HA6563")}
  AND {_own_or_other_arm("blue", "HB4861")}
ORDER BY n.spectrum_id""",
        caption="[O III] 5007/H\u03b2 against [N II] 6584/H\u03b1 (narrow components), coloured by the class of the "
        "line-ratio diagnostic; solid: Kewley et al. (2001) maximum starburst, dashed: Kauffmann et al. (2003).",
        no_data="No spectrum has a diagnostic nebula class and positive H\u03b1, H\u03b2, [N II] and [O III] fluxes yet.",
        max_rows=10_000,
    ),
    QaQuery(
        key="oh_histogram",
        title="Oxygen abundance per method",
        kind="histogram",
        adql="""SELECT a.method, a.oh_bin, COUNT(*) AS n
FROM (SELECT method, FLOOR(oh * 20) / 20.0 AS oh_bin FROM catalog.abundances WHERE oh IS NOT NULL) AS a
GROUP BY a.method, a.oh_bin
ORDER BY a.method, a.oh_bin""",
        caption="Histograms of 12 + log(O/H) in bins of 0.05 dex, one per abundance method (binned in the database).",
        no_data="No abundance has been measured yet.",
        max_rows=10_000,
    ),
    QaQuery(
        key="rotation_curves",
        title="Rotation curves",
        kind="rotation_curves",
        adql="""SELECT r.source_id, r.object_id, r.component, r.model, r.vmax, r.r_turn, r.r_max, r.flags
FROM catalog.rotation AS r
WHERE r.vmax IS NOT NULL AND r.r_turn IS NOT NULL AND r.r_max IS NOT NULL
ORDER BY r.object_id, r.source_id, r.component, r.model""",
        caption="Fitted deprojected rotation curves per galaxy, out to the outermost point used; dashed where the fit "
        "has flag bits set (catalog.flag_definitions says what they mean).",
        no_data="No galaxy has a rotation fit yet.",
        max_rows=2000,
    ),
    QaQuery(
        key="gradients",
        title="Metallicity gradients",
        kind="gradients",
        adql="""SELECT g.source_id, g.object_id, g.method, g.geometry, g.central_oh, g.slope_dex_per_arcsec,
       g.r_min, g.r_max, g.n_points, g.flags
FROM catalog.metallicity_gradients AS g
WHERE g.slope_dex_per_arcsec IS NOT NULL AND g.central_oh IS NOT NULL
ORDER BY g.object_id, g.source_id, g.method""",
        caption="Fitted radial 12 + log(O/H) gradients per galaxy and abundance method, over the radii of the points "
        "used; dashed where the fit has flag bits set.",
        no_data="No galaxy has a metallicity gradient yet.",
        max_rows=2000,
    ),
)

PLOT_KINDS = frozenset({"bpt", "histogram", "rotation_curves", "gradients"})
SECTIONS = (
    ("nightly", "Nightly status", ("runs", "ingest_files")),
    ("catalogue", "Catalogue", ("counts",)),
    ("plots", "Plots", ("bpt", "oh_histogram", "rotation_curves", "gradients")),
)
#: galaxies drawn per per-galaxy plot (the ADQL link gives them all)
MAX_GALAXIES = 12

_BY_KEY = {q.key: q for q in QUERIES}

# --------------------------------------------------------------------------- running


def _run_queries(settings: Settings, queries: Sequence[QaQuery]) -> dict[str, QueryResult | QueryError]:
    """Every query on one reader connection (each statement in its own rolled-back
    transaction); a query that fails gives its error, the others still run."""
    base = Limits.from_settings(settings)
    out: dict[str, QueryResult | QueryError] = {}
    conn: psycopg.Connection | None = None
    try:
        for q in queries:
            if conn is None or conn.closed:
                conn = connect_reader(settings, base)
            limits = replace(base, max_rows=min(q.max_rows, base.max_rows))
            try:
                out[q.key] = run_statement(conn, q.adql, limits)
            except QueryError as err:
                out[q.key] = err
    finally:
        if conn is not None:
            conn.close()
    return out


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row)) for row in result.rows]


# --------------------------------------------------------------------------- tables


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="null"></td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, datetime):
        return f'<td class="time">{value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.3g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], body: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _status(value: str | None) -> str:
    text = escape(value or "")
    return f'<td><span class="status status-{escape((value or "none").lower())}">{text}</span></td>'


def _short(text: str | None, limit: int = 240) -> str:
    if not text:
        return '<td class="null"></td>'
    shown = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return f'<td class="message" title="{escape(text)}">{escape(shown)}</td>'


def _runs_summary(rows: list[dict[str, Any]]) -> str:
    """One line: which tasks' newest run did not succeed (rows are newest first per task)."""
    newest: dict[str, dict[str, Any]] = {}
    for r in rows:
        newest.setdefault(r["task"], r)
    bad = [f"{task} ({r['status']})" for task, r in sorted(newest.items()) if r["status"] != "succeeded"]
    if bad:
        return f'<p class="summary bad">Newest run not succeeded: {escape(", ".join(bad))}.</p>'
    return f'<p class="summary good">The newest run of each of the {len(newest)} tasks succeeded.</p>'


def _files_summary(rows: list[dict[str, Any]]) -> str:
    rejected = sum(1 for r in rows if r["status"] == "rejected")
    cls = "bad" if rejected else "good"
    return f'<p class="summary {cls}">Rejected: {rejected} of the {len(rows)} files shown.</p>'


def _render_runs(q: QaQuery, result: QueryResult) -> str:
    body = []
    for r in _rows(result):
        body.append(
            "<tr>"
            + _cell(r["task"])
            + _cell(r["run_id"])
            + _cell(r["version"])
            + _status(r["status"])
            + "".join(_cell(r[k]) for k in ("n_inputs", "n_results", "n_flagged"))
            + _short(r["error"])
            + _cell(r["device"])
            + _cell(r["started_at"])
            + _cell(r["finished_at"])
            + _cell(r["is_current"])
            + "</tr>"
        )
    headers = ("task", "run", "version", "status", "inputs", "results", "flagged", "error", "device",
               "started (UTC)", "finished (UTC)", "current")
    return _runs_summary(_rows(result)) + _table(headers, body)


def _render_files(q: QaQuery, result: QueryResult) -> str:
    body = []
    for r in _rows(result):
        path = r["file"] or ""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        body.append(
            "<tr>"
            + _cell(r["file_id"])
            + _cell(r["survey"])
            + f'<td class="file" title="{escape(path)}">{escape(name)}</td>'
            + _cell(r["file_version"])
            + _status(r["status"])
            + _short(r["reason"])
            + _cell(r["reader"])
            + "".join(_cell(r[k]) for k in ("n_sources", "n_spectra", "n_lines"))
            + _cell(r["started_at"])
            + (f'<td class="num">{r["duration_s"]:.2f}</td>' if r["duration_s"] is not None else _cell(None))
            + "</tr>"
        )
    headers = ("id", "survey", "file", "version", "status", "reason", "reader", "sources", "spectra", "lines",
               "started (UTC)", "seconds")
    return _files_summary(_rows(result)) + _table(headers, body)


_COUNT_COLUMNS = ("spectra", "sources", "lines", "stellar_kinematics", "abundances", "nebula_class", "rotation",
                  "metallicity_gradients")


def _render_counts(q: QaQuery, result: QueryResult) -> str:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for r in _rows(result):
        counts[r["survey"]][r["what"]] = r["n"]
    totals = {c: sum(row.get(c, 0) for row in counts.values()) for c in _COUNT_COLUMNS}
    body = [
        "<tr>" + _cell(survey) + "".join(_cell(row.get(c, 0)) for c in _COUNT_COLUMNS) + "</tr>"
        for survey, row in sorted(counts.items())
    ]
    body.append('<tr class="total">' + _cell("all surveys") + "".join(_cell(totals[c]) for c in _COUNT_COLUMNS) + "</tr>")
    return _table(("survey", *_COUNT_COLUMNS), body)


# --------------------------------------------------------------------------- plots

#: fixed colours of the nebula classes, so that the same class looks the same everywhere
CLASS_COLORS = {"HII": "#0072B2", "AGN": "#D55E00", "DIG": "#009E73", "PN": "#CC79A7", "SNR": "#E69F00",
                "UNKNOWN": "#888888"}


@cache
def _bpt_curves(x_lo: float) -> tuple[Series, Series]:
    """The Kewley 2001 and Kauffmann 2003 [N II] demarcations, left of their asymptotes."""
    # The functions are the classifier's own (pure arithmetic on floats as on tensors);
    # imported here so that the service starts without torch.
    from skyledger.compute.classification.criteria import kauffmann03_nii, kewley01_nii

    def sample(curve: Callable[[float], float], asymptote: float) -> tuple[list[float], list[float]]:
        xs = [x_lo + (asymptote - 0.02 - x_lo) * i / 199 for i in range(200)]
        return xs, [float(curve(x)) for x in xs]

    kx, ky = sample(kewley01_nii, 0.47)
    fx, fy = sample(kauffmann03_nii, 0.05)
    return (
        Series("Kewley+01", kx, ky, style="line", color="#333333", reference=True),
        Series("Kauffmann+03", fx, fy, style="line", color="#333333", dashed=True, reference=True),
    )


def _limits(values: list[float], lo: float, hi: float, floor: float, ceiling: float) -> tuple[float, float]:
    """The classic window of a diagram, widened to hold the data (within reason)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite:
        lo, hi = min(lo, min(finite) - 0.1), max(hi, max(finite) + 0.1)
    return max(lo, floor), min(hi, ceiling)


def _figures_bpt(q: QaQuery, rows: list[dict[str, Any]]) -> list[Figure]:
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_class[r["class"] or "UNKNOWN"].append(r)
    order = [c for c in CLASS_COLORS if c in by_class] + sorted(set(by_class) - set(CLASS_COLORS))
    xlim = _limits([r["log_nii_ha"] for r in rows], -1.6, 0.7, -3.0, 2.0)
    ylim = _limits([r["log_oiii_hb"] for r in rows], -1.3, 1.5, -3.0, 2.5)
    series = [
        Series(f"{c} ({len(by_class[c])})", [r["log_nii_ha"] for r in by_class[c]],
               [r["log_oiii_hb"] for r in by_class[c]], color=CLASS_COLORS.get(c),
               tips=[f"spectrum {r['spectrum_id']} ({c}, {r['context']})" for r in by_class[c]])
        for c in order
    ]
    return [
        Figure(
            title=q.title,
            xlabel="log([N II] 6584 / H\u03b1)",
            ylabel="log([O III] 5007 / H\u03b2)",
            series=[*series, *_bpt_curves(xlim[0])],
            xlim=xlim,
            ylim=ylim,
            width=600,
            height=440,
            note=f"{len(rows)} spectra, diagnostic classes",
            ident="plot-bpt",
        )
    ]


def _figures_histogram(q: QaQuery, rows: list[dict[str, Any]]) -> list[Figure]:
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    bins = [r["oh_bin"] for r in rows]
    xlim = (min(bins) - 0.05, max(bins) + 0.1)
    ordered = sorted(by_method, key=lambda m: (-sum(r["n"] for r in by_method[m]), m))
    figures = []
    for i, method in enumerate(ordered):
        group = by_method[method]
        total = sum(r["n"] for r in group)
        figures.append(
            Figure(
                title=method,
                xlabel="12 + log(O/H)",
                ylabel="spectra",
                series=[Series(method, [r["oh_bin"] for r in group], [r["n"] for r in group], style="bars",
                               width=0.05, color=PALETTE[i % len(PALETTE)])],
                xlim=xlim,
                width=320,
                height=220,
                legend=False,
                integer_y=True,
                note=f"{total} values",
                ident=f"plot-oh-{i}",
            )
        )
    return figures


def _galaxies(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    by_galaxy: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_galaxy.setdefault((r["source_id"], r["object_id"] or str(r["source_id"])), []).append(r)
    return by_galaxy


def _curve_speeds(model: str, radii: list[float], vmax: float, r_turn: float) -> list[float]:
    # The task's own curve definitions; imported here so that the service starts without torch.
    import torch
    from skyledger.compute.kinematics.rotation_curves import rotation_curve

    r = torch.tensor(radii, dtype=torch.float64)
    v = rotation_curve(r, torch.tensor(vmax, dtype=torch.float64), torch.tensor(r_turn, dtype=torch.float64), model)
    return [float(x) for x in v]


def _top(values: list[float]) -> float:
    """An upper axis limit 5 % above the largest finite value (1 without one)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return max(finite) * 1.05 if finite and max(finite) > 0 else 1.0


def _figures_rotation(q: QaQuery, rows: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for i, ((source_id, name), group) in enumerate(list(_galaxies(rows).items())[:MAX_GALAXIES]):
        series = []
        for j, r in enumerate(group):
            if r["model"] not in ("arctan", "freeman"):
                continue  # a model this page does not know how to draw
            radii = [r["r_max"] * k / 100 for k in range(101)]
            speeds = _curve_speeds(r["model"], radii, r["vmax"], r["r_turn"])
            series.append(
                Series(f"{r['component']} {r['model']} ({r['vmax']:.0f} km/s)", radii, speeds, style="line",
                       color=PALETTE[j % len(PALETTE)], dashed=bool(r["flags"]))
            )
        figures.append(
            Figure(title=f"Galaxy {name}", xlabel="deprojected radius (arcsec)", ylabel="V_rot (km/s)",
                   series=series, note=f"source {source_id}", ident=f"plot-rot-{i}", width=520, height=320,
                   xlim=(0.0, _top([x for s in series for x in s.x])),
                   ylim=(0.0, _top([y for s in series for y in s.y])))
        )
    return figures


def _figures_gradients(q: QaQuery, rows: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for i, ((source_id, name), group) in enumerate(list(_galaxies(rows).items())[:MAX_GALAXIES]):
        series = []
        for j, r in enumerate(group):
            lo, hi = r["r_min"] or 0.0, r["r_max"] or 0.0
            radii = [lo, hi] if hi > lo else [0.0, max(hi, 1.0)]
            oh = [r["central_oh"] + r["slope_dex_per_arcsec"] * x for x in radii]
            series.append(
                Series(f"{r['method']} ({r['slope_dex_per_arcsec']:+.3f} dex/\u2033)", radii, oh, style="line",
                       color=PALETTE[j % len(PALETTE)], dashed=bool(r["flags"]))
            )
        geometry = ", ".join(sorted({r["geometry"] for r in group if r["geometry"]}))
        figures.append(
            Figure(title=f"Galaxy {name}", xlabel="deprojected radius (arcsec)", ylabel="12 + log(O/H)",
                   series=series, note=f"source {source_id}; geometry {geometry}", ident=f"plot-grad-{i}",
                   xlim=(0.0, _top([x for s in series for x in s.x])),
                   width=560, height=320)
        )
    return figures


_FIGURES: dict[str, Callable[[QaQuery, list[dict[str, Any]]], list[Figure]]] = {
    "bpt": _figures_bpt,
    "histogram": _figures_histogram,
    "rotation_curves": _figures_rotation,
    "gradients": _figures_gradients,
}
_TABLES: dict[str, Callable[[QaQuery, QueryResult], str]] = {
    "runs": _render_runs,
    "files": _render_files,
    "counts": _render_counts,
}


def figures(q: QaQuery, result: QueryResult) -> list[Figure]:
    """The figures of a plot query's rows ([] when there are none)."""
    rows = _rows(result)
    return _FIGURES[q.kind](q, rows) if rows else []


# --------------------------------------------------------------------------- page


def _block(q: QaQuery, outcome: QueryResult | QueryError) -> str:
    parts = [f'<article class="block" id="{q.key}" data-kind="{q.kind}">', f"<h3>{escape(q.title)}</h3>",
             f'<p class="caption">{escape(q.caption)}</p>']
    if isinstance(outcome, QueryError):
        parts.append(f'<p class="query-error">The query failed: {escape(str(outcome))}</p>')
    elif not outcome.rows:
        parts.append(f'<p class="no-data">No data. {escape(q.no_data)}</p>')
    else:
        if q.is_plot:
            figs = figures(q, outcome)
            parts.append('<div class="figures">' + "".join(render_svg(f) for f in figs) + "</div>")
            n_galaxies = len(_galaxies(_rows(outcome))) if q.kind in ("rotation_curves", "gradients") else 0
            if n_galaxies > MAX_GALAXIES:
                parts.append(f'<p class="note">The first {MAX_GALAXIES} of {n_galaxies} galaxies are drawn; '
                             "the query returns them all.</p>")
        else:
            parts.append(_TABLES[q.kind](q, outcome))
        if outcome.truncated:
            parts.append(f'<p class="note">Only the first {len(outcome.rows):,} rows are shown (the row cap); '
                         "the query gives them all.</p>")
    parts.append(
        f'<p class="adql-link"><a class="adql" href="{escape(tap_url(q.adql))}">Run this ADQL at /tap (CSV)</a></p>'
        f'<pre class="adql-text">{escape(q.adql)}</pre>'
    )
    parts.append("</article>")
    return "\n".join(parts)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1d2a3a;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c8d3df;font-size:13px}
header a{color:#fff}
nav a{margin-right:14px}
main{padding:8px 24px 32px}
section>h2{border-bottom:2px solid #1d2a3a;padding-bottom:4px;margin-top:28px}
.block{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin:14px 0}
.block h3{margin:0 0 4px} .caption{margin:0 0 10px;color:#444;font-size:14px}
.figures{display:flex;flex-wrap:wrap;gap:12px} .figures svg{border:1px solid #eee;max-width:100%;height:auto}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #e5e7ea;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eef1f4} td.num{text-align:right;font-variant-numeric:tabular-nums} td.time{white-space:nowrap}
td.message{white-space:normal;min-width:16em;max-width:32em;color:#8a1f11;font-size:12px} tr.total td{font-weight:600;border-top:2px solid #999}
.status{padding:1px 6px;border-radius:8px;font-size:12px;background:#e5e7ea}
.status-succeeded,.status-loaded{background:#d5f0dc;color:#155724}
.status-failed,.status-rejected{background:#f8d7da;color:#721c24}
.status-running{background:#fff3cd;color:#856404}
.no-data{color:#555;font-style:italic;padding:16px;background:#fafafa;border:1px dashed #ccc}
.query-error{color:#721c24;background:#f8d7da;padding:8px} .note{font-size:13px;color:#555}
.adql-link{margin:10px 0 2px;font-size:13px}
pre.adql-text{background:#f3f4f6;border:1px solid #e1e3e6;padding:8px;font-size:12px;overflow-x:auto;margin:0}
.banner{background:#f8d7da;color:#721c24;padding:12px 24px}
.summary{font-size:14px;font-weight:600;margin:0 0 8px} .summary.good{color:#155724} .summary.bad{color:#721c24}
"""


def render_page(settings: Settings, now: datetime | None = None) -> tuple[int, str]:
    """The whole page (status code, HTML): every block, or a banner saying why none could be read."""
    now = now or datetime.now(UTC)
    try:
        outcomes = _run_queries(settings, QUERIES)
        banner = ""
    except SkyledgerError as err:
        outcomes = {}
        banner = f'<p class="banner">The catalogue cannot be read: {escape(str(err))}</p>'
    nav = " ".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title, _ in SECTIONS)
    body = []
    for sid, title, keys in SECTIONS:
        if not outcomes:
            continue
        blocks = "\n".join(_block(_BY_KEY[k], outcomes[k]) for k in keys)
        body.append(f'<section id="{sid}"><h2>{escape(title)}</h2>\n{blocks}\n</section>')
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>skyledger QA</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
<header><h1>skyledger quality assurance</h1>
<p>Generated {now.strftime("%Y-%m-%d %H:%M:%S")} UTC from the catalogue, as a reader. Every table and plot shows the
ADQL it comes from; <a href="/tap">/tap</a> runs it.</p>
<nav>{nav}</nav></header>
{banner}
<main>
{chr(10).join(body)}
</main>
</body>
</html>
"""
    return (503 if banner else 200), html


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def qa_page(request: fastapi.Request) -> HTMLResponse:
    # A plain def: FastAPI runs it in its thread pool, so the blocking queries do not stall
    # the event loop that serves the TAP endpoints.
    status, html = render_page(request.app.state.settings)
    return HTMLResponse(html, status_code=status)


@router.get("/qa/{key}.svg", include_in_schema=False)
def qa_plot(key: str, request: fastapi.Request, index: int = 0) -> Response:
    """One figure of one plot (``index``: which galaxy or method, in page order)."""
    q = _BY_KEY.get(key)
    if q is None or not q.is_plot:
        known = ", ".join(k for k, v in _BY_KEY.items() if v.is_plot)
        return Response(f"no plot {key!r}; the plots are {known}\n", status_code=404, media_type="text/plain")
    try:
        outcome = _run_queries(request.app.state.settings, [q])[q.key]
    except SkyledgerError as err:
        return Response(f"the catalogue cannot be read: {err}\n", status_code=503, media_type="text/plain")
    if isinstance(outcome, QueryError):
        return Response(f"the query failed: {outcome}\n", status_code=500, media_type="text/plain")
    figs = figures(q, outcome)
    if not 0 <= index < len(figs):
        return Response(f"plot {key!r} has {len(figs)} figure(s); {q.no_data if not figs else ''}\n",
                        status_code=404, media_type="text/plain")
    return Response(render_svg(figs[index]), media_type="image/svg+xml")
