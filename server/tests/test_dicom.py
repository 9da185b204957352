"""The DICOM services against dcmtk's real clients: echo, store, find, move, get."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from conftest import ORTHANCPI_CONFIG, dcmtk
from pipacs.dicomfile import split_meta
from pipacs.ids import resource_ids


def dataset_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    _, offset = split_meta(raw)
    return raw[offset:]


def stored_files(storage: Path) -> list[Path]:
    """The files in place, once the server has settled what it staged (within a second)."""
    deadline = time.monotonic() + 10
    while any((storage / ".incoming").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in storage.rglob("*") if p.is_file() and ".incoming" not in p.parts]


def stored_of(p, keyword: str, value: str) -> set[bytes]:  # type: ignore[no-untyped-def]
    """Dataset bytes of the files pipacs stored whose `keyword` is `value`."""
    return {
        dataset_bytes(f)
        for f in stored_files(p.storage)
        if str(pydicom.dcmread(f, stop_before_pixels=True).get(keyword)) == str(value)
    }


def find(p, *keys: str, model: str = "-S") -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Run findscu and parse its answers into dicts of tag -> value."""
    proc = dcmtk(
        "findscu",
        model,
        "-aec",
        p.aet,
        "127.0.0.1",
        str(p.dicom_port),
        *[a for k in keys for a in ("-k", k)],
        "-v",
    )
    answers: list[dict[str, str]] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Find Response:" in line and "Pending" in line:
            answers.append({})
        elif answers and line.startswith("I: (") and "[" in line:
            tag = line[3:14]
            value = line[line.index("[") + 1 : line.rindex("]")].strip()
            answers[-1][tag] = value
        elif answers and line.startswith("I: (") and "(no value available)" in line:
            answers[-1][line[3:14]] = ""
        elif answers and line.startswith("I: (") and " =" in line:
            answers[-1][line[3:14]] = line.split(" =", 1)[1].split()[0]  # a UID's name
    return answers


def test_echo(pipacs) -> None:  # type: ignore[no-untyped-def]
    pipacs.echo()


