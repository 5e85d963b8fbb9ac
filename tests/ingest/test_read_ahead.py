"""Reading ahead in worker processes: the same rows as inline reading, groups, stopping the
workers, and the checksummed bytes being what is parsed."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.loader import Loader
from skyledger.ingest.readers import get_reader
from skyledger.ingest.sample_data import sample_data_dir
from tests.ingest.test_flows import prefect_api  # noqa: F401 - the session's Prefect test server
from tests.ingest.broken import BROKEN, MANGA
from tests.ingest.test_loader import copy_samples, counts


# --------------------------------------------------------------------------- reading ahead in worker processes


def worker_pids(parent: int) -> set[int]:
    """Reader worker processes that are children of ``parent`` (from /proc)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"skyledger.ingest.read_worker import serve" in cmdline:
                pids.add(int(pid))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def mixed_batch(directory: Path) -> list[Path]:
    """Synthetic SDSS files, real files of three formats, a broken one and a copy (duplicate)."""
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(directory / "sdss", 6, seed=3, n_pix=600)
    files += copy_samples(directory / "real")
    bad, _ = BROKEN["negative_ivar"](directory)  # its last spectrum is bad: the worker reads it all
    files.append(bad)
    files.append(Path(shutil.copy(files[0], directory / "copy-of-first.fits")))
    return files


def outcomes_and_rows(db, summary) -> tuple[list, list]:
    outcomes = [(Path(o.path).name, o.status, o.reader, o.n_spectra, o.n_sources, o.n_lines,
                 (o.reason or "").replace(str(Path(o.path).parent), "DIR")) for o in summary.outcomes]  # fmt: skip
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT s.object_id, md5(s.flux::text || s.ivar::text || s.mask::text || coalesce(s.resolution::text, '')), "
                 "s.flags, s.ra, s.z, src.object_id FROM spectrum s JOIN source src ON src.id = s.source_id ORDER BY 1")
        ).all()  # fmt: skip
    return outcomes, rows


def test_read_ahead_workers_load_exactly_what_inline_reading_loads(fresh_database, server, template_url, tmp_path):
    files = mixed_batch(tmp_path)
    inline = ingest_paths(fresh_database, files, read_workers=0)
    assert {o.status for o in inline.outcomes} == {"loaded", "rejected", "duplicate"}
    from sqlalchemy import create_engine, make_url

    url = server.create_database(f"skyledger_test_ra_{os.getpid()}", template=make_url(template_url).database)
    from skyledger.schema.database import Database

    other = Database(engine=create_engine(url), url=url, embedded=None)
    try:
        ahead = ingest_paths(other, files, read_workers=2)
        assert outcomes_and_rows(other, ahead) == outcomes_and_rows(fresh_database, inline)
        # Re-ingest through the workers is a no-op, as inline.
        again = ingest_paths(other, files, read_workers=1)
        assert [o.status for o in again.outcomes] == [
            "unchanged" if o.status == "loaded" else o.status for o in ahead.outcomes
        ]
        assert outcomes_and_rows(other, ahead)[1] == outcomes_and_rows(other, again)[1]
    finally:
        other.dispose()
    assert worker_pids(os.getpid()) == set()


def test_a_file_too_large_to_ship_is_read_by_the_loader(fresh_database, tmp_path):
    from skyledger.ingest.prepare import Job
    from skyledger.ingest.read_ahead import ReadAhead

    files = copy_samples(tmp_path / "data")
    jobs = [Job(str(f), None) for f in files]
    with ReadAhead(jobs, root=None, workers=1, ship_limit=100_000) as ahead:
        prepared = list(ahead)
    deferred = {Path(p.path).name for p in prepared if p.deferred}
    assert deferred == {MANGA.name, "MaNGA_multicomp_test_spectra.fits.gz", "legac_M19_56670_v3.0.fits",
                        "209807_A_sectors_blue.fits.gz", "209807_A_sectors_red.fits.gz"}  # fmt: skip
    assert all(p.contents is None for p in prepared if p.deferred)
    assert all(p.contents is not None and p.reason is None for p in prepared if not p.deferred)


