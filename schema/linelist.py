"""The emission lines skyledger knows: the single source of truth for line ids and wavelengths.

Readers (line catalogues) and compute tasks (line fits, abundances, classifications)
all take their line ids and rest wavelengths from here.  Air wavelengths are the
usual nebular values in Angstrom; vacuum wavelengths are derived from them with
:func:`air_to_vacuum`, so both media always agree with the conversion the readers use.

The air/vacuum conversion lives here, not in ``ingest``, because this module is a
leaf (numpy only): ``ingest`` may import ``compute.linelist`` but ``compute`` must never
import ``ingest``.  ``skyledger.ingest.readers.base`` re-exports both functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EmissionLine",
    "LineKind",
    "LINES",
    "LINE_IDS",
    "get_line",
    "air_to_vacuum",
    "vacuum_to_air",
    "refractive_index_air",
]

LineKind = Literal["balmer", "helium", "forbidden", "auroral"]

# Below 2000 A the IAU convention quotes vacuum wavelengths everywhere, and the
# dispersion formula is not meant for the far UV, so shorter wavelengths pass unchanged.
_AIR_VACUUM_MIN_A = 2000.0


def refractive_index_air(wave_vacuum: ArrayLike) -> NDArray[np.float64]:
    """Refractive index of standard dry air at a vacuum wavelength in Angstrom.

    This is the IAU standard (Morton 2000, ApJS 130, 403, eq. 3), a fit to the
    Ciddor (1996, Appl. Opt. 35, 1566) formula for dry air at 15 C, 101 325 Pa and
    450 ppm CO2, in terms of the vacuum wavenumber sigma = 1e4 / lambda_vac (um^-1):

        n - 1 = 8.34254e-5 + 2.406147e-2 / (130 - sigma^2) + 1.5998e-4 / (38.9 - sigma^2)
    """
    sigma2 = (1.0e4 / np.asarray(wave_vacuum, dtype=np.float64)) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - sigma2) + 1.5998e-4 / (38.9 - sigma2)


@overload
def vacuum_to_air(wave_vacuum: float) -> float: ...
@overload
def vacuum_to_air(wave_vacuum: NDArray[np.floating]) -> NDArray[np.float64]: ...
def vacuum_to_air(wave_vacuum):  # type: ignore[no-untyped-def]
    """Vacuum -> air wavelength (Angstrom), lambda_air = lambda_vac / n(lambda_vac)."""
    vac = np.asarray(wave_vacuum, dtype=np.float64)
    air = np.where(vac >= _AIR_VACUUM_MIN_A, vac / refractive_index_air(vac), vac)
    return float(air) if air.ndim == 0 else air


@overload
def air_to_vacuum(wave_air: float) -> float: ...
@overload
def air_to_vacuum(wave_air: NDArray[np.floating]) -> NDArray[np.float64]: ...
def air_to_vacuum(wave_air):  # type: ignore[no-untyped-def]
    """Air -> vacuum wavelength (Angstrom): the exact inverse of :func:`vacuum_to_air`.

    The IAU formula gives n as a function of the *vacuum* wavelength, so the inverse is
    found by fixed-point iteration lambda_vac <- lambda_air * n(lambda_vac).  n - 1 is
    ~3e-4 and varies slowly, so each step gains about four decimal digits; four steps
    reach double precision (round trip better than 1e-9 A over 2000 A - 10 um).
    """
    air = np.asarray(wave_air, dtype=np.float64)
    vac = air.copy()
    for _ in range(4):
        vac = air * refractive_index_air(vac)
    vac = np.where(air >= _AIR_VACUUM_MIN_A, vac, air)
    return float(vac) if vac.ndim == 0 else vac


@dataclass(frozen=True, slots=True)
class EmissionLine:
    """One emission line: id as used in column names and result rows, ion, rest wavelengths."""

    id: str
    ion: str  # spectroscopic notation, e.g. "[O III]", "H I", "He II"
    air_wavelength: float  # Angstrom
    kind: LineKind

    @property
    def vacuum_wavelength(self) -> float:
        """Rest vacuum wavelength in Angstrom (from the air value with the IAU formula)."""
        return air_to_vacuum(self.air_wavelength)


# (id, ion, air wavelength in A, kind). Auroral = the temperature-sensitive lines from
# the upper (1S or 2P) levels used by the direct method; [O II] 7320/7330 are the
# auroral 2P->2D doublets of O+.
_TABLE: tuple[tuple[str, str, float, LineKind], ...] = (
    ("OII3726", "[O II]", 3726.03, "forbidden"),
    ("OII3729", "[O II]", 3728.82, "forbidden"),
    ("NEIII3869", "[Ne III]", 3868.76, "forbidden"),
    ("HD4102", "H I", 4101.74, "balmer"),
    ("HG4340", "H I", 4340.47, "balmer"),
    ("OIII4363", "[O III]", 4363.21, "auroral"),
    ("HEII4686", "He II", 4685.7, "helium"),
    ("HB4861", "H I", 4861.33, "balmer"),
    ("OIII4959", "[O III]", 4958.91, "forbidden"),
    ("OIII5007", "[O III]", 5006.84, "forbidden"),
    ("NII5755", "[N II]", 5754.59, "auroral"),
    ("HEI5876", "He I", 5875.62, "helium"),
    ("OI6300", "[O I]", 6300.30, "forbidden"),
    ("SIII6312", "[S III]", 6312.06, "auroral"),
    ("OI6364", "[O I]", 6363.78, "forbidden"),
    ("NII6548", "[N II]", 6548.05, "forbidden"),
    ("HA6563", "H I", 6562.80, "balmer"),
    ("NII6584", "[N II]", 6583.45, "forbidden"),
    ("HEI6678", "He I", 6678.15, "helium"),
    ("SII6716", "[S II]", 6716.44, "forbidden"),
    ("SII6731", "[S II]", 6730.82, "forbidden"),
    ("ARIII7136", "[Ar III]", 7135.8, "forbidden"),
    ("OII7320", "[O II]", 7319.9, "auroral"),
    ("OII7330", "[O II]", 7330.2, "auroral"),
    ("SIII9069", "[S III]", 9068.6, "forbidden"),
    ("SIII9532", "[S III]", 9531.1, "forbidden"),
)

#: every known line by id, in order of increasing wavelength
LINES: dict[str, EmissionLine] = {row[0]: EmissionLine(*row) for row in _TABLE}
LINE_IDS: tuple[str, ...] = tuple(LINES)


def get_line(line_id: str) -> EmissionLine:
    """The line with this id (case-insensitive); KeyError listing the known ids otherwise."""
    try:
        return LINES[line_id.upper()]
    except KeyError:
        raise KeyError(f"unknown emission line {line_id!r}; known: {', '.join(LINE_IDS)}") from None
