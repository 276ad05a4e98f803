"""Datafordeler changes: file downloads (a weekly total, daily deltas by generation number)
and events (deletions; GraphQL brought up to date), against the loopback stand-in serving
the Kalundborg BBR records."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa.config import load_pipeline
from mfa.errors import ConfigError
from mfa.pull import pull_pipeline
from mfa.pull.changes import apply_changes, net_events
from tests.conftest import MODEL
from tests.pull_helpers import (
    KALUNDBORG,
    features,
    files_under,
    pipeline_file,
    service,
    snapshot_bytes,
)
from tests.pull_standin import Services

__all__ = ["features", "service"]  # fixtures, imported for pytest

FILES_PIPELINE = (
    """
name = "t-pull-files"
crs = "EPSG:25832"
[sources.register]
url = "{BASE}/FileDownloads"
protocol = "datafordeler-files"
collection = "Bygning"
filters = { register = "BBR", type = "Current", format = "csv" }
events_url = "{BASE}/graphql/BBR/v2"
api_key_env = "T_DAF_KEY"
[cache]
dir = "{CACHE}"
"""
    + MODEL
)

GRAPHQL_EVENTS_PIPELINE = (
    """
name = "t-pull-bbr-events"
crs = "EPSG:25832"
[sources.register]
url = "{BASE}/graphql/BBR/v2"
protocol = "datafordeler-graphql"
collection = "BBR_Bygning"
filters = { kommunekode = "0326" }
page_size = {PAGE}
events_url = "{BASE}/graphql/BBR/v2"
api_key_env = "T_DAF_KEY"
[cache]
dir = "{CACHE}"
"""
    + MODEL
)

KEY = "daf-K3y-files-0123456789"


def _records() -> pd.DataFrame:
    return pd.read_csv(KALUNDBORG, dtype=str, keep_default_na=False)


def _zip(frame: pd.DataFrame, member: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(member, frame.to_csv(index=False, lineterminator="\n"))
    return buf.getvalue()


def _offer(kind: str, gen: int, when: str, frame: pd.DataFrame) -> None:
    """List a file on the stand-in as Datafordeler's listing shows one."""
    name = f"BBR_V1_Bygning_{kind}_csv_Current_{gen}.zip"
    body = _zip(frame, name.replace(".zip", ".csv"))
    meta = {
        "fileName": name,
        "register": "BBR",
        "entityName": "Bygning",
        "typeOfDownload": kind,
        "typeOfData": "Current",
        "version": "1",
        "generationNumber": gen,
        "generationTime": when,
        "expirationDate": "2099-01-01T00:00:00Z",
        "containedFileFormat": "csv",
        "outputFileFormat": "zip",
        "municipalityCode": None,
        "md5Hash": None,
        "fileSizeInBytes": len(body),
    }
    Services.downloads[name] = (meta, body)


def _event(eid: int, action: str, object_id: str, when: str) -> dict:
    return {
        "eventid": str(eid),
        "entityname": "Bygning",
        "eventaction": action,
        "datafordelerOpdateringstid": when,
        "fromfailedimport": "false",
        "object_id": object_id,
    }


@pytest.fixture
def daf(service: str, monkeypatch: pytest.MonkeyPatch) -> str:
    Services.key = KEY
    monkeypatch.setenv("T_DAF_KEY", KEY)
    return service


def _gets(kind: str) -> list[str]:
    return [p for p, _ in Services.log if kind in p]