def test_storing_workers_keep_the_arrays_and_commit_the_groups_they_are_told_to(fresh_database, tmp_path):
    """With a store target, a groupable file reaches the loader as a stub (no arrays) and
    stays in its worker until the loader names it in a group; a rejected file arrives whole."""
    from skyledger.ingest.prepare import Job
    from skyledger.ingest.read_ahead import ReadAhead
    from skyledger.ingest.read_worker import StoreTarget
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(tmp_path / "sdss", 6, seed=21, n_pix=300)
    (tmp_path / "sdss" / "zz-not-fits.fits").write_bytes(b"not a FITS file at all")
    jobs = [Job(str(f), SurveySpec(name="held", reader="sdss")) for f in files] + [
        Job(str(tmp_path / "sdss" / "zz-not-fits.fits"), SurveySpec(name="held", reader="sdss"))
    ]
    with Loader(fresh_database) as loader:
        survey_id = loader.survey_id(jobs[0].survey, "sdss")
    target = StoreTarget(fresh_database.conninfo, batch_id="held-test")
    with ReadAhead(jobs, root=None, workers=2, block=3, window=4, store=target) as ahead:
        prepared = list(ahead)
        assert [p.held for p in prepared] == [True] * 6 + [False]
        assert all(p.contents is None and p.held_bytes > 0 for p in prepared[:6])
        assert prepared[6].reason is not None and "FITS" in prepared[6].reason
        assert {ahead.worker_of(i) for i in range(3)} == {0} and {ahead.worker_of(i) for i in range(3, 6)} == {1}
        with pytest.raises(ValueError, match="one worker"):
            ahead.store([2, 3], {"held": survey_id})
        from skyledger.schema.errors import IngestError

        with pytest.raises(IngestError, match=r"(?s)storing files from .*zz-not-fits.*does not hold"):
            ahead.stored(ahead.store([6], {"held": survey_id}))  # the rejected file was never held
        assert counts(fresh_database)["spectrum"] == 0  # nothing is stored before it is asked for
        second = ahead.store([3, 4, 5], {"held": survey_id})
        first = ahead.store([0, 1], {"held": survey_id})
        assert [o.status for o in ahead.stored(second)] == ["loaded"] * 3
        assert [Path(o.path).name for o in ahead.stored(first)] == [f.name for f in files[:2]]
        ahead.finish()
    with fresh_database.engine.connect() as conn:
        batches = conn.execute(text("SELECT DISTINCT batch_id FROM ingest_file")).scalars().all()
    assert counts(fresh_database)["spectrum"] == 5 and batches == ["held-test"]


def test_interrupting_the_batch_stops_the_workers(fresh_database, tmp_path):
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(tmp_path / "sdss", 100, seed=4, n_pix=300)
    seen: list[set[int]] = []

    def interrupt(outcome) -> None:
        seen.append(worker_pids(os.getpid()))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_paths(fresh_database, files, read_workers=2, on_file=interrupt)
    assert len(seen[0]) == 2
    assert not any(alive(pid) for pid in seen[0])
    # The files reported before the interrupt are in, whole, with the rest of the group
    # whose commit they were reported after; groups the workers had been told to store
    # are each wholly in or wholly out (a worker killed mid-group rolls it back).
    from skyledger.ingest.loader import GROUP_FILES

    assert 2 * GROUP_FILES < len(files)
    with fresh_database.engine.connect() as conn:
        n_files, n_spectra = conn.execute(
            text("SELECT count(*), sum(n_spectra) FROM ingest_file WHERE status = 'loaded'")
        ).one()
        loaded = {Path(u) for u in conn.execute(text("SELECT uri FROM ingest_file WHERE status = 'loaded'")).scalars()}
    assert n_files == n_spectra == counts(fresh_database)["spectrum"]
    blocks = [{p.resolve() for p in files[k : k + GROUP_FILES]} for k in range(0, len(files), GROUP_FILES)]
    assert blocks[0] <= loaded
    assert all(block <= loaded or not (block & loaded) for block in blocks)
    rest = ingest_paths(fresh_database, files, read_workers=2)
    assert dict(rest.counts) == {"loaded": len(files) - n_files, "unchanged": n_files}


def test_a_dead_worker_stops_the_batch_with_a_clear_error(fresh_database, tmp_path):
    import signal

    from skyledger.testing.sdss_files import write_sdss_spectra
    from skyledger.schema.errors import IngestError

    # More files than the read-ahead window and the groups in flight hold.
    files = write_sdss_spectra(tmp_path / "sdss", 120, seed=6, n_pix=300)

    def kill_workers(outcome) -> None:
        for pid in worker_pids(os.getpid()):
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(IngestError, match="a reader process died .* run the ingest again for the rest"):
        ingest_paths(fresh_database, files, read_workers=1, on_file=kill_workers)
    assert worker_pids(os.getpid()) == set()
    with fresh_database.engine.connect() as conn:
        loaded = conn.execute(text("SELECT count(*) FROM ingest_file WHERE status = 'loaded'")).scalar_one()
    assert 1 <= loaded < len(files)
    rest = ingest_paths(fresh_database, files, read_workers=1)
    assert rest.counts["loaded"] == len(files) - loaded and rest.counts["unchanged"] == loaded