def test_store_indexes_every_instance(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(small_data[0].parents[2])
    stats = pipacs.get("/statistics")
    assert (
        stats["CountPatients"],
        stats["CountStudies"],
        stats["CountSeries"],
        stats["CountInstances"],
    ) == (1, 2, 4, 40)
    assert len(stored_files(pipacs.storage)) == 40
    last = pipacs.get("/changes?last")["Changes"][0]
    # StableAge is 1 s: on a loaded machine a series may already be stable by now
    assert last["ChangeType"] in ("NewInstance", "StableSeries", "StableStudy",
                                  "StablePatient"), last
    changes = pipacs.get("/changes?limit=1000")["Changes"]
    assert [c["ChangeType"] for c in changes if not c["ChangeType"].startswith("Stable")][-1] \
        == "NewInstance"


def test_stored_bytes_are_what_was_sent(pipacs, storescp, small_data) -> None:  # type: ignore[no-untyped-def]
    """pipacs keeps the dataset bytes exactly as storescp +B (bit-preserving) receives them."""
    pipacs.store(*small_data[:5])
    dcmtk(
        "storescu", "-aec", storescp.aet, "127.0.0.1", str(storescp.port), *map(str, small_data[:5])
    )
    stored = {dataset_bytes(p) for p in stored_files(pipacs.storage)}
    assert len(stored) == 5
    assert stored == {dataset_bytes(p) for p in storescp.files()}


def test_store_again_is_success_and_keeps_one_copy(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(small_data[0])
    pipacs.store(small_data[0])
    assert pipacs.get("/statistics")["CountInstances"] == 1
    assert len(stored_files(pipacs.storage)) == 1


def test_corrupt_file_is_refused_and_nothing_is_lost(pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(small_data[0])
    broken = tmp_path / "broken.dcm"
    ds = pydicom.dcmread(small_data[1])
    del ds.StudyInstanceUID
    ds.save_as(broken)
    proc = dcmtk(
        "storescu",
        "-aec",
        pipacs.aet,
        "127.0.0.1",
        str(pipacs.dicom_port),
        str(broken),
        check=False,
    )
    assert proc.returncode != 0 or "Error" in proc.stderr
    assert "missing StudyInstanceUID" in pipacs.log()
    assert pipacs.get("/statistics")["CountInstances"] == 1
    assert len(stored_files(pipacs.storage)) == 1
    pipacs.echo()


def test_find_levels_and_matching(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(*small_data)
    first = pydicom.dcmread(small_data[0])
    patients = find(
        pipacs,
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        model="-P",
    )
    assert len(patients) == 2
    assert {a["(0020,1200)"] for a in patients} == {"2"}

    name = str(first.PatientName)
    studies = find(
        pipacs,
        "QueryRetrieveLevel=STUDY",
        f"PatientName={name.lower()}",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )
    assert len(studies) == 2  # PN matching is case-insensitive, as in Orthanc
    wildcard = find(pipacs, "QueryRetrieveLevel=STUDY", f"PatientName=?{name[1:].lower()}")
    assert len(wildcard) == 2
    assert find(pipacs, "QueryRetrieveLevel=STUDY", "PatientName=nobody*") == []
    assert {a["(0020,1208)"] for a in studies} == {"20"}
    assert {a["(0008,0061)"] for a in studies} == {"CT", "MR"}

    series = find(
        pipacs,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert len(series) == 2
    assert {a["(0020,1209)"] for a in series} == {"10"}

    images = find(
        pipacs,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        f"SeriesInstanceUID={first.SeriesInstanceUID}",
        "SOPInstanceUID",
        "SOPClassUID",
    )
    assert len(images) == 10
    assert {a["(0008,0016)"] for a in images} == {first.SOPClassUID.name.replace(" ", "")}


def test_find_date_ranges_and_uid_lists(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(*small_data)
    dates = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).StudyDate) for p in small_data})
    everything = find(pipacs, "QueryRetrieveLevel=STUDY", "StudyDate=19000101-", "StudyDate")
    assert len(everything) == 4
    none = find(pipacs, "QueryRetrieveLevel=STUDY", "StudyDate=-18991231")
    assert none == []
    upto = find(pipacs, "QueryRetrieveLevel=STUDY", f"StudyDate=-{dates[0]}")
    assert len(upto) >= 1
    uids = sorted(
        {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in small_data}
    )
    listed = find(pipacs, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(uids[:2]))
    assert sorted(a["(0020,000d)"] for a in listed) == uids[:2]


def test_limit_find_results(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(LimitFindResults=3)
    p.store(*small_data)
    assert len(find(p, "QueryRetrieveLevel=STUDY", "StudyInstanceUID")) == 3


def test_move_to_storescp_gives_back_the_same_bytes(make_pipacs, storescp, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]})
    p.store(*small_data)
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    dcmtk(
        "movescu",
        "-S",
        "-aec",
        p.aet,
        "-aem",
        storescp.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "127.0.0.1",
        str(p.dicom_port),
    )
    received = storescp.files()
    assert len(received) == 20
    assert {dataset_bytes(f) for f in received} == stored_of(
        p, "StudyInstanceUID", first.StudyInstanceUID
    )


def test_move_to_unknown_destination_is_refused(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(small_data[0])
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    proc = dcmtk(
        "movescu",
        "-S",
        "-aec",
        pipacs.aet,
        "-aem",
        "NOBODY",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "127.0.0.1",
        str(pipacs.dicom_port),
        "-v",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert "MoveDestinationUnknown" in out, out


def test_get_returns_the_same_bytes(pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(*small_data)
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    out = tmp_path / "got"
    out.mkdir()
    # +B: getscu writes the bytes it receives (bit-preserving).
    dcmtk(
        "getscu",
        "-S",
        "+B",
        "-aec",
        pipacs.aet,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "-k",
        f"SeriesInstanceUID={first.SeriesInstanceUID}",
        "127.0.0.1",
        str(pipacs.dicom_port),
    )
    got = sorted(out.iterdir())
    assert len(got) == 10
    assert {dataset_bytes(f) for f in got} == stored_of(
        pipacs, "SeriesInstanceUID", first.SeriesInstanceUID
    )


def test_called_aet_check(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomCheckCalledAet=True)
    dcmtk("echoscu", "-aec", "pipacs", "127.0.0.1", str(p.dicom_port))  # case-insensitive
    proc = dcmtk("echoscu", "-aec", "SOMEONE", "127.0.0.1", str(p.dicom_port), check=False)
    assert proc.returncode != 0
    assert "called AET 'SOMEONE'" in p.log()


def test_strict_aet_comparison(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomCheckCalledAet=True, StrictAetComparison=True)
    assert (
        dcmtk("echoscu", "-aec", "pipacs", "127.0.0.1", str(p.dicom_port), check=False).returncode
        != 0
    )
    p.echo()


def test_unknown_peer_refused_when_nothing_is_always_allowed(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(
        DicomAlwaysAllowEcho=False,
        DicomAlwaysAllowStore=False,
        DicomAlwaysAllowFind=False,
        DicomAlwaysAllowGet=False,
        DicomAlwaysAllowMove=False,
        DicomModalities={
            "ws": {"AET": "WORKSTATION", "Host": "127.0.0.1", "Port": 104, "AllowStore": False}
        },
    )
    assert (
        dcmtk(
            "echoscu",
            "-aet",
            "STRANGER",
            "-aec",
            p.aet,
            "127.0.0.1",
            str(p.dicom_port),
            check=False,
        ).returncode
        != 0
    )
    dcmtk("echoscu", "-aet", "WORKSTATION", "-aec", p.aet, "127.0.0.1", str(p.dicom_port))
    proc = dcmtk(
        "storescu",
        "-aet",
        "WORKSTATION",
        "-aec",
        p.aet,
        "127.0.0.1",
        str(p.dicom_port),
        str(small_data[0]),
        check=False,
    )
    assert "0124" in (proc.stdout + proc.stderr) or proc.returncode != 0
    assert p.get("/statistics")["CountInstances"] == 0


def test_find_refused_for_unknown_peer_by_default(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomAlwaysAllowFind=False)
    proc = dcmtk(
        "findscu",
        "-S",
        "-aec",
        p.aet,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "127.0.0.1",
        str(p.dicom_port),
        check=False,
    )
    assert "FIND from 'FINDSCU'" in p.log() or "refused" in p.log()
    assert "Pending" not in proc.stdout + proc.stderr


def test_ids_are_orthancs(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    pipacs.store(small_data[0])
    ds = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    expected = resource_ids(
        str(ds.PatientID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )
    changes = pipacs.get("/changes?limit=10")["Changes"]
    assert {c["ID"] for c in changes} == set(expected)


def test_sigterm_keeps_every_acknowledged_instance(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs()
    p.store(*small_data[:20])
    assert p.stop() == 0
    p.start()
    assert p.get("/statistics")["CountInstances"] == 20
    assert len(stored_files(p.storage)) == 20


def test_seed_configuration_starts_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The OrthancPi seed config starts pipacs as is (in a namespace with only loopback)."""
    seed = ORTHANCPI_CONFIG
    if not seed.exists():
        pytest.fail(f"the seed configuration is missing: {seed}")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.fail("unshare -n is not available (run the tests as root)")
    work = tmp_path / "orthancpi"
    work.mkdir()
    (work / "configuration.json").write_bytes(seed.read_bytes())
    script = (
        "import subprocess, sys, time, os\n"
        "env = {**os.environ, 'TCP_NODELAY': '1'}\n"
        "p = subprocess.Popen([sys.executable, '-m', 'pipacs', 'configuration.json'],"
        " stderr=subprocess.PIPE)\n"
        "for _ in range(100):\n"
        "    r = subprocess.run(['/usr/bin/echoscu', '-aec', 'ORTHANCPI', '127.0.0.1', '4242'],"
        " env=env, capture_output=True)\n"
        "    if r.returncode == 0: break\n"
        "    time.sleep(0.1)\n"
        "p.terminate(); err = p.communicate(timeout=10)[1].decode()\n"
        "print('ECHO', r.returncode); print(err)\n"
    )
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            f"ip link set lo up && "
            f"{subprocess.list2cmdline([__import__('sys').executable, '-c', script])}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ECHO 0" in proc.stdout, proc.stdout + proc.stderr
    assert "EnableWadoo" in proc.stdout  # the typo in the seed is reported, not fatal
    assert (work / "OrthancStorage" / "pipacs-index.db").exists()
