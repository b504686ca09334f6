"""The exit codes of every SleepSafe command (sysexits.h), in one place: systemd's
``RestartPreventExitStatus=78`` keys on :attr:`Exit.CONFIG`, scripts on the rest."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    USAGE = 2  # argparse's
    DATAERR = 65  # nothing scorable, a refused model or checkpoint
    NOINPUT = 66  # a missing or unreadable input file
    UNAVAILABLE = 69  # a service or download could not be had
    SOFTWARE = 70  # an internal error: the sink's writer died
    OSERR = 71  # the OS refused: a port that could not be bound
    CANTCREAT = 73  # an output that could not be written
    CONFIG = 78  # bad configuration: one line naming the field, and systemd does not restart
