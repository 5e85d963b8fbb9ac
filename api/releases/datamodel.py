"""``datamodel.md``: the release's tables and columns, written from the same metadata as the files."""

from __future__ import annotations

from collections.abc import Sequence

from .content import ECSV_TYPES, FORMAT_VERSION, ReleaseInfo, TableContent, fits_unit

__all__ = ["datamodel_markdown"]


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|").replace("\n", " ")


def datamodel_markdown(info: ReleaseInfo, contents: Sequence[TableContent], formats: Sequence[str]) -> str:
    lines = [
        f"# Release `{info.name}`: data model",
        "",
        f"Created {info.created_iso} UTC from collection `{info.collection}` by {info.code_version}, "
        f"database schema revision {info.schema_version}; release format version {FORMAT_VERSION}.",
    ]
    if info.notes:
        lines += ["", f"Notes: {info.notes}"]
    lines += [
        "",
        f"Every table is in the SQL schema `{info.name}` (`SELECT ... FROM {info.name}.<table>`) and in the files "
        + ", ".join(f"`<table>.{f}`" for f in formats)
        + ". `manifest.json` lists every file with its SHA-256 and row count, the SHA-256 of every SQL "
        "table's rows (which `skyledger release verify` recomputes), and the runs.",
        "",
        "Every numeric column has one unit for all its rows. Line fluxes are converted from each spectrum's "
        "unit; where that unit is unknown or no flux density per wavelength they are NULL (`spectra.flux_unit` "
        "says which). A unit FITS cannot spell (`dex`) has no `TUNITn`: the FITS `TCOMMn` ends with it in "
        "brackets, and the ECSV and Parquet files carry it exactly.",
        "",
        "Missing values: NULL in SQL, null in Parquet, an empty field in ECSV; in FITS, NaN in floating-point "
        "columns, the column's `TNULLn` in integer columns, an empty string in character columns.",
        "",
        "| table | rows | description |",
        "|---|---:|---|",
    ]
    lines += [f"| [`{c.table.name}`](#{c.table.name}) | {c.n_rows:,} | {_cell(c.table.description)} |" for c in contents]
    for content in contents:
        table = content.table
        lines += ["", f"## {table.name}", "", f"{table.description}. {content.n_rows:,} rows; key "
                  + ", ".join(f"`{k}`" for k in table.key) + ".", ""]
        lines += ["| column | type | unit | FITS TUNIT | UCD | description |", "|---|---|---|---|---|---|"]
        for column in table.columns:
            lines.append(
                f"| `{column.name}` | {ECSV_TYPES[column.pg_type]} | {_cell(column.unit)} | "
                f"{_cell(fits_unit(column.unit))} | {_cell(column.ucd)} | {_cell(column.description)} |"
            )
        if content.flags:
            lines += ["", "Bits of `flags`:", "", "| bit | value | name | meaning |", "|---:|---:|---|---|"]
            lines += [f"| {f.bit} | {1 << f.bit} | `{f.name}` | {_cell(f.description)} |" for f in content.flags]
        if content.runs:
            lines += ["", "Runs: " + ", ".join(f"{r.id} ({r.task} v{r.version})" for r in content.runs) + "."]
    return "\n".join(lines) + "\n"