def test_counts_only_summary_keeps_rejections(fresh_database, tmp_path):
    files = mixed_batch(tmp_path)
    full = ingest_paths(fresh_database, files, read_workers=0)
    lean = ingest_paths(fresh_database, files, read_workers=0, keep_outcomes=False)
    assert lean.counts == {"unchanged": full.counts["loaded"], "duplicate": 1, "rejected": full.counts["rejected"]}
    assert [o.path for o in lean.outcomes] == [o.path for o in full.rejected()]
    assert lean.n_spectra == 0 and full.n_spectra > 0
    assert "### Rejected files" in lean.markdown()


def test_read_ahead_inside_a_prefect_task(prefect_api, fresh_settings, fresh_database, tmp_path):
    from prefect import flow, task

    from skyledger.testing.sdss_files import write_sdss_spectra
    from skyledger.schema.database import connect

    files = [str(p) for p in write_sdss_spectra(tmp_path / "sdss", 12, seed=8, n_pix=300)]

    @task
    def load(paths: list[str]) -> dict[str, int]:
        db = connect(fresh_settings)
        try:
            return dict(ingest_paths(db, paths, read_workers=2).counts)
        finally:
            db.dispose()

    @flow
    def ingest_flow(paths: list[str]) -> dict[str, int]:
        return load(paths)

    assert ingest_flow(files) == {"loaded": 12}
    assert counts(fresh_database)["spectrum"] == 12
    assert worker_pids(os.getpid()) == set()


def test_a_group_whose_rows_the_database_refuses_is_stored_file_by_file(fresh_database, tmp_path):
    """Read-ahead files share one transaction; when one file's rows fail in it, the group
    is rolled back and retried one file at a time: the culprit is rejected, the rest load."""
    from skyledger.ingest.loader import Loader
    from skyledger.ingest.prepare import Job, prepare
    from skyledger.ingest.store_groups import groupable
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(tmp_path / "sdss", 5, seed=9, n_pix=300)
    group = []
    for position, path in enumerate(files):
        prepared = prepare(Job(str(path), None, "sdss"), None, ship_limit=1 << 20)
        if position == 2:
            # A reader bug the database's CHECK catches: the spectrum's RA out of range.
            prepared.contents.spectra = iter([dataclasses.replace(row, ra=400.0) for row in prepared.contents.spectra])
        member = groupable(prepared, "sdss", position, 0.0)
        assert member is not None
        group.append(member)
    with Loader(fresh_database) as loader:
        reported = loader.store_group(group)
    assert [Path(o.path).name for o in reported] == [p.name for p in files]
    assert [o.status for o in reported] == ["loaded", "loaded", "rejected", "loaded", "loaded"]
    assert "the database refused the rows" in reported[2].reason and "ra_range" in reported[2].reason
    with fresh_database.engine.connect() as conn:
        rows = conn.execute(text("SELECT uri, status, n_spectra FROM ingest_file ORDER BY id")).all()
    assert [(Path(u).name, s) for u, s, _ in rows if s == "loaded"] == [(p.name, "loaded") for i, p in enumerate(files) if i != 2]
    assert counts(fresh_database)["spectrum"] == counts(fresh_database)["source"] == 4


def test_copies_across_concurrent_groups_are_judged_in_file_order(fresh_database, server, template_url, tmp_path):
    """Groups are stored by two worker processes at once; a copy of a file in a
    neighbouring group still comes out as it does when every file is stored in order."""
    from sqlalchemy import create_engine, make_url

    from skyledger.ingest.loader import GROUP_FILES
    from skyledger.testing.sdss_files import write_sdss_spectra
    from skyledger.schema.database import Database

    files = write_sdss_spectra(tmp_path / "sdss", 3 * GROUP_FILES, seed=12, n_pix=300)
    # A copy of the first file in the second group, and a copy of a second-group file that
    # comes before its original (so the copy is the one loaded).
    files.insert(GROUP_FILES + 3, Path(shutil.copy(files[0], tmp_path / "copy-of-0.fits")))
    files.insert(GROUP_FILES - 2, Path(shutil.copy(files[GROUP_FILES + 5], tmp_path / "early-copy.fits")))
    inline = ingest_paths(fresh_database, files, read_workers=0)
    assert inline.counts == {"loaded": len(files) - 2, "duplicate": 2}
    url = server.create_database(f"skyledger_test_cg_{os.getpid()}", template=make_url(template_url).database)
    other = Database(engine=create_engine(url), url=url, embedded=None)
    try:
        grouped = ingest_paths(other, files, read_workers=2)
        assert outcomes_and_rows(other, grouped) == outcomes_and_rows(fresh_database, inline)
        early = next(o for o in grouped.outcomes if o.path.endswith("early-copy.fits"))
        assert early.status == "loaded"
    finally:
        other.dispose()


