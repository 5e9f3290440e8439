"""``mark``, whichever this environment has: the C type of the compiled core (marks.py), else the
pure-Python one that sends to the daemon (client.PyMark, a client-only install). Modules take it
from here, never from the package's ``__init__``."""

try:
    from .marks import mark
except ImportError:  # no compiled core: a client
    from .client import PyMark as mark

__all__ = ["mark"]
