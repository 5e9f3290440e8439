"""`greenprobe daemon`: one Probe served over gRPC to many client processes.

    access.py    who may connect and where the daemon may write (one policy for every listener)
    limits.py    what one client may ask: batch, marks held, attribute names and values, streams
    servicer.py  the request handlers
    server.py    the listeners (Unix socket; TCP with a token, TLS off loopback) and `run`, the CLI entry
    dedupe.py    marks resent after a lost reply count once

By default a Unix socket with mode 0660 (owner and ``--group``): high-rate energy data is a side
channel (CVE-2020-8694, PLATYPUS), so the daemon, which has the rights to read it, serves it only
to users you chose.
"""

from .limits import MAX_BATCH, Limits
from .server import Daemon, default_socket, run
from .servicer import Servicer

__all__ = ["Daemon", "Limits", "MAX_BATCH", "Servicer", "default_socket", "run"]
