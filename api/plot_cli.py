"""`skyledger plot ...`: figures of catalogue results, written as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["plot_app"]

plot_app = typer.Typer(no_args_is_help=True, help="Plots of catalogue results (PNG).")


@plot_app.command("rotation")
def rotation(
    ctx: typer.Context,
    galaxy: Annotated[str, typer.Argument(help="Source id or object_id of the galaxy.")],
    out: Annotated[Path, typer.Option("--out", help="Directory the PNG files are written to.")] = Path("."),
) -> None:
    """Velocity field and rotation curve of a galaxy from its current rotation fits."""
    from skyledger.api.rotation_plots import rotation_plots
    from skyledger.schema.database import connect

    db = connect(ctx.find_root().obj)
    try:
        with db.session() as session:
            paths = rotation_plots(session, galaxy, out)
    finally:
        db.dispose()
    for path in paths:
        typer.echo(str(path))