def test_the_rows_read_are_the_content_checksummed(tmp_path):
    """A file rewritten between its checksum and its read loads the checksummed content,
    so ``ingest_file.sha256`` always describes the rows; the bytes are never shipped."""
    import hashlib
    import pickle

    from skyledger.ingest.prepare import Job, locate, read_contents
    from skyledger.testing.sdss_files import write_sdss_spectra

    first, second = write_sdss_spectra(tmp_path, 2, seed=12, n_pix=300)
    original = first.read_bytes()
    expected = next(get_reader("sdss").read(first, {}).spectra)
    job = Job(str(first), SurveySpec(name="s", reader="sdss"), "sdss")
    prepared = locate(job, None)
    assert prepared.sha == hashlib.sha256(original).hexdigest() and prepared.content == original
    assert pickle.loads(pickle.dumps(prepared)).content is None  # what a reader worker sends
    shutil.copyfile(second, first)  # changed after the checksum
    read_contents(prepared, "sdss")
    assert prepared.reason is None and prepared.content is None
    got = next(prepared.contents.spectra)
    assert got.object_id == expected.object_id != next(get_reader("sdss").read(first, {}).spectra).object_id
    np.testing.assert_array_equal(got.flux, expected.flux)


@pytest.mark.parametrize(("sample", "reader"), [(MANGA, "manga_rss"), ("legac_M19_56670_v3.0.fits", "eso_phase3")])
def test_astropy_readers_parse_the_checksummed_bytes_too(tmp_path, sample, reader):
    """As for SDSS above: a file rewritten in place after its checksum, even with the
    same size and time stamps, is parsed as checksummed (open_fits reads those bytes)."""
    from skyledger.ingest.prepare import Job, locate, read_contents
    from tests.ingest.broken import modified_copy

    source = sample_data_dir() / sample if isinstance(sample, str) else sample
    path = Path(shutil.copy(source, tmp_path / source.name))
    expected = list(get_reader(reader).read(path, {}).spectra)
    prepared = locate(Job(str(path), SurveySpec(name="s", reader=reader), reader), None)

    def double(h):
        if "FLUX" in h:  # MaNGA: a FLUX image
            h["FLUX"].data = h["FLUX"].data * 2
        else:  # ESO: a FLUX column
            h[1].data["FLUX"] *= 2

    other = modified_copy(source, tmp_path / ("other" + "".join(source.suffixes)), double)
    stamp = path.stat()
    path.write_bytes(other.read_bytes())
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    read_contents(prepared, reader)
    assert prepared.reason is None, prepared.reason
    got = list(prepared.contents.spectra)
    assert [s.object_id for s in got] == [s.object_id for s in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.flux, b.flux)
    changed = next(get_reader(reader).read(path, {}).spectra)
    assert not np.array_equal(changed.flux, expected[0].flux)  # the file did change


def test_resolving_with_cached_directories_agrees_with_pathlib(tmp_path, monkeypatch):
    """``locate`` resolves each directory once per process; every path kind must still come
    out as ``Path.resolve(strict=True)`` says, symlinks anywhere in the path included."""
    from skyledger.ingest import prepare

    real = tmp_path / "real" / "plate"
    real.mkdir(parents=True)
    (real / "spec.fits").write_bytes(b"x")
    (tmp_path / "linked-dir").symlink_to(tmp_path / "real")
    (real / "link.fits").symlink_to(real / "spec.fits")
    (tmp_path / "elsewhere.fits").write_bytes(b"y")
    (real / "out.fits").symlink_to(tmp_path / "elsewhere.fits")
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    (tmp_path / "deep" / "a" / "x.fits").write_bytes(b"z")
    (tmp_path / "x.fits").write_bytes(b"w")
    (tmp_path / "jump").symlink_to(tmp_path / "deep" / "a" / "b")  # jump/.. is deep/a, not tmp_path
    monkeypatch.chdir(real)
    paths = [real / "spec.fits", tmp_path / "linked-dir" / "plate" / "spec.fits", real / "link.fits",
             real / "out.fits", Path("spec.fits"), Path("../plate/spec.fits"), tmp_path / "linked-dir" / ".." / "real",
             real / ".", Path("."), tmp_path / "jump" / ".." / "x.fits"]  # fmt: skip
    for path in paths:
        for _ in range(2):  # the second time from the directory cache
            resolved, status = prepare._resolve(path)
            assert resolved == path.resolve(strict=True), path
            assert status.st_ino == os.stat(path).st_ino
    # A directory swapped for a symlink after it was cached is a known blind spot; a
    # file swapped for a symlink is not (its own lstat is never cached).
    (real / "spec.fits").unlink()
    (real / "spec.fits").symlink_to(tmp_path / "elsewhere.fits")
    assert prepare._resolve(real / "spec.fits")[0] == tmp_path / "elsewhere.fits"
    with pytest.raises(FileNotFoundError):
        prepare._resolve(real / "missing.fits")
