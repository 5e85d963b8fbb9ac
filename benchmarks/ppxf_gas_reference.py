"""pPXF in its recommended gas set-up on every real spectrum: the reference for the line fits.

    python benchmarks/ppxf_gas_reference.py [--emiles DIR] [--only NAME ...] [--out PATH]

Writes ``tests/data/ppxf_reference/ppxf_gas_reference.json`` (see the README there).
The set-up follows pPXF's SDSS gas examples (``ppxf_example_population_gas_sdss.py``,
``ppxf_example_gas_sdss_tied.py``): E-MILES SSPs (the 150 ``Eun1.30Z*`` models shipped in
the ``ppxf==8.2.6`` sdist; get them with ``pip download ppxf==8.2.6 --no-deps
--no-binary :all: -d /tmp/ppxfsd && tar xzf /tmp/ppxfsd/ppxf-8.2.6.tar.gz -C /tmp/ppxfsd``),
convolved to the data's LSF per pixel (``ppxf_util.varsmooth``), gas templates from
``ppxf_util.emission_lines`` with the data's LSF per pixel (so sigma is intrinsic),
``degree=-1`` (no additive polynomial), ``mdegree=10`` (multiplicative Legendre),
stars and gas fitted together in one pPXF call. Kinematic components, like skyledger's
gas groups: 0 = stars, 1 = Balmer + He lines (free fluxes, one V and sigma: "tied Balmer
kinematics"), 2 = every forbidden line (one V and sigma); [OIII], [OI], [NII] doublets at
pPXF's fixed ratios, [OII] and [SII] free. Moments 2 for every component (skyledger
fits a Gaussian LOSVD). A second fit with pPXF's tied Balmer *fluxes* (``tie_balmer=True``,
``limit_doublets=True``, ``gas_reddening`` fitted, exactly the population-gas example)
records its Case-B-plus-Calzetti Balmer decrement as a cross-check.

Needs the bench extra (pPXF 9.5.2). pPXF is a reference here, never imported by the package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lines_common import _log_grid_spectrum  # noqa: E402
from ppxf_gas_inputs import reference_inputs  # noqa: E402

from skyledger.schema.linelist import air_to_vacuum  # noqa: E402

C_KMS = 299792.458
_FWHM = np.sqrt(8 * np.log(2))
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ppxf_reference" / "ppxf_gas_reference.json"
EMILES_DEFAULT = Path("/tmp/ppxfsd/ppxf-8.2.6/ppxf/miles_models")
#: E-MILES has FWHM 2.51 A only over the MILES range (Vazdekis et al. 2016); outside it the
#: resolution changes, so the templates are cut to it.
EMILES_AIR_RANGE = (3541.0, 8950.0)
EMILES_FWHM = 2.51

#: pPXF emission_lines name -> (skyledger id, divisor giving that line's flux from the
#: template's flux: a fixed-ratio doublet template holds 1 + 0.33 of its main line).
PPXF_TO_SKYLEDGER = {
    "Hdelta": ("HD4102", 1.0), "Hgamma": ("HG4340", 1.0), "Hbeta": ("HB4861", 1.0), "Halpha": ("HA6563", 1.0),
    "[OII]3726": ("OII3726", 1.0), "[OII]3729": ("OII3729", 1.0), "[SII]6716": ("SII6716", 1.0),
    "[SII]6731": ("SII6731", 1.0), "[NeIII]3869": ("NEIII3869", 1.0), "HeII4687": ("HEII4686", 1.0),
    "HeI5876": ("HEI5876", 1.0), "[OIII]5007_d": ("OIII5007", 1.33), "[OI]6300_d": ("OI6300", 1.33),
    "[NII]6583_d": ("NII6584", 1.33),
}  # fmt: skip
#: the weaker line of each pPXF doublet template, flux 0.33 of the main one
PPXF_DOUBLET_CHILD = {"OIII5007": "OIII4959", "OI6300": "OI6364", "NII6584": "NII6548"}


def load_emiles(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(vacuum wavelength (M,), flux (M, K), names) of the E-MILES SSPs, cut to the MILES range."""
    from astropy.io import fits

    files = sorted(folder.glob("Eun1.30Z*.fits"))
    if not files:
        raise SystemExit(f"no E-MILES files (Eun1.30Z*.fits) in {folder}; see this script's docstring for how to get them")
    fluxes = []
    for f in files:
        with fits.open(f) as h:
            hdr = h[0].header
            wave = hdr["CRVAL1"] + (np.arange(hdr["NAXIS1"]) + 1 - hdr.get("CRPIX1", 1)) * hdr["CDELT1"]
            fluxes.append(np.asarray(h[0].data, float))
    keep = (wave > EMILES_AIR_RANGE[0]) & (wave < EMILES_AIR_RANGE[1])
    return np.asarray(air_to_vacuum(wave[keep])), np.stack(fluxes, axis=1)[keep], [f.stem for f in files]


