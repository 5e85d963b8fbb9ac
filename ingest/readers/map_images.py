"""The image extensions of a velocity map: one 2-D plane per role, errors, velocity units.

Used by :mod:`skyledger.ingest.readers.velocity_map`: :func:`read_image` reads the HDU
that plays a role (VEL, VEL_ERR, SIGMA, ...) as a float64 2-D array, one plane of a 3-D
HDU when a channel is named; :func:`velocity_errors` and :func:`error_map` turn error or
inverse-variance images into errors; :func:`velocity_factor` reads BUNIT as a factor to km/s.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from skyledger.ingest.readers.fits_access import hdu_data
from skyledger.schema.errors import ReaderError

__all__ = ["Image", "error_map", "read_image", "velocity_errors", "velocity_factor"]


def velocity_factor(path: Path, header: fits.Header, hdu: str, fixes: list[str]) -> float:
    """Factor from the HDU's BUNIT to km/s; km/s when BUNIT is absent or unreadable."""
    raw = str(header.get("BUNIT", "") or "").strip()
    if not raw:
        return 1.0
    for text in (raw, raw.lower(), raw.lower().replace("sec", "s").replace("kms", "km/s")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                unit = u.Unit(text)
        except ValueError:
            continue
        try:
            return float(unit.to(u.km / u.s))
        except u.UnitConversionError:
            raise ReaderError(path, f"BUNIT = '{raw}' is not a velocity unit", hdu=hdu) from None
    fixes.append(f"HDU {hdu}: BUNIT = '{raw}' is not a unit; taken as km/s")
    return 1.0


@dataclass(slots=True)
class Image:
    role: str
    hdu_name: str  # as named in messages: EXTNAME, with the plane when one was chosen
    header: fits.Header
    data: np.ndarray  # float64, 2-D


def _channel(path: Path, header: fits.Header, hdu: str, channel: str, depth: int) -> int:
    """0-based plane index of ``channel``: a 1-based number or a name in the Cnn cards."""
    if channel.strip().isdigit():
        index = int(channel) - 1
        if not 0 <= index < depth:
            raise ReaderError(path, f"channel {channel} is outside 1..{depth}", hdu=hdu)
        return index
    names = {}
    for i in range(depth):
        for key in (f"C{i + 1:02d}", f"C{i + 1}"):
            if key in header:
                names[str(header[key]).strip().upper()] = i
                break
    try:
        return names[channel.strip().upper()]
    except KeyError:
        raise ReaderError(
            path, f"no channel {channel!r}; channels named in the Cnn cards: {sorted(names) or 'none'}", hdu=hdu
        ) from None


def read_image(path: Path, hdul: fits.HDUList, role: str, spec: str, fixes: list[str]) -> Image:
    name, _, channel = spec.partition(":")
    name = name.strip()
    if name not in hdul:
        present = [h.name for h in hdul]
        raise ReaderError(path, f"the {role} extension is not in the file; HDUs present: {present}", hdu=name)
    hdu = hdul[name]
    label = f"{name}:{channel}" if channel else name
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        raise ReaderError(path, f"{role} must be an image, this HDU is a {type(hdu).__name__}", hdu=label)
    data = hdu_data(path, hdu)
    if data is None:
        raise ReaderError(path, f"{role} has no data (NAXIS = 0)", hdu=label)
    arr = np.asarray(data)
    if arr.dtype.kind not in "iuf":
        raise ReaderError(path, f"{role} holds non-numeric data ({arr.dtype})", hdu=label)
    if arr.dtype.kind in "iu":
        blank = hdu.header.get("BLANK")
        arr = arr.astype(np.float64)
        # astropy applies BLANK only when it scales; unscaled integers keep the raw value.
        if isinstance(blank, int):
            arr[np.asarray(data) == blank] = np.nan
    else:
        arr = arr.astype(np.float64, copy=False)
    if channel:
        if arr.ndim != 3:
            raise ReaderError(path, f"a channel was named but {role} is {arr.ndim}-D, shape {arr.shape}", hdu=label)
        arr = arr[_channel(path, hdu.header, name, channel, arr.shape[0])]
    elif arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
        fixes.append(f"HDU {name}: a 3-D image with one plane, read as 2-D")
    if arr.ndim != 2:
        raise ReaderError(
            path,
            f"{role} must be a 2-D image, it has shape {arr.shape}; for one plane of a 3-D HDU "
            f"set extensions = {{ {role} = \"{name}:CHANNEL\" }}",
            hdu=label,
        )
    return Image(role, label, hdu.header, arr)


def error_map(path: Path, image: Image, *, ivar: bool) -> np.ndarray:
    """Errors (NaN where unknown) from an error or inverse-variance image; negatives rejected."""
    data = image.data
    finite = np.isfinite(data)
    if np.any(data[finite] < 0):
        what = "inverse variance" if ivar else "error"
        raise ReaderError(path, f"negative {what} at {int((data[finite] < 0).sum())} pixels", hdu=image.hdu_name)
    if not ivar:
        return np.where(finite & (data > 0), data, np.nan)
    with np.errstate(divide="ignore"):
        return np.where(finite & (data > 0), 1.0 / np.sqrt(np.where(data > 0, data, 1.0)), np.nan)


def velocity_errors(path: Path, image: Image, value_factor: float, fixes: list[str]) -> np.ndarray:
    """Errors in km/s (NaN = unknown): an _ERR image in its own BUNIT, an _IVAR one in the value's."""
    if image.role.endswith("IVAR"):
        return error_map(path, image, ivar=True) * value_factor
    return error_map(path, image, ivar=False) * velocity_factor(path, image.header, image.hdu_name, fixes)
