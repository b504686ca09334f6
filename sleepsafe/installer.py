"""`install-service`: install, or remove, the agent (or the sink) as a hardened systemd service.

One plan of steps, shown by ``--dry-run``, carried out otherwise: a system user, a virtual
environment under ``/opt/sleepsafe``, the config from the commented template (an existing one is
never overwritten), an empty credentials file for ``LoadCredential=``, the unit file, then
``systemctl daemon-reload`` and ``enable --now``.  ``--root DIR`` installs into a staging root
(an image being built, a test): files go under DIR, and the steps that act on the running system
(user, systemctl) are listed but skipped.  ``--uninstall`` reverses it; config, credentials and
state stay unless ``--purge``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Package data, so an installed wheel installs its own service (not files of a checkout).
UNITS_DIR = Path(__file__).resolve().parent / "units"
# The config templates ship in each end's package; read by name so this imports neither.
TEMPLATES = {
    "edge.toml": ("edge_agent", "edge.example.toml"),
    "sink.toml": ("cloud_sink", "sink.example.toml"),
}


def _template(name: str) -> str:
    from importlib import resources

    package, file = TEMPLATES[name]
    return resources.files(package).joinpath(file).read_text()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    unit: str
    user: str
    config_name: str | None
    credentials: tuple[str, ...]
    extras: str = ""  # pip extras the service needs, e.g. "[sink]"


SERVICES = {
    "edge": ServiceSpec("sleepsafe-edge.service", "sleepsafe", "edge.toml", ("mqtt-password",), "[edge]"),
    "sink": ServiceSpec(
        "sleepsafe-sink.service",
        "sleepsafe-sink",
        "sink.toml",
        ("sink-mqtt-password", "sink-api-token"),
        "[sink]",
    ),
}


class InstallError(RuntimeError):
    pass


@dataclass(slots=True)
class Step:
    text: str
    action: Callable[[], None] | None  # None: described but not done (staging root)


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise InstallError(f"{' '.join(cmd)}: {last}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def plan(
    which: str,
    root: Path,
    uninstall: bool = False,
    purge: bool = False,
    venv: bool = True,
    start: bool = True,
    source: str | None = None,
) -> list[Step]:
    spec = SERVICES[which]
    live = root.resolve() == Path("/")
    opt = root / "opt" / "sleepsafe"
    etc = root / "etc" / "sleepsafe"
    unit_dst = root / "etc" / "systemd" / "system" / spec.unit
    unit_src = UNITS_DIR / spec.unit
    steps: list[Step] = []

    def sysonly(text: str, fn: Callable[[], None]) -> None:
        steps.append(Step(text if live else f"{text}  [skipped: staging root]", fn if live else None))

    if uninstall:
        sysonly(
            f"systemctl disable --now {spec.unit}", lambda: _run("systemctl", "disable", "--now", spec.unit)
        )
        steps.append(Step(f"remove {unit_dst}", lambda: unit_dst.unlink(missing_ok=True)))
        sysonly("systemctl daemon-reload", lambda: _run("systemctl", "daemon-reload"))
        steps.append(Step(f"remove {opt / 'venv'}", lambda: shutil.rmtree(opt / "venv", ignore_errors=True)))
        if purge:
            steps.append(Step(f"remove {etc}", lambda: shutil.rmtree(etc, ignore_errors=True)))
            state = root / "var" / "lib" / spec.unit.removesuffix(".service")
            steps.append(Step(f"remove {state}", lambda: shutil.rmtree(state, ignore_errors=True)))
            sysonly(
                f"userdel {spec.user}",
                lambda: _run("userdel", spec.user) if _user_exists(spec.user) else None,
            )
        else:
            steps.append(
                Step(f"keep {etc} (config, credentials) and the state directory: --purge removes them", None)
            )
        return steps

    if not unit_src.is_file():
        raise InstallError(f"unit file {unit_src} not found (run from a checkout of the project)")
    sysonly(
        f"create system user {spec.user} (if missing)",
        lambda: (
            None
            if _user_exists(spec.user)
            else _run(
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                spec.user,
            )
        ),
    )
    if venv:
        what = (source or (str(REPO) if (REPO / "pyproject.toml").is_file() else "sleepsafe")) + spec.extras

        def make_venv() -> None:
            _run(sys.executable, "-m", "venv", str(opt / "venv"))
            _run(str(opt / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", what)

        steps.append(Step(f"create {opt / 'venv'} and pip install {what}", make_venv))
    if spec.config_name:
        cfg = etc / spec.config_name

        def write_config() -> None:
            if cfg.exists():
                return
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(_template(cfg.name))
            cfg.chmod(0o640)
            if live:  # /etc/sleepsafe stays root's (ConfigurationDirectory=); the service reads by group
                shutil.chown(cfg, group=spec.user)

        exists = cfg.exists()
        steps.append(
            Step(
                f"keep existing {cfg}" if exists else f"write {cfg} from the commented template",
                None if exists else write_config,
            )
        )
    creds = etc / "credentials"
    for name in spec.credentials:

        def write_cred(path: Path = creds / name) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            if not path.exists():
                path.touch(mode=0o600)

        steps.append(Step(f"create {creds / name} (0600, empty; LoadCredential= needs it)", write_cred))

    def copy_unit() -> None:
        unit_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(unit_src, unit_dst)
        unit_dst.chmod(0o644)

    steps.append(Step(f"install {unit_src.name} to {unit_dst}", copy_unit))
    sysonly("systemctl daemon-reload", lambda: _run("systemctl", "daemon-reload"))
    if start:
        sysonly(
            f"systemctl enable --now {spec.unit}", lambda: _run("systemctl", "enable", "--now", spec.unit)
        )
    else:
        sysonly(f"systemctl enable {spec.unit}", lambda: _run("systemctl", "enable", spec.unit))
    return steps


def main(
    which: str,
    root: Path,
    dry_run: bool,
    uninstall: bool,
    purge: bool,
    venv: bool,
    start: bool,
    out: Callable[[str], None] = print,
) -> int:
    live = root.resolve() == Path("/")
    if live and not dry_run and os.geteuid() != 0:
        raise InstallError("installing into / needs root (or use --root DIR, or --dry-run)")
    steps = plan(which, root, uninstall=uninstall, purge=purge, venv=venv, start=start)
    verb = "would" if dry_run else "will"
    out(f"{'uninstall' if uninstall else 'install'} {SERVICES[which].unit} into {root} — it {verb}:")
    for i, step in enumerate(steps, 1):
        out(f"  {i}. {step.text}")
        if not dry_run and step.action is not None:
            step.action()
    out("dry run: nothing changed" if dry_run else "done")
    return 0
