"""The run report: a Markdown summary of a run's manifest (and of a failure)."""

from __future__ import annotations

from typing import Any

from mfa.buildings.provenance import RULES
from mfa.textsafe import md_code_block, md_escape

__all__ = ["WARN_SHARE", "failure_markdown", "guesses_markdown", "report_markdown"]

#: A guessed share (of buildings or of tonnes) above which the report warns (0…1).
WARN_SHARE = 0.05


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; every cell escaped (reasons and codes come from input files)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(m: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """Markdown report of a published run; ``previous`` is the run it replaces as latest."""
    band = (m.get("uncertainty") or {}).get("totals_t", {})
    prev = (previous or {}).get("totals_t", {})
    rows = []
    for key, value in m["totals_t"].items():
        name = key.removesuffix("_t")
        change = f"{value - prev[key]:+,.0f}" if key in prev else "–"
        rows.append(
            [
                name,
                f"{value:,.0f}",
                f"{band.get(f'{name}_t_p05', float('nan')):,.0f}",
                f"{band.get(f'{name}_t_p95', float('nan')):,.0f}",
                change,
            ]
        )
    rc = m["row_counts"]
    parts = [
        f"# mfa run {md_escape(m['run_id'])}: {md_escape(m['pipeline'])}",
        f"Status **{md_escape(m['status'])}**, {m['started_at']} → {m['finished_at']} "
        f"({md_escape(m['runner'])}).",
        f"{rc['buildings']:,} buildings, {rc['districts']:,} districts, {rc['dropped']:,} "
        f"records left out of {rc['records_read']:,} read"
        + (
            f" ({rc['counted_in_buildings']:,} units counted in their building)"
            if rc.get("counted_in_buildings")
            else ""
        )
        + f"; {m['total_gfa_m2']:,.0f} m² floor area.",
        "## Material stock (t)",
        _table(
            ["material", "t", "p05", "p95", "change since previous run"],
            rows,
        ),
    ]
    quality = m.get("quality") or {}
    if quality:
        parts += [
            "## Data quality (share of buildings)",
            _table(
                ["attribute", "observed", "imputed", "missing"],
                [
                    [a, *(f"{q.get(k, 0):.0%}" for k in ("observed", "imputed", "missing"))]
                    for a, q in quality.items()
                    if a != "match"
                ],
            ),
        ]
    parts += guesses_markdown(m)
    reasons = m["dropped"]["counts_by_reason"][:8]
    if reasons:
        parts += [
            "## Left out (most frequent reasons)",
            _table(["count", "reason"], [[f"{r['count']:,}", r["reason"]] for r in reasons]),
        ]
    repairs = (m.get("repairs") or {}).get("counts", [])
    if repairs:
        parts += [
            "## Repairs",
            _table(
                ["count", "attribute", "reason"],
                [[f"{r['count']:,}", r["attribute"], r["reason"]] for r in repairs],
            ),
        ]
    flows = (m.get("flows") or {}).get("summary")
    if flows:
        base = m["flows"]["base_year"]
        parts += [
            f"## Expected demolition outflow {base + 1}–{base + 10}",
            _table(
                ["scenario", "t", "floor area a year"],
                [
                    [
                        name,
                        f"{s['outflow_t_next_10_years'].get('mass', 0):,.0f}",
                        f"{s['demolition_rate_per_year']:.2%}",
                    ]
                    for name, s in flows.items()
                ],
            ),
        ]
    qgis = m.get("qgis")
    if qgis:
        parts += [
            "## Open in QGIS",
            f"{md_escape(qgis['project'])}: the layers of {md_escape(qgis['geopackage'])}, "
            "styled and grouped (QGIS 3.22 or newer); "
            + ", ".join(md_escape(s) for s in qgis["styles"])
            + " style the GeoParquet layers of the same name (QGIS 3.34 or newer).",
        ]
    if m.get("pulled"):  # sources fetched from the services that publish them (mfa.pull)
        parts += [
            "## Pulled sources",
            _table(
                ["source", "protocol", "snapshot", "rows", "note"],
                [
                    [
                        p["role"],
                        p["protocol"],
                        f"{p['snapshot']['day']} ({'new' if p['changed'] else 'unchanged'})",
                        "" if p.get("rows") is None else f"{p['rows']:,}",
                        p.get("warning") or "",
                    ]
                    for p in m["pulled"]
                ],
            ),
        ]
    checks = [k for k in m["checks"] if k not in ("layers", "totals")]
    parts += [
        "## Checks passed",
        ", ".join(md_escape(c) for c in checks) + ".",
        "## Timings (s)",
        _table(["step", "seconds"], [[k, f"{v}"] for k, v in m["timings_s"].items()]),
    ]
    return "\n\n".join(parts) + "\n"


def guesses_markdown(m: dict[str, Any]) -> list[str]:
    """What the run guessed rather than measured: per attribute the share imputed (by
    buildings and by tonnes) and the lines of :func:`guess_lines`."""
    guessed = m.get("guessed") or {}
    lines = guess_lines(m)
    parts = ["## Guessed, not measured"]
    if guessed:
        parts.append(
            _table(
                ["attribute", "imputed (buildings)", "imputed (tonnes)", "missing (tonnes)"],
                [
                    [
                        a,
                        f"{g['imputed_buildings']:.1%}",
                        f"{g['imputed_mass']:.1%}",
                        f"{g['missing_mass']:.1%}",
                    ]
                    for a, g in guessed.items()
                ],
            )
        )
    by_rule = m.get("guessed_by_rule") or {}
    if by_rule:
        parts.append(
            "By rule (the rule that gave each building its value; `<attribute>_rule` in "
            "the buildings layer):"
        )
        parts.append(
            _table(
                ["attribute", "rule", "buildings", "t", "share of the tonnes"],
                [
                    [
                        a,
                        RULES.get(r, r),
                        f"{g['buildings']:,}",
                        f"{g['mass_t']:,.0f}",
                        f"{g['mass_share']:.1%}",
                    ]
                    for a, rules in by_rule.items()
                    for r, g in rules.items()
                ],
            )
        )
    if lines:
        parts.append("\n".join(lines))
    return parts if len(parts) > 1 else []


def guess_lines(m: dict[str, Any]) -> list[str]:
    """Markdown list items: construction years filled for the flows, tonnes outside every
    district, districts without a building, data beyond the CRS's area of use; a
    **warning** where a guessed share is above :data:`WARN_SHARE`."""
    lines = []
    flows = m.get("flows") or {}
    if "construction_years_imputed" in flows:
        share = flows.get("construction_years_imputed_share", 0.0)
        rule = (flows.get("year_fill") or {}).get("rule", "median of the archetype")
        warn = "**Warning:** " if share > WARN_SHARE else ""
        lines.append(
            f"- {warn}construction year imputed for {flows['construction_years_imputed']:,} "
            f"buildings ({share:.1%}) behind the flows ({rule}); `mfa query --years` "
            "uses the same years"
        )
    cov = m.get("coverage")
    if cov:
        share = cov["unassigned_mass_share"]
        warn = "**Warning:** " if share > WARN_SHARE else ""
        lines.append(
            f"- {warn}{cov['unassigned_mass_t']:,.0f} t ({share:.1%} of the tonnes, "
            f"{cov['unassigned_buildings']:,} buildings) lie outside every district "
            f"(`_unassigned`); {cov['districts_without_buildings']:,} of "
            f"{cov['districts']:,} districts hold no building"
        )
    guessed = m.get("guessed") or {}
    for attr, g in guessed.items():
        share = g["imputed_mass"] + g["missing_mass"]
        if share > WARN_SHARE and attr != "height":  # a height is optional evidence
            lines.append(f"- **Warning:** {attr} imputed or missing for {share:.0%} of the tonnes")
    arch = m.get("archetypes") or {}
    if arch.get("requested") == "auto":
        lines.append(
            f"- regional profile chosen from the data's location: {arch.get('profile')} "
            f"({arch.get('reason')}; extent from {arch.get('extent_from')})"
        )
    reg = arch.get("intensities_region") or {}
    if reg.get("requested") == "auto":
        lines.append(
            f"- RASMI region chosen from the data's location: {reg.get('region')} "
            f"({reg.get('country')}: {reg.get('country_from')})"
        )
    loc = m.get("location") or {}
    if loc.get("country") and reg.get("requested") != "auto":
        lines.append(f"- the data lie in {loc['country']} ({loc.get('how')})")
    lines += floor_area_lines(m)
    if arch.get("warning"):
        lines.append(f"- **Warning:** {arch['warning']}")
    ext = m.get("crs_extent")
    if ext and ext.get("outside_area_of_use"):
        area = str(ext["area_of_use"]).split(":")[0]
        lines.append(
            f"- the buildings reach beyond the area of use of {m.get('crs')} ({area}); "
            f"areas there are within {ext['max_area_error']:.2%} (limit 1 %)"
        )
    return lines


def floor_area_lines(m: dict[str, Any]) -> list[str]:
    """Markdown list items: the run's median floor area per function against the national
    statistic of the data's country (``run.json`` ``floor_area_vs_statistics``)."""
    lines = []
    for c in m.get("floor_area_vs_statistics") or []:
        stat = f"{c['statistic']}: {c['statistic_m2']:g} m² ({c['source']})"
        if c["run_median_gfa_m2"] is None:
            lines.append(f"- floor area: no {c['function']} building to set against {stat}")
            continue
        lines.append(
            f"- floor area: {c['function']} median {c['run_median_gfa_m2']:,.0f} m² over "
            f"{c['buildings']:,} buildings, ×{c['ratio']:.2f} the {stat}"
        )
    return lines


def failure_markdown(pipeline: str, run_id: str, step: str, error: BaseException) -> str:
    """Markdown report of a failed run: the step and the error (which names the input)."""
    return (
        f"# mfa run {md_escape(run_id)}: {md_escape(pipeline)} FAILED\n\n"
        f"Step **{md_escape(step)}** failed; nothing was published and `latest` is "
        "unchanged.\n\n"
        f"{md_code_block(f'{type(error).__name__}: {error}')}\n"
    )
