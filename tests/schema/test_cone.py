"""Cone search (SQL function and Python) against brute-force great-circle distances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import text

from skyledger.api.cone import cone_search, cone_search_spectra

ZONE_DEG = 1.0 / 60.0  # must match the zone height of the first migration


def brute_force(ra0, dec0, ra, dec):
    """Great-circle distance (deg) in numpy, Vincenty's form."""
    r0, d0, r, d = map(np.radians, (ra0, dec0, ra, dec))
    dra = r - r0
    num = np.hypot(np.cos(d) * np.sin(dra), np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(dra))
    den = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def load_points(session, ra, dec) -> list[int]:
    survey = session.execute(
        text("INSERT INTO survey (name, reader) VALUES ('cone-test', 'test') RETURNING id")
    ).scalar_one()
    file_id = session.execute(
        text(
            "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status) "
            "VALUES (:s, 'memory://cone', repeat('0', 64), 0, 'loaded') RETURNING id"
        ),
        {"s": survey},
    ).scalar_one()
    session.execute(
        text(
            "INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) "
            "SELECT :s, :f, 'p' || i, r, d FROM unnest(CAST(:ra AS float8[]), CAST(:dec AS float8[])) "
            "WITH ORDINALITY AS t(r, d, i)"
        ),
        {"s": survey, "f": file_id, "ra": list(map(float, ra)), "dec": list(map(float, dec))},
    )
    ids = session.execute(
        text("SELECT id FROM source WHERE ingest_file_id = :f ORDER BY id"), {"f": file_id}
    ).scalars()
    return list(ids)


def check_cone(session, ids, ra, dec, ra0, dec0, radius_arcsec):
    ids = np.asarray(ids)
    dist = brute_force(ra0, dec0, np.asarray(ra), np.asarray(dec))
    r = radius_arcsec / 3600.0
    # Points within 1e-9 deg of the edge are decided by rounding; no test relies on them.
    inside = set(ids[dist < r - 1e-9].tolist())
    edge = set(ids[np.abs(dist - r) <= 1e-9].tolist())
    found = cone_search(session, ra0, dec0, radius_arcsec)
    got = {m.id for m in found}
    assert inside <= got, f"missed {sorted(inside - got)[:5]} for cone ({ra0}, {dec0}, {radius_arcsec}\")"
    assert got - inside <= edge, f"spurious {sorted(got - inside - edge)[:5]}"
    distances = [m.distance_arcsec for m in found]
    assert distances == sorted(distances)
    by_id = dict(zip(ids.tolist(), dist * 3600.0))
    for m in found:
        assert m.distance_arcsec == pytest.approx(by_id[m.id], abs=1e-6)


def adversarial_points(rng):
    """Poles, the RA seam, zone edges and the cap's widest RA offset."""
    ra, dec = [], []
    for d in (-90.0, 90.0, 89.9999, -89.9999, 89.99, -89.99):
        for r in np.linspace(0, 359.999, 12):
            ra.append(r), dec.append(d)
    for r in (0.0, 1e-12, 359.9999999, 359.999999999, 0.0003, 359.9997):
        for d in (-30.0, 0.0, 45.0, 75.0):
            ra.append(r), dec.append(d)
    edges = (np.arange(-5, 6) * ZONE_DEG) + 10.0
    for e in edges:
        for off in (-1e-11, 0.0, 1e-11):
            ra.append(120.0 + rng.uniform(-0.05, 0.05)), dec.append(e + off)
    return np.array(ra), np.array(dec)


