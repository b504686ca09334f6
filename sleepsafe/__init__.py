"""What the vehicle and the fleet sink share: the MQTT protocol, the settings rules, exit codes,
logging, systemd notify, the service installer and its unit files. It imports neither end, so the
sink installs without the vision stack (a test over the import graph holds the direction)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sleepsafe")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
