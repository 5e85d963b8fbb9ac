"""Synthetic SDSS "lite" spectra, quickly enough for benchmarks of 1e5 files.

:func:`write_sdss_spectra` writes N SDSS-like ``spec-PLATE-MJD-FIBER.fits`` files
(COADD + SPECOBJ, ~3,850 log-lambda pixels). Everything random comes from
``numpy.random.default_rng(seed)``: same seed, same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from skyledger.schema.linelist import LINES
from skyledger.testing.disk_model import C_KMS, continuum_shape

__all__ = ["write_sdss_spectra"]

# --------------------------------------------------------------------------- SDSS

_SDSS_COEFF0 = 3.5800  # log10 A of the first pixel (3801.9 A)
_SDSS_COEFF1 = 1.0e-4
_COADD_DTYPE = np.dtype(
    [
        ("flux", ">f4"),
        ("loglam", ">f4"),
        ("ivar", ">f4"),
        ("and_mask", ">i4"),
        ("or_mask", ">i4"),
        ("wdisp", ">f4"),
        ("sky", ">f4"),
        ("model", ">f4"),
    ]
)
_SPECOBJ_DTYPE = np.dtype(
    [
        ("SURVEY", "S6"),
        ("PROGRAMNAME", "S16"),
        ("PLATEQUALITY", "S8"),
        ("SPECPRIMARY", ">u1"),
        ("SPECOBJID", "S19"),
        ("BESTOBJID", "S19"),
        ("PLATE", ">i4"),
        ("MJD", ">i4"),
        ("FIBERID", ">i4"),
        ("RUN2D", "S6"),
        ("PLUG_RA", ">f8"),
        ("PLUG_DEC", ">f8"),
        ("CLASS", "S6"),
        ("SUBCLASS", "S21"),
        ("Z", ">f4"),
        ("Z_ERR", ">f4"),
        ("RCHI2", ">f4"),
        ("DOF", ">i4"),
        ("ZWARNING", ">i4"),
        ("WAVEMIN", ">f4"),
        ("WAVEMAX", ">f4"),
        ("SN_MEDIAN_ALL", ">f4"),
    ]
)
# Lines put into SDSS spectra: (id, strength relative to H-alpha) for star-forming galaxies.
_SDSS_LINES = (
    ("OII3726", 0.45),
    ("OII3729", 0.60),
    ("HB4861", 0.35),
    ("OIII4959", 0.12),
    ("OIII5007", 0.36),
    ("NII6548", 0.10),
    ("HA6563", 1.0),
    ("NII6584", 0.30),
    ("SII6716", 0.15),
    ("SII6731", 0.11),
)


def _fixed_card(key: str, value: int | float | str, comment: str) -> str:
    """One 80-character FITS card in fixed format, for the per-file cards of the fast writer.

    astropy's Card is exact but costs ~60 us per card, the largest share of writing an
    SDSS file; the values here are plain ints, floats and short strings.
    """
    if isinstance(value, str):
        text = "'" + value.replace("'", "''").ljust(8) + "'"
        image = f"{key:<8}= {text:<20} / {comment}"
    else:
        text = repr(float(value)).upper() if isinstance(value, float) else str(int(value))
        image = f"{key:<8}= {text:>20} / {comment}"
    return image[:80].ljust(80)


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % 2880)


def _specobjid(plate: int, fiber: int, mjd: int) -> int:
    """SDSS DR8+ SPECOBJID bit layout (plate<<50 | fiber<<38 | (mjd-50000)<<24 | run2d)."""
    return (plate << 50) | (fiber << 38) | ((mjd - 50000) << 24) | (26 << 10)


def write_sdss_spectra(
    directory: str | Path,
    n: int,
    *,
    seed: int = 0,
    n_pix: int = 3850,
    start: int = 0,
    z_range: tuple[float, float] = (0.01, 0.25),
    batch: int = 512,
) -> list[Path]:
    """Write ``n`` SDSS-like ``spec-PLATE-MJD-FIBER.fits`` files into ``directory``.

    Each holds a COADD table (flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model)
    of ``n_pix`` log-lambda pixels and a one-row SPECOBJ (plate, mjd, fiberid, specobjid,
    plug_ra/dec, z, class ...), i.e. a "lite" file.  Spectra are a red continuum with
    absorption features plus star-forming emission lines at a random redshift, with
    noise matching ivar.  Speed: headers are formatted once with astropy and reused; per
    file only the primary header's object cards are re-formatted and the two tables'
    bytes written, so writing runs at thousands of files per second and memory stays at
    one batch.  File ``k`` (``start`` + index) is on plate 3000 + k // 1000, fibre
    k % 1000 + 1, so files from different ``start`` values never collide.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    loglam = _SDSS_COEFF0 + _SDSS_COEFF1 * np.arange(n_pix)
    wave = 10.0**loglam
    wdisp = (1.05 + 0.1 * (loglam - loglam[0]) / (loglam[-1] - loglam[0])).astype(np.float32)
    sky = (5.0 + 20.0 * ((wave - 5500.0) / 3500.0).clip(0) ** 2).astype(np.float32)
    sigma_inst = C_KMS * wdisp * _SDSS_COEFF1 * math.log(10.0)  # km/s, LSF sigma

    coadd_template = np.zeros(n_pix, dtype=_COADD_DTYPE)
    coadd_template["loglam"] = loglam.astype(np.float32)
    coadd_template["wdisp"] = wdisp
    coadd_template["sky"] = sky
    coadd_header = fits.BinTableHDU(data=coadd_template, name="COADD").header
    coadd_header["COMMENT"] = "Coadded spectrum"
    specobj_header = fits.BinTableHDU(data=np.zeros(1, dtype=_SPECOBJ_DTYPE), name="SPECOBJ").header
    coadd_head_bytes = _pad(coadd_header.tostring().encode("ascii"), b" ")
    specobj_head_bytes = _pad(specobj_header.tostring().encode("ascii"), b" ")

    static_primary = fits.Header()
    static_primary["SIMPLE"] = True
    static_primary["BITPIX"] = 8
    static_primary["NAXIS"] = 0
    static_primary["EXTEND"] = True
    for key, value, comment in (
        ("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
        ("FLAVOR", "science", "Flavor of this sequence"),
        ("EXPTIME", 2700.0, "Minimum of exposure times for all cameras"),
        ("VERS2D", "v5_7_0", "Version of idlspec2d for 2D reduction"),
        ("VERSCOMB", "v5_7_0", "Version of idlspec2d for combining multiple spe"),
        ("RUN2D", "26", "Spectroscopic 2D reduction (extraction) name"),
        ("VACUUM", True, "Wavelengths are in vacuum"),
        ("NWORDER", 2, "Linear-log10 coefficients"),
        ("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
        ("COEFF0", _SDSS_COEFF0, "Central wavelength (log10) of first pixel"),
        ("COEFF1", _SDSS_COEFF1, "Log10 dispersion per pixel"),
        ("BUNIT", "1E-17 erg/cm^2/s/Ang", ""),
        ("NEXP", 0, "Number of exposures (lite: none kept)"),
    ):
        static_primary[key] = (value, comment)
    static_cards = static_primary.tostring().encode("ascii")
    static_cards = static_cards[: static_cards.rindex(b"END" + b" " * 77)]

    paths: list[Path] = []
    rest = {lid: LINES[lid].vacuum_wavelength for lid, _ in _SDSS_LINES}
    for b0 in range(0, n, batch):
        nb = min(batch, n - b0)
        # One generator per file, seeded by (seed, file number): file k has the same
        # bytes whatever the batch size or the split of the run into calls.
        rngs = [np.random.default_rng((seed, start + b0 + j)) for j in range(nb)]
        draws = np.array([r.uniform(size=7) for r in rngs])
        z = z_range[0] + (z_range[1] - z_range[0]) * draws[:, 0]
        ra = 360.0 * draws[:, 1]
        dec = np.degrees(np.arcsin(-0.3 + 1.3 * draws[:, 2]))
        cont = 2.0 + 18.0 * draws[:, 3]
        ha = cont * (5.0 + 75.0 * draws[:, 4])  # H-alpha flux, 1e-17 erg/s/cm2
        snr = 4.0 + 26.0 * draws[:, 5]
        sigma_gas = 30.0 + 90.0 * draws[:, 6]
        wave_rest = wave[None, :] / (1.0 + z[:, None])
        model = cont[:, None] * continuum_shape(wave_rest)
        for lid, strength in _SDSS_LINES:
            centre = rest[lid] * (1.0 + z)
            sig_kms = np.hypot(sigma_gas, np.interp(centre, wave, sigma_inst))
            sig_a = centre * sig_kms / C_KMS
            model += (strength * ha / (math.sqrt(2 * math.pi) * sig_a))[:, None] * np.exp(
                -0.5 * ((wave[None, :] - centre[:, None]) / sig_a[:, None]) ** 2
            )
        noise = np.sqrt((cont / snr)[:, None] ** 2 * (0.5 + sky[None, :] / sky.mean()))
        flux = model + np.array([r.standard_normal(n_pix) for r in rngs]) * noise
        ivar = 1.0 / noise**2
        bad = np.array([r.random(n_pix) for r in rngs]) < 0.002  # cosmic-ray / bad-column pixels
        for j in range(nb):
            k = start + b0 + j
            plate, mjd, fiber = 3000 + k // 1000, 55000 + k // 1000, k % 1000 + 1
            specobjid = _specobjid(plate, fiber, mjd)
            coadd = coadd_template.copy()
            coadd["flux"] = flux[j]
            coadd["ivar"] = np.where(bad[j], 0.0, ivar[j])
            coadd["and_mask"] = np.where(bad[j], 1 << 22, 0)  # 22: BRIGHTSKY in SPPIXMASK
            coadd["or_mask"] = coadd["and_mask"]
            coadd["model"] = model[j]
            specobj = np.zeros(1, dtype=_SPECOBJ_DTYPE)
            row = specobj[0]
            row["SURVEY"], row["PROGRAMNAME"], row["PLATEQUALITY"] = b"boss", b"boss", b"good"
            row["SPECPRIMARY"] = 1
            row["SPECOBJID"] = str(specobjid).encode()
            row["BESTOBJID"] = str(1237650000000000000 + k).encode()
            row["PLATE"], row["MJD"], row["FIBERID"], row["RUN2D"] = plate, mjd, fiber, b"26"
            row["PLUG_RA"], row["PLUG_DEC"] = ra[j], dec[j]
            row["CLASS"], row["SUBCLASS"] = b"GALAXY", b"STARFORMING"
            row["Z"], row["Z_ERR"] = z[j], 1.0e-5 * (1 + z[j])
            row["RCHI2"], row["DOF"], row["ZWARNING"] = 1.05, n_pix - 10, 0
            row["WAVEMIN"], row["WAVEMAX"] = wave[0], wave[-1]
            row["SN_MEDIAN_ALL"] = snr[j]
            object_cards = "".join(
                _fixed_card(key, value, comment)
                for key, value, comment in (
                    ("PLATEID", plate, "Plate Id"),
                    ("MJD", mjd, "MJD of observation"),
                    ("FIBERID", fiber, "Fiber number"),
                    ("PLUG_RA", float(ra[j]), "RA of object [deg]"),
                    ("PLUG_DEC", float(dec[j]), "dec of object [deg]"),
                    ("RA", float(ra[j]), "RA of telescope boresight (deg)"),
                    ("DEC", float(dec[j]), "Dec of telescope boresight (deg)"),
                    ("SPEC_ID", str(specobjid), "Unique object identifier"),
                    ("NAME", f"{plate:04d}-{mjd:05d}-01", "Name of target; PlateId-MJD-Mapper Re"),
                )
            ).encode("ascii")
            primary_bytes = _pad(static_cards + object_cards + b"END" + b" " * 77, b" ")
            target = out / f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
            with open(target, "wb") as fh:
                fh.write(primary_bytes)
                fh.write(coadd_head_bytes)
                fh.write(_pad(coadd.tobytes(), b"\0"))
                fh.write(specobj_head_bytes)
                fh.write(_pad(specobj.tobytes(), b"\0"))
            paths.append(target)
    return paths