def test_adversarial_cones(session):
    rng = np.random.default_rng(7)
    ra, dec = adversarial_points(rng)
    ra = np.where(ra >= 360.0, ra - 360.0, ra)
    ids = load_points(session, ra, dec)
    cones = [
        (0.0, 90.0, 36.0),  # centred on the north pole
        (200.0, -90.0, 36.0),  # south pole
        (10.0, 89.995, 60.0),  # cap that contains the pole without being centred on it
        (359.9999, 0.0, 1.0),  # straddles RA = 0/360
        (0.0, 45.0, 5.0),
        (0.00001, 75.0, 2.0),
        (120.0, 10.0, 90.0),  # spans several zone edges
        (120.0, 10.0 + ZONE_DEG, 0.5),
        (180.0, 0.0, 180.0 * 3600.0),  # the whole sky
        (5e-324, 0.0, 1.0),  # a subnormal RA (PostgreSQL raises on float underflow)
        (360.0, 0.0, 1.0),  # RA given as 360 rather than 0
    ]
    for ra0, dec0, radius in cones:
        check_cone(session, ids, ra, dec, ra0, dec0, radius)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ra0=st.floats(0, 360, exclude_max=True),
    dec0=st.one_of(st.floats(-90, 90), st.sampled_from([-90.0, 90.0, -89.999, 89.999, 0.0])),
    radius=st.one_of(st.floats(0.1, 7200.0), st.sampled_from([1.0, 3600.0 * 10])),
)
def test_random_cones_match_brute_force(session, ra0, dec0, radius):
    rng = np.random.default_rng(abs(hash((ra0, dec0, radius))) % 2**32)
    n = 400
    # Half the points near the cone centre so cones are never trivially empty.
    spread = 2.0 * radius / 3600.0
    ra = np.concatenate([rng.uniform(0, 360, n // 2), (ra0 + rng.normal(0, spread, n // 2)) % 360.0])
    dec = np.concatenate(
        [np.degrees(np.arcsin(rng.uniform(-1, 1, n // 2))), np.clip(dec0 + rng.normal(0, spread, n // 2), -90, 90)]
    )
    ra = np.where(ra >= 360.0, 0.0, ra)
    with session.begin_nested() as sp:
        ids = load_points(session, ra, dec)
        check_cone(session, ids, ra, dec, ra0, dec0, radius)
        sp.rollback()


@pytest.mark.parametrize(
    "args, message",
    [((400.0, 0.0, 1.0), "outside \\[0, 360\\]"), ((10.0, 91.0, 1.0), "outside \\[-90, 90\\]"), ((10.0, 0.0, -1.0), "radius")],
)
def test_invalid_cones_are_refused(session, args, message):
    with pytest.raises(Exception, match=message):
        cone_search(session, *args)


@pytest.mark.parametrize("function", ["cone_search", "cone_search_spectra", "catalog.cone_search", "catalog.cone_search_spectra"])
@pytest.mark.parametrize("join", ["nestloop", "hashjoin", "mergejoin"])
def test_invalid_cones_are_refused_on_an_empty_catalogue_whatever_the_plan(session, function, join):
    """A hash join over an empty table never runs its other side; the check must not live there."""
    session.execute(text("DELETE FROM spectrum"))
    session.execute(text("DELETE FROM source"))
    for other in {"nestloop", "hashjoin", "mergejoin"} - {join}:
        session.execute(text(f"SET LOCAL enable_{other} = off"))
    for ra, dec, radius in ((400.0, 0.0, 1.0), (10.0, -91.0, 1.0), (10.0, 0.0, 0.0)):
        with pytest.raises(Exception, match="cone search: "), session.begin_nested():
            session.execute(text(f"SELECT * FROM {function}(:ra, :dec, :r)"), {"ra": ra, "dec": dec, "r": radius}).all()
    assert session.execute(text(f"SELECT count(*) FROM {function}(10, 0, 1)")).scalar_one() == 0


def test_spectra_cone_search_uses_the_spectrum_position(session):
    ids = load_points(session, [150.0], [2.0])
    file_id, survey = session.execute(text("SELECT ingest_file_id, survey_id FROM source WHERE id = :i"), {"i": ids[0]}).one()
    session.execute(
        text(
            "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, n_pix) VALUES "
            "(:src, :s, :f, 'spaxel-a', 150.0005, 2.0, 0), (:src, :s, :f, 'spaxel-b', 150.01, 2.0, 0)"
        ),
        {"src": ids[0], "s": survey, "f": file_id},
    )
    found = cone_search_spectra(session, 150.0, 2.0, 3.0)
    assert len(found) == 1 and found[0].distance_arcsec == pytest.approx(1.8 * np.cos(np.radians(2.0)), rel=1e-6)


def test_cone_search_is_index_backed_on_a_million_sources(session):
    survey = session.execute(text("INSERT INTO survey (name, reader) VALUES ('big', 'test') RETURNING id")).scalar_one()
    file_id = session.execute(
        text(
            "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status) "
            "VALUES (:s, 'memory://big', repeat('1', 64), 0, 'loaded') RETURNING id"
        ),
        {"s": survey},
    ).scalar_one()
    session.execute(text("SELECT setseed(0.42)"))
    session.execute(
        text(
            "INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) "
            "SELECT :s, :f, i::text, random() * 359.999999, degrees(asin(2 * random() - 1)) "
            "FROM generate_series(1, 1000000) AS i"
        ),
        {"s": survey, "f": file_id},
    )
    session.execute(text("ANALYZE source"))
    # The SQL function is inlined into the caller's query, so its plan shows the index.
    plan = "\n".join(
        session.execute(text("EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM cone_search(150.0, 2.2, 1800.0)")).scalars()
    )
    assert "Index Scan using ix_source_sky on source" in plan or "Index Only Scan using ix_source_sky" in plan, plan
    assert "Seq Scan on source" not in plan, plan
    n = session.execute(text("SELECT count(*) FROM cone_search(150.0, 2.2, 1800.0)")).scalar_one()
    brute = session.execute(
        text(
            "SELECT count(*) FROM source WHERE ingest_file_id = :f "
            "AND angular_distance_deg(150.0, 2.2, ra, dec) <= 1800.0 / 3600.0"
        ),
        {"f": file_id},
    ).scalar_one()
    assert n == brute > 5