def test_files_total_then_deltas_then_deletions_each_a_new_immutable_snapshot(
    tmp_path: Path, daf: str
) -> None:
    recs = _records()
    ids = recs["id_lokalId"].tolist()
    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", recs.iloc[:55])
    changed = recs.iloc[[5, 55, 56]].copy()
    changed["byg038SamletBygningsareal"] = ["999", "120", "130"]
    _offer("DeltaDownload", 7, "2026-11-29T02:00:00Z", changed)
    _offer("DeltaDownload", 8, "2026-11-30T02:00:00Z", recs.iloc[[57]])
    Services.events = [_event(1, "d", ids[3], "2026-11-29T10:00:00Z")]
    p = load_pipeline(pipeline_file(tmp_path, daf, FILES_PIPELINE))
    (first,) = pull_pipeline(p, day="2026-12-01")
    got = pd.read_csv(first["snapshot"]["path"], dtype=str, keep_default_na=False)
    # oracle: the records as the register holds them after the changes
    expected = recs.iloc[:58].drop(index=3).set_index("id_lokalId")
    expected.loc[changed["id_lokalId"], "byg038SamletBygningsareal"] = ["999", "120", "130"]
    assert got["id_lokalId"].tolist() == expected.index.tolist()
    pd.testing.assert_frame_equal(got.set_index("id_lokalId"), expected)
    assert first["changed"] and first["rows"] == 57
    # listing + events + the total and two deltas
    assert first["requests"] == 5 and len(_gets("GetFile")) == 3
    query = first["snapshot"]["query"]
    assert (query["total_generation"], query["delta_generation"], query["from"]) == (40, 8, "total")
    # the run reads the snapshot as its register CSV
    from mfa.io.register import read_register

    assert len(read_register(load_pipeline(p.source_file).sources.register_, "EPSG:25832")) == 57

    # the next night, nothing new: the listing and the events, no file, nothing written
    before = snapshot_bytes(tmp_path / "cache")
    Services.log.clear()
    (second,) = pull_pipeline(p, day="2026-12-02")
    assert not second["changed"] and second["requests"] == 2 and not _gets("GetFile")
    assert snapshot_bytes(tmp_path / "cache") == before

    # a new delta and a deletion: the previous snapshot + the delta, the total not fetched
    _offer("DeltaDownload", 9, "2026-12-02T02:00:00Z", recs.iloc[[58]])
    Services.events.append(_event(2, "d", ids[10], "2026-12-02T09:00:00Z"))
    Services.log.clear()
    (third,) = pull_pipeline(p, day="2026-12-03")
    (fetched,) = _gets("GetFile")  # one file: the new delta
    assert third["changed"] and "DeltaDownload_csv_Current_9" in fetched
    new = pd.read_csv(third["snapshot"]["path"], dtype=str, keep_default_na=False)
    assert new["id_lokalId"].tolist() == [i for i in got["id_lokalId"] if i != ids[10]] + [ids[58]]
    assert third["snapshot"]["query"]["from"] == "deltas"
    assert snapshot_bytes(tmp_path / "cache").items() >= before.items()  # the old ones stay
    for data in files_under(tmp_path).values():  # the key is in no file
        assert KEY.encode() not in data


def test_files_delta_gap_starts_again_from_the_newer_total(tmp_path: Path, daf: str) -> None:
    recs = _records()
    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", recs.iloc[:50])
    _offer("DeltaDownload", 7, "2026-11-29T02:00:00Z", recs.iloc[[50]])
    p = load_pipeline(pipeline_file(tmp_path, daf, FILES_PIPELINE))
    pull_pipeline(p, day="2026-12-01")
    # delta 8 expired unseen; a new weekly total and the delta after it are listed
    Services.downloads.clear()
    _offer("TotalDownload", 41, "2026-12-05T03:00:00Z", recs.iloc[:55])
    _offer("DeltaDownload", 9, "2026-12-05T02:00:00Z", recs.iloc[[50]])  # before the total
    _offer("DeltaDownload", 10, "2026-12-06T02:00:00Z", recs.iloc[[56]])
    (rec,) = pull_pipeline(p, day="2026-12-06")
    q = rec["snapshot"]["query"]
    assert (q["from"], q["total_generation"], q["delta_generation"]) == ("total", 41, 10)
    got = pd.read_csv(rec["snapshot"]["path"], dtype=str, keep_default_na=False)
    assert got["id_lokalId"].tolist() == recs["id_lokalId"].iloc[[*range(55), 56]].tolist()


