"""What a reader produces: plain rows with numpy arrays, validated, ready for the loader.

Conventions fixed here, for every reader:

* wavelengths are **vacuum** Angstrom (air wavelengths are converted on reading);
* ``resolution`` is the instrumental resolving power R = lambda / FWHM per pixel
  (dimensionless), NaN where unknown, or ``None`` when the file gives none;
* ``ivar`` is the inverse variance of ``flux``; ivar == 0 marks a pixel with no data;
* ``mask`` is the survey's own bitmask (0 = good), kept as given;
* positions are ICRS degrees, or ``None`` when the file has none (the spectrum is then
  flagged ``NO_POSITION`` by the loader unless the survey config supplies one);
* ``flux_unit`` is an astropy-parsable unit string, e.g. ``"1e-17 erg / (s cm2 Angstrom)"``.

Meta keys the loader turns into flag bits:

* ``FileContents.meta["wavelength_medium_in_file"] == "air"`` (or the same key on a
  row's meta): the wavelengths were converted from air -> ``AIR_TO_VACUUM``;
* ``meta["position_from_config"]`` true on a source or spectrum row: its position came
  from the survey configuration, not the file -> ``POSITION_FROM_CONFIG``.

* ``meta["error_estimate"]`` (``ERROR_ESTIMATE_KEY``) on a spectrum row, naming the
  method: the file gives no errors and ``ivar`` is the reader's estimate (see
  :func:`skyledger.ingest.readers.base.ivar_from_scatter`) -> ``ERROR_ESTIMATED``.

From the arrays themselves: ``ivar`` zero at every pixel -> ``ZERO_IVAR`` (the spectrum
is loaded, flagged as holding no usable data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ERROR_ESTIMATE_KEY", "SourceRow", "SpectrumRow", "LineMeasurement", "FileContents"]

#: meta key of a spectrum row whose ivar the reader estimated; its value names the method
ERROR_ESTIMATE_KEY = "error_estimate"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """An astronomical object: a galaxy, a star, an HII region."""

    object_id: str
    ra: float | None
    dec: float | None
    z: float | None = None
    parent_object_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the same object may come from several files of the survey (the blue and red arm
    #: cubes of one SAMI galaxy): the loader reuses the survey's existing source of this
    #: object_id, so that every file's spectra of it belong to one source
    shared: bool = False


@dataclass(frozen=True, slots=True)
class LineMeasurement:
    """One emission line of a catalogue row or map pixel (line id as in ``compute``, e.g. ``HA6563``).

    ``flux`` is None for a line measured only kinematically (a velocity map without a
    flux image, a catalogue row with ``_VEL`` but no ``_FLUX``): it is stored as NULL and
    the flux-based tasks skip it.  ``velocity`` is relative to the spectrum's redshift, in
    km/s; ``line == "STELLAR"`` holds stellar kinematics from a stellar velocity map.
    """

    line: str
    flux: float | None = None
    flux_err: float | None = None
    velocity: float | None = None
    velocity_err: float | None = None
    sigma: float | None = None
    sigma_err: float | None = None


@dataclass(slots=True)
class SpectrumRow:
    """One spectrum: pixels (1-D spectra, spaxels, bins) or only line fluxes (catalogues)."""

    object_id: str  # the survey's identifier of this spectrum, unique within the file
    source_object_id: str  # the SourceRow it belongs to
    ra: float | None
    dec: float | None
    z: float | None
    wave: np.ndarray | None = None  # float64, vacuum Angstrom, strictly increasing
    flux: np.ndarray | None = None  # float32
    ivar: np.ndarray | None = None  # float32, >= 0
    mask: np.ndarray | None = None  # int32 survey bitmask, 0 = good
    resolution: np.ndarray | None = None  # float32, R = lambda / FWHM
    flux_unit: str | None = None
    lines: list[LineMeasurement] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pix(self) -> int:
        return 0 if self.wave is None else int(self.wave.shape[0])


@dataclass(slots=True)
class FileContents:
    """Everything read from one file. ``spectra`` may be a generator (cubes stream)."""

    reader: str
    sources: list[SourceRow]
    spectra: Iterator[SpectrumRow]
    meta: dict[str, Any] = field(default_factory=dict)
    #: for line catalogues: fluxes already corrected for dust
    dust_corrected: bool = False