def fit_one(batch, tw: np.ndarray, tflux: np.ndarray, tied_balmer_fluxes: bool = False) -> dict:
    """One pPXF fit of the one-spectrum ``batch``; returns the JSON record."""
    from ppxf import ppxf_util
    from ppxf.ppxf import attenuation, ppxf

    z = float(np.asarray(batch.redshift)[0])
    wave, flux, ivar, good, res, velscale = _log_grid_spectrum(batch, 0)
    good &= np.isfinite(flux) & np.isfinite(res) & (res > 0)
    lam_rest = wave / (1 + z)
    # pPXF needs the templates to cover the good pixels for every V within the bounds
    # (+-1000 km/s) plus 900 km/s of kernel.
    margin = np.exp(2000.0 / C_KMS)
    keep = (lam_rest > tw[0] * margin) & (lam_rest < tw[-1] / margin)
    if good[keep].sum() < 100:
        return {"status": "not fitted: fewer than 100 good pixels inside the E-MILES range"}
    lam_rest, flux, ivar, good, res = lam_rest[keep], flux[keep], ivar[keep], good[keep], res[keep]
    res = np.where(np.isfinite(res) & (res > 0), res, np.nanmedian(res))
    scale = float(np.median(flux[good]))
    gal = np.where(good, flux, 0.0) / scale
    noise = np.where(good, 1 / np.sqrt(np.where(good, ivar, 1)), 1.0) / scale
    noise[~good] = np.median(noise[good]) * 1e3
    # LSF: rest-frame FWHM in A per pixel (the observed FWHM lambda/R divided by 1+z).
    fwhm_rest = lam_rest / res
    sig_gal_t = np.interp(tw, lam_rest, fwhm_rest) / _FWHM
    sdiff = np.sqrt(np.clip(sig_gal_t**2 - (EMILES_FWHM / _FWHM) ** 2, 0, None))
    coarser = float(np.mean(fwhm_rest < EMILES_FWHM))
    stars, ln_lam_t, _ = ppxf_util.log_rebin(tw, ppxf_util.varsmooth(tw, tflux, sdiff), velscale=velscale)
    stars /= np.median(stars)
    lam_t = np.exp(ln_lam_t)
    fwhm_dict = {"lam": lam_rest, "fwhm": fwhm_rest}
    gas, gas_names, gas_wave = ppxf_util.emission_lines(
        ln_lam_t, [lam_rest[good][0], lam_rest[good][-1]], fwhm_dict, tie_balmer=tied_balmer_fluxes,
        limit_doublets=tied_balmer_fluxes, vacuum=True)  # fmt: skip
    forbidden = np.array(["[" in n for n in gas_names])
    component = np.array([0] * stars.shape[1] + [1 if not f else 2 for f in forbidden])
    moments = [2, 2, 2]
    start = [[0.0, 100.0], [0.0, 50.0], [0.0, 50.0]]
    bounds = [[[-1000.0, 1000.0], [1.0, 1000.0]]] * 3
    t0 = time.perf_counter()
    pp = ppxf(np.column_stack([stars, gas]), gal, noise, velscale, start, moments=moments, degree=-1, mdegree=10,
              lam=lam_rest, lam_temp=lam_t, component=component, gas_component=component > 0,
              gas_names=gas_names, goodpixels=np.flatnonzero(good), quiet=True, bounds=bounds,
              gas_reddening=0 if tied_balmer_fluxes else None)  # fmt: skip
    seconds = time.perf_counter() - t0
    chi = float(np.sqrt(pp.chi2))
    sol, err = np.asarray(pp.sol), np.asarray(pp.error) * chi
    v_star = float(sol[0][0])
    rec = {
        "status": "ok",
        "chi2_dof": float(pp.chi2),
        "seconds": seconds,
        "n_good_pixels": int(good.sum()),
        "fitted_rest_range": [float(lam_rest[good][0]), float(lam_rest[good][-1])],
        "velscale": float(velscale),
        "fraction_of_pixels_sharper_than_templates": coarser,
        "stellar": {"velocity": v_star, "velocity_err": float(err[0][0]), "sigma": float(sol[0][1]), "sigma_err": float(err[0][1])},
    }
    if tied_balmer_fluxes:
        av = float(pp.gas_reddening)
        att = attenuation(np.array([4862.691, 6564.632]), av)
        rec["gas_reddening_av"] = av
        # The tied decrement is a measurement only when both lines are fitted.
        lo, hi = rec["fitted_rest_range"]
        both = lo < 4862.691 and 6564.632 < hi
        rec["balmer_decrement"] = float(2.86 * att[1] / att[0]) if both else None
        return rec
    groups = {}
    for k, gname in ((1, "recombination"), (2, "forbidden")):
        if k < len(sol) and np.any(component == k):
            groups[gname] = {
                "velocity": float(sol[k][0]) - v_star, "velocity_err": float(err[k][0]),
                "velocity_zin": float(sol[k][0]), "sigma": float(sol[k][1]), "sigma_err": float(err[k][1]),
            }  # fmt: skip
    rec["groups"] = groups
    lines, other = {}, {}
    for j, name in enumerate(gas_names):
        f, fe = float(pp.gas_flux[j]), float(pp.gas_flux_error[j]) * chi
        gname = "forbidden" if forbidden[j] else "recombination"
        lam_obs = gas_wave[j] * (1 + z)
        # gas_flux is the sum over pixels of the normalised flux density: times the
        # observed pixel width at the line (lambda * velscale / c) and the scale -> flux x A.
        to_flux = scale * lam_obs * velscale / C_KMS
        entry_base = {"group": gname, "velocity": groups[gname]["velocity"], "sigma": groups[gname]["sigma"], "ppxf_name": str(name)}
        if name in PPXF_TO_SKYLEDGER:
            lid, div = PPXF_TO_SKYLEDGER[name]
            lines[lid] = {"flux": f * to_flux / div, "flux_err": fe * to_flux / div, **entry_base}
            if lid in PPXF_DOUBLET_CHILD:
                lines[PPXF_DOUBLET_CHILD[lid]] = {"flux": 0.33 * f * to_flux / div, "flux_err": 0.33 * fe * to_flux / div,
                                                  **entry_base, "tied_to": lid}  # fmt: skip
        else:
            other[str(name)] = {"flux": f * to_flux, "flux_err": fe * to_flux, **entry_base}
    rec["lines"] = lines
    rec["other_ppxf_lines"] = other
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emiles", type=Path, default=EMILES_DEFAULT, help="folder with the E-MILES Eun1.30Z*.fits files")
    ap.add_argument("--only", nargs="*", help="spectrum names (default: all); results merge into an existing file")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import ppxf

    tw, tflux, names = load_emiles(args.emiles)
    doc = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    doc.update({
        "made_by": "benchmarks/ppxf_gas_reference.py",
        "ppxf_version": ppxf.__version__,
        "templates": f"E-MILES SSPs (Vazdekis et al. 2016) from the ppxf 8.2.6 sdist (miles_models/Eun1.30Z*.fits, "
                     f"{len(names)} models: unimodal IMF slope 1.30, Padova 2000 isochrones, base [alpha/Fe], "
                     f"25 ages 0.063-15.8 Gyr x 6 metallicities [M/H] -1.71..+0.22); cut to "
                     f"{EMILES_AIR_RANGE[0]:g}-{EMILES_AIR_RANGE[1]:g} A air where FWHM = {EMILES_FWHM} A; air -> vacuum (IAU)",
        "setup": "one pPXF call, stars + gas; degree=-1, mdegree=10; moments [2, 2, 2]; components: 0 stars, "
                 "1 Balmer + He (free fluxes, one V and sigma), 2 forbidden lines (one V and sigma); "
                 "emission_lines(vacuum=True, tie_balmer=False, limit_doublets=False) with the data's LSF per pixel; "
                 "errors scaled by sqrt(chi2/dof). 'balmer_decrement_tied': the same fit with tie_balmer=True, "
                 "limit_doublets=True and gas_reddening (Calzetti 2000) fitted, as in ppxf_example_population_gas_sdss.py",
        "velocity_convention": "all velocities are c*ln((1+z)/(1+z_ref)) in km/s. pPXF ran on the rest frame of the input "
                               "redshift z_in, so its V are relative to z_in; stellar.velocity is that (as skyledger's "
                               "velocity); groups.*.velocity and lines.*.velocity are relative to the stellar z "
                               "(V_gas - V_star, as skyledger's line_velocity); groups.*.velocity_zin is V_gas vs z_in. "
                               "Sigmas are intrinsic (LSF removed).",
        "flux_units": "input flux units x A (observed frame), as skyledger's line_flux; inputs scaled where 'source' says so",
        "line_wavelengths": "pPXF's own vacuum rest wavelengths (emission_lines); they differ from skyledger's "
                            "air_to_vacuum(linelist) by < 0.05 A (< 3 km/s)",
    })  # fmt: skip
    spectra = doc.setdefault("spectra", {})
    for name, inp in reference_inputs(args.only).items():
        t0 = time.perf_counter()
        try:
            rec = fit_one(inp.batch, tw, tflux)
            if rec["status"] == "ok":
                tied = fit_one(inp.batch, tw, tflux, tied_balmer_fluxes=True)
                rec["balmer_decrement_tied"] = tied.get("balmer_decrement")
                rec["gas_reddening_av_tied"] = tied.get("gas_reddening_av")
        except Exception as exc:  # a failure is a result too (MaNGA[5] is unfittable)
            rec = {"status": f"failed: {type(exc).__name__}: {exc}"}
        rec = {"source": inp.source, "resolution": inp.resolution_note, "z_in": float(np.asarray(inp.batch.redshift)[0]), **rec}
        spectra[name] = rec
        summary = rec["status"]
        if rec["status"] == "ok":
            ratio = lambda a, b, ln=rec["lines"]: ln[a]["flux"] / ln[b]["flux"] if a in ln and b in ln and ln[b]["flux"] > 0 else float("nan")  # noqa: E731
            summary = (f"V*={rec['stellar']['velocity']:.1f} s*={rec['stellar']['sigma']:.1f} Ha/Hb={ratio('HA6563', 'HB4861'):.3f} "
                       f"(tied {rec.get('balmer_decrement_tied') or float('nan'):.3f}) OIII/Hb={ratio('OIII5007', 'HB4861'):.3f} "
                       f"NII/Ha={ratio('NII6584', 'HA6563'):.3f} groups="
                       + ", ".join(f"{g}: V {v['velocity']:.1f} s {v['sigma']:.1f}" for g, v in rec["groups"].items()))  # fmt: skip
        print(f"{name}: {summary} ({time.perf_counter() - t0:.1f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