def test_graphql_with_events_asks_once_when_nothing_changed_and_applies_changes(
    tmp_path: Path, daf: str
) -> None:
    recs = _records()
    Services.records = [{k: (v or None) for k, v in r.items()} for r in recs.to_dict("records")]
    p = load_pipeline(pipeline_file(tmp_path, daf, GRAPHQL_EVENTS_PIPELINE, page=25))
    (first,) = pull_pipeline(p)
    cursor = first["snapshot"]["query"]["events_cursor"]
    assert first["rows"] == 60 and cursor
    before = snapshot_bytes(tmp_path / "cache")
    Services.log.clear()
    (second,) = pull_pipeline(p)
    assert not second["changed"] and second["requests"] == 1  # the events, nothing else
    assert snapshot_bytes(tmp_path / "cache") == before
    # one building updated, one deleted, one changed and deleted again, one failed-import dup
    t = pd.Timestamp(cursor) + pd.Timedelta(minutes=5)
    iso = [(t + pd.Timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(4)]
    ids = recs["id_lokalId"].tolist()
    Services.records[7]["byg026Opfoerelsesaar"] = "1999"
    Services.records = [r for r in Services.records if r["id_lokalId"] != ids[9]]
    Services.events = [
        _event(11, "u", ids[7], iso[0]),
        _event(12, "u", ids[9], iso[1]),
        _event(13, "d", ids[9], iso[2]),
        {**_event(13, "d", ids[9], iso[2]), "fromfailedimport": "true"},
        _event(9, "u", ids[2], "2000-01-01T00:00:00Z"),  # before the cursor: not news
    ]
    Services.log.clear()
    (third,) = pull_pipeline(p)
    assert third["changed"] and third["requests"] == 2  # events + the changed object by id
    got = pd.read_csv(third["snapshot"]["path"], dtype=str, keep_default_na=False)
    assert ids[9] not in set(got["id_lokalId"]) and len(got) == 59
    assert got.set_index("id_lokalId").loc[ids[7], "byg026Opfoerelsesaar"] == "1999"
    assert snapshot_bytes(tmp_path / "cache").items() >= before.items()
    assert KEY.encode() not in Path(third["snapshot"]["path"]).read_bytes()


FILTERS = 'filters = { register = "BBR", type = "Current", format = "csv" }'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (FILTERS, 'filters = { type = "Current" }', "needs filters.register"),
        ('collection = "Bygning"\n', "", "needs collection"),
        ('events_url = "{BASE}/graphql/BBR/v2"', 'events_url = "ftp://x"', "http.s. address"),
    ],
)
def test_files_source_is_checked_on_load(tmp_path: Path, old: str, new: str, message: str) -> None:
    load_pipeline(pipeline_file(tmp_path, "http://127.0.0.1:9", FILES_PIPELINE))
    with pytest.raises(ConfigError, match=message):
        load_pipeline(
            pipeline_file(tmp_path, "http://127.0.0.1:9", FILES_PIPELINE.replace(old, new))
        )


ROWS = st.lists(st.tuples(st.sampled_from("abcdefg"), st.sampled_from(["0", "1", "2"])), max_size=8)


@settings(max_examples=80, deadline=None)
@given(ROWS, st.lists(ROWS, max_size=3), st.lists(st.sampled_from("abcdefgh"), max_size=3))
def test_apply_changes_equals_a_row_by_row_replay(prev_rows, changes, deleted) -> None:
    prev = pd.DataFrame(dict(prev_rows).items(), columns=["id", "v"])  # ids unique
    frames = [pd.DataFrame(c, columns=["id", "v"]) for c in changes]
    got = apply_changes(prev, frames, deleted, "id")
    # oracle: replay every change on a dict that keeps insertion order
    state = dict(zip(prev["id"], prev["v"], strict=True))
    for frame in frames:
        for i, v in zip(frame["id"], frame["v"], strict=True):
            state[i] = v
    for i in deleted:
        state.pop(i, None)
    assert list(zip(got["id"], got["v"], strict=True)) == list(state.items())


def test_net_events_last_action_wins_by_time_then_id() -> None:
    events = pd.DataFrame(
        [
            ("1", "i", "a", "2026-01-01T00:00:00Z"),
            ("2", "d", "a", "2026-01-02T00:00:00Z"),
            ("3", "u", "b", "2026-01-02T00:00:00Z"),
            ("5", "d", "b", "2026-01-02T00:00:00Z"),
            ("4", "i", "c", "2026-01-03T00:00:00+01:00"),  # = 2026-01-02T23:00Z
        ],
        columns=["eventid", "eventaction", "object_id", "datafordelerOpdateringstid"],
    )
    deleted, changed, latest = net_events(events)
    assert (deleted, changed, latest) == (["a", "b"], ["c"], "2026-01-03T00:00:00+01:00")


def test_files_cut_off_or_not_a_zip_is_one_line_and_publishes_nothing(
    tmp_path: Path, daf: str
) -> None:
    from mfa.errors import PullError
    from tests.pull_helpers import snapshots_in

    recs = _records()
    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", recs.iloc[:55])
    name = next(iter(Services.downloads))
    meta, body = Services.downloads[name]
    p = load_pipeline(pipeline_file(tmp_path, daf, FILES_PIPELINE))
    Services.downloads[name] = (meta, body[:-100])  # cut off
    with pytest.raises(PullError, match="the listing says") as info:
        pull_pipeline(p)
    Services.downloads[name] = (dict(meta, fileSizeInBytes=20), b"<html>busy</html>!!!")
    with pytest.raises(PullError, match="not a zip file") as info2:
        pull_pipeline(p)
    for e in (info, info2):
        assert "\n" not in str(e.value) and "sources.register" in str(e.value)
        assert KEY not in str(e.value)
    assert snapshots_in(tmp_path / "cache") == []


