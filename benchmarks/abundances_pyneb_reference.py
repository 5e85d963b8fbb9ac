"""Print the PyNeb reference numbers hard-coded in tests/compute/test_nebular.py.

Provenance for the fast test suite, which must not need PyNeb:

    /work/venv/bin/python benchmarks/abundances_pyneb_reference.py

PyNeb 1.1.32 with its default atomic data (the set shipped in
compute/abundances/data/atomic_data.json).  Paste the output into ``PYNEB_REFERENCE``.
"""

from __future__ import annotations


def main() -> None:
    import pyneb as pn

    pn.log_.level = 0
    o3, n2, s2, o2, s3 = (pn.Atom(*a) for a in (("O", 3), ("N", 2), ("S", 2), ("O", 2), ("S", 3)))
    h1 = pn.RecAtom("H", 1)
    print(f"# pyneb {pn.__version__}")
    print("PYNEB_REFERENCE = {")
    for te, ne in ((10000.0, 100.0), (15000.0, 1000.0)):
        r = (o3.getEmissivity(te, ne, wave=4959) + o3.getEmissivity(te, ne, wave=5007)) / o3.getEmissivity(te, ne, wave=4363)
        print(f"    ('O3_te_ratio', {te}, {ne}): {float(r)!r},")
        r = (n2.getEmissivity(te, ne, wave=6548) + n2.getEmissivity(te, ne, wave=6584)) / n2.getEmissivity(te, ne, wave=5755)
        print(f"    ('N2_te_ratio', {te}, {ne}): {float(r)!r},")
        r = (s3.getEmissivity(te, ne, wave=9069) + s3.getEmissivity(te, ne, wave=9531)) / s3.getEmissivity(te, ne, wave=6312)
        print(f"    ('S3_te_ratio', {te}, {ne}): {float(r)!r},")
        r = s2.getEmissivity(te, ne, wave=6716) / s2.getEmissivity(te, ne, wave=6731)
        print(f"    ('S2_ne_ratio', {te}, {ne}): {float(r)!r},")
        r = o2.getEmissivity(te, ne, wave=3729) / o2.getEmissivity(te, ne, wave=3726)
        print(f"    ('O2_ne_ratio', {te}, {ne}): {float(r)!r},")
        print(f"    ('O3_5007_emis', {te}, {ne}): {float(o3.getEmissivity(te, ne, wave=5007))!r},")
        print(f"    ('H1_hbeta_emis', {te}, {ne}): {float(h1.getEmissivity(te, ne, wave=4861))!r},")
    diags = pn.Diagnostics()
    tem, den = diags.getCrossTemDen("[OIII] 4363/5007+", "[SII] 6731/6716", 1.0 / 300.0, 1.0 / 1.3)
    print(f"    ('cross_O3_S2', 300.0, 1.3): ({float(tem)!r}, {float(den)!r}),")
    ab = o3.getIonAbundance(450.0, 11000.0, 200.0, wave=5007, Hbeta=100.0)
    print(f"    ('O3_abund_5007', 450.0, 11000.0, 200.0): {float(ab)!r},")
    print("}")


if __name__ == "__main__":
    main()
