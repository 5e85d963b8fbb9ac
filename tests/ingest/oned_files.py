"""Synthesised 1-D spectrum files (IRAF images, text, STARLIGHT, JWST NIRSpec x1d) for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

DATA = Path(__file__).resolve().parents[1] / "data"
GMOS = DATA / "gmos" / "ngc6300_nuc.fits"
OSIRIS = DATA / "osiris" / "gp121903_osiris.fits"
OSIRIS_Z = 0.19531


def gaussian(x: np.ndarray, centre: float, sigma: float, amp: float) -> np.ndarray:
    return amp * np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def iraf_image(path: Path, data: np.ndarray, cards: dict) -> Path:
    hdu = fits.PrimaryHDU(np.asarray(data, np.float32))
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return path


def linear_cards(crval: float = 4000.0, cdelt: float = 2.0, **extra) -> dict:
    return {"CTYPE1": "LINEAR", "CRVAL1": crval, "CRPIX1": 1.0, "CDELT1": cdelt, "DC-FLAG": 0,
            "BUNIT": "erg/cm2/s/A", "OBJECT": "SYNTH", **extra}  # fmt: skip


def multi_aperture(path: Path, n: int = 500, seed: int = 1) -> tuple[Path, list[float]]:
    """Three apertures (APNUM 3, 5, 7) of one slit, an emission line at a different pixel in each."""
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    centres = [100.0, 250.0, 400.0]
    rows = [1e-16 * (1.0 + gaussian(x, c, 2.0, 5.0) + rng.normal(0, 0.05, n)) for c in centres]
    cards = linear_cards(APNUM1="3 3 10.0 14.0", APNUM2="5 5 20.0 24.0", APNUM3="7 7 30.0 34.0",
                         RA="10:00:00.0", DEC="-20:00:00", REDSHIFT=0.01)  # fmt: skip
    return iraf_image(path, np.array(rows), cards), centres


def apall_bands(path: Path, n: int = 400, seed: int = 2) -> tuple[Path, np.ndarray]:
    """IRAF apall output (4, 1, n): optimal spectrum, raw, background, sigma."""
    rng = np.random.default_rng(seed)
    sigma = np.full(n, 0.1) + 0.02 * np.sin(np.arange(n) / 30.0) ** 2
    spec = 3.0 + rng.normal(0, 1, n) * sigma
    cube = np.stack([spec, spec * 1.1, np.full(n, 0.5), sigma])[:, None, :]
    cards = linear_cards(
        BUNIT="1e-17 erg/cm2/s/A", APNUM1="1 1 252.38 281.38", WCSDIM=3, LTM3_3=1.0, WAT3_001="wtype=linear",
        BANDID1="spectrum - background fit, weights variance, clean yes",
        BANDID2="raw - background fit, weights none, clean no", BANDID3="background - background fit",
        BANDID4="sigma - background fit, weights variance, clean yes",
    )  # fmt: skip
    return iraf_image(path, cube, cards), sigma


def text_spectrum(
    path: Path, wave: np.ndarray, flux: np.ndarray, err: np.ndarray | None = None,
    header: str | None = "wave flux err", sep: str = " ", comments: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    lines = list(comments)
    if header:
        lines.append(header if err is not None else " ".join(header.split()[:2]))
    for i in range(wave.size):
        values = [wave[i], flux[i]] + ([err[i]] if err is not None else [])
        lines.append(sep.join(f"{v:.8g}" for v in values))
    path.write_text("\n".join(lines) + "\n")
    return path


def starlight_table(path: Path, n: int = 300, z: float = 0.05) -> Path:
    wave = np.linspace(3700.0, 6800.0, n)
    f_obs = 1.0 + 0.1 * np.sin(wave / 100.0)
    flag = np.zeros(n)
    flag[10:20] = 2.0  # clipped
    cols = [
        fits.Column("l_obs", "D", array=wave), fits.Column("f_obs", "D", array=f_obs),
        fits.Column("f_var", "D", array=np.full(n, 0.01)), fits.Column("f_flag", "D", array=flag),
        fits.Column("f_syn", "D", array=f_obs * 0.99), fits.Column("f_wei", "D", array=np.ones(n)),
    ]  # fmt: skip
    primary = fits.PrimaryHDU()
    primary.header.update({"OBJECT": "K0001", "REDSHIFT": z, "FOBSNORM": 2.5, "BUNIT": "1e-17 erg/s/cm2/A",
                           "RA": 150.25, "DEC": 2.5})  # fmt: skip
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="SPECTRA")]).writeto(path, overwrite=True)
    return path


def starlight_images(path: Path, n: int = 300) -> Path:
    f_obs = np.full(n, 2.0)
    hdus = [fits.PrimaryHDU()]
    for name, arr in (("F_OBS", f_obs), ("F_ERR", np.full(n, 0.2)), ("F_FLAG", np.zeros(n)), ("F_SYN", f_obs)):
        h = fits.ImageHDU(arr.astype(np.float32), name=name)
        h.header.update({"CRVAL1": 3800.0, "CDELT1": 1.0, "CRPIX1": 1.0})
        hdus.append(h)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def x1d_table(
    wave_um: np.ndarray, flux_jy: np.ndarray, err_jy: np.ndarray, dq: np.ndarray, **cards
) -> fits.BinTableHDU:
    cols = [
        fits.Column("WAVELENGTH", "D", unit="um", array=wave_um), fits.Column("FLUX", "D", unit="Jy", array=flux_jy),
        fits.Column("FLUX_ERROR", "D", unit="Jy", array=err_jy),
        fits.Column("SURF_BRIGHT", "D", unit="MJy/sr", array=flux_jy * 10),
        fits.Column("SB_ERROR", "D", unit="MJy/sr", array=err_jy * 10),
        fits.Column("DQ", "J", array=dq), fits.Column("NPIXELS", "D", array=np.full(wave_um.size, 4.0)),
    ]  # fmt: skip
    hdu = fits.BinTableHDU.from_columns(cols, name="EXTRACT1D")
    hdu.header.update(cards)
    return hdu


#: the "little red dot": broad H-alpha (FWHM 2500 km/s) at z = 5.0 on a red continuum
LRD_Z = 5.0
HA_VAC = 6564.61


def nirspec_x1d(path: Path, seed: int = 3) -> Path:
    """Two EXTRACT1D spectra of an MSA exposure with G395M/F290LP (~2.87-5.1 um)."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(2.87, 5.10, 1300)
    centre = HA_VAC * (1 + LRD_Z) / 1e4
    sigma = centre * 2500.0 / 299792.458 / 2.3548
    flux = 2e-6 * (wave / 4.0) ** 2 + gaussian(wave, centre, sigma, 8e-6)
    err = np.full(wave.size, 3e-7)
    flux = flux + rng.normal(0, 1, wave.size) * err
    dq = np.zeros(wave.size, np.int32)
    dq[500:505] = 1  # DO_NOT_USE
    dq[600] = 4  # another bit, pixel usable
    flux[-10:] = np.nan  # the end of the slit
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "JWST", "INSTRUME": "NIRSPEC", "EXP_TYPE": "NRS_MSASPEC", "GRATING": "G395M",
                           "FILTER": "F290LP", "TARG_RA": 53.16, "TARG_DEC": -27.78})  # fmt: skip
    first = x1d_table(wave, flux, err, dq, SLTNAME="12", SOURCEID=1001, SRCNAME="lrd_1001", SRCTYPE="POINT",
                      SRCRA=53.1601, SRCDEC=-27.7802)  # fmt: skip
    second = x1d_table(wave, np.full(wave.size, 1e-6), err, np.zeros(wave.size, np.int32), SLTNAME="13",
                       SOURCEID=1002, SRCTYPE="EXTENDED", SRCRA=53.17, SRCDEC=-27.79)  # fmt: skip
    asdf = fits.BinTableHDU.from_columns([fits.Column("ASDF_METADATA", "1B", array=np.zeros(1, np.uint8))], name="ASDF")
    fits.HDUList([primary, first, second, asdf]).writeto(path, overwrite=True)
    return path


def wat_cards(axis: int, value: str) -> dict:
    """IRAF's WATn_nnn cards: the attribute string in 68-character pieces, not stripped."""
    return {f"WAT{axis}_{i // 68 + 1:03d}": value[i : i + 68] for i in range(0, len(value), 68)}


def multispec_image(path: Path, data: np.ndarray, specs: list[str], units: str = "angstroms", **extra) -> Path:
    """An IRAF multispec image (CTYPE1 = MULTISPE): one ``specN = "..."`` per image line in WAT2_*."""
    wat2 = "wtype=multispec" + "".join(f' spec{i} = "{s}"' for i, s in enumerate(specs, 1))
    cards = {"WCSDIM": 2, "CTYPE1": "MULTISPE", "CTYPE2": "MULTISPE", "CD1_1": 1.0, "CD2_2": 1.0, "LTM1_1": 1.0,
             "LTM2_2": 1.0, "WAT0_001": "system=multispec",
             "WAT1_001": f"wtype=multispec label=Wavelength units={units}", **wat_cards(2, wat2),
             "OBJECT": "MSPEC", "BUNIT": "erg/cm2/s/A", **extra}  # fmt: skip
    return iraf_image(path, data, cards)