def _zip_members(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../../evil.csv": b"id_lokalId\n1\n"}, r"'../../evil.csv'.*path traversal"),
        ({"/etc/evil.csv": b"id_lokalId\n1\n"}, r"'/etc/evil.csv'.*path traversal"),
        # 3 MB of one repeated row in a zip of a few kB: unpacked past max_download_mb = 1
        ({"bomb.csv": b"id_lokalId,x\n" + b"1,2\n" * 750_000}, r"unpacks to 3.0 MB .declared"),
    ],
)
def test_files_zip_with_traversal_or_a_bomb_is_refused_and_nothing_is_unpacked(
    tmp_path: Path, daf: str, members: dict[str, bytes], message: str
) -> None:
    from mfa.errors import PullError
    from tests.pull_helpers import snapshots_in

    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", _records())
    name = next(iter(Services.downloads))
    body = _zip_members(members)
    Services.downloads[name] = (dict(Services.downloads[name][0], fileSizeInBytes=len(body)), body)
    text = FILES_PIPELINE.replace("api_key_env", "max_download_mb = 1\napi_key_env")
    p = load_pipeline(pipeline_file(tmp_path, daf, text))
    with pytest.raises(PullError, match=message) as info:
        pull_pipeline(p)
    assert "\n" not in str(info.value) and str(info.value).startswith("sources.register: ")
    assert snapshots_in(tmp_path / "cache") == []
    # nothing unpacked anywhere (no evil.csv, no part of the bomb), no work folder kept
    assert [f.name for f in tmp_path.rglob("*") if f.is_file() and "csv" in f.name] == []
    assert not [d for d in (tmp_path / "cache").rglob(".pull/*") if d.is_dir()]


def test_files_a_pull_that_failed_after_the_total_does_not_download_it_again(
    tmp_path: Path, daf: str
) -> None:
    from mfa.errors import PullError

    recs = _records()
    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", recs.iloc[:55])
    _offer("DeltaDownload", 7, "2026-11-29T02:00:00Z", recs.iloc[[56]])
    p = load_pipeline(pipeline_file(tmp_path, daf, FILES_PIPELINE))
    Services.script[:] = ["ok", "ok", "ok", "401"]  # listing, events, total, delta: refused
    with pytest.raises(PullError, match="HTTP 401"):
        pull_pipeline(p)
    Services.log.clear()
    (rec,) = pull_pipeline(p)
    (fetched,) = _gets("GetFile")  # the delta only: the total was unpacked by the first pull
    assert "DeltaDownload" in fetched and rec["rows"] == 56
    got = pd.read_csv(rec["snapshot"]["path"], dtype=str, keep_default_na=False)
    assert got["id_lokalId"].tolist() == recs["id_lokalId"].iloc[[*range(55), 56]].tolist()
    assert not [d for d in (tmp_path / "cache").rglob(".pull/*") if d.is_dir()]  # published


def test_files_pull_killed_mid_total_resumes_with_range_and_checks_the_md5(
    tmp_path: Path, daf: str
) -> None:
    """A total of 2.5 download checkpoints (stored, not deflated): killed after the first,
    the next pull asks for the rest and the md5 over both parts matches the listing's."""
    import hashlib
    import os
    import signal
    import subprocess
    import sys

    from mfa.pull.download import CHECKPOINT
    from tests.conftest import ROOT

    recs = _records()
    big = recs.iloc[np.arange(int(2.5 * CHECKPOINT) // 250) % len(recs)].reset_index(drop=True)
    big["id_lokalId"] = [f"{k:08x}-0000-4000-8000-000000000000" for k in range(len(big))]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("total.csv", big.to_csv(index=False, lineterminator="\n"))
    body = buf.getvalue()
    assert len(body) > 2 * CHECKPOINT
    _offer("TotalDownload", 40, "2026-11-28T03:00:00Z", recs.iloc[:1])
    name = next(iter(Services.downloads))
    meta = dict(Services.downloads[name][0], fileSizeInBytes=len(body))
    Services.downloads[name] = (dict(meta, md5Hash=hashlib.md5(body).hexdigest()), body)
    pipeline = pipeline_file(tmp_path, daf, FILES_PIPELINE)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "MFA_FAILPOINT": "pull:download:1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mfa.cli", "pull", str(pipeline), "-o", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    Services.log.clear()
    (rec,) = pull_pipeline(load_pipeline(pipeline))
    (ranged,) = [h.get("Range") for p, h in Services.log if "GetFile" in p]
    assert ranged == f"bytes={CHECKPOINT}-"
    got = pd.read_csv(rec["snapshot"]["path"], dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(got, big)
    # a listing whose md5 does not match what came: one line, nothing published
    wrong = {**meta, "fileName": "x", "generationNumber": 41, "md5Hash": "0" * 32}
    Services.downloads["x"] = (wrong, body)  # a newer total
    from mfa.errors import PullError

    with pytest.raises(PullError, match="md5 differs from the listing's") as info:
        pull_pipeline(load_pipeline(pipeline))
    assert "\n" not in str(info.value)
