"""Who is calling: the identity a daemon shared by users who do not trust each other keys every mark,
label, attribute name, save and query by.

- **Unix socket**: gRPC's Unix peers carry no credentials, so a local client first registers on the
  ring socket beside it (``<socket>.ring``, daemon/rings.py): the kernel says its uid and pid
  (SO_PEERCRED) and the daemon hands it a random session id, which its gRPC calls carry as metadata.
  The owner is ``uid:<uid>``.
- **TCP**: the bearer token's name (``--token-file`` lists ``NAME TOKEN`` lines; a file of one bare
  token names its holder ``token``) as ``token:<name>``, or with ``--tls-client-ca`` the client
  certificate's common name as ``cert:<CN>``.
- A call that shows none of these (a raw gRPC stub on the socket) is ``unverified``: a namespace of
  its own, which every such caller shares.

Admins (root, the daemon's own user, members of ``--admin-group``, a token marked ``admin``) see
every owner's marks, with the owner as a column; everyone else sees their own.
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import os
import pwd
import threading
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError

SESSION_KEY = "greenprobe-session"  # gRPC metadata: the session id a client's registration gave it
UNVERIFIED = "unverified"


def uid_owner(uid: int) -> str:
    """A local user's owner name, as marks, shares and views key it: uid:1000."""
    return f"uid:{uid}"


@dataclass(frozen=True)
class Caller:
    """The identity of one call."""
    owner: str                 # uid:1000, token:alice, cert:CN or unverified
    admin: bool = False        # sees every owner's marks
    uid: Optional[int] = None  # the kernel's, for a local client
    pid: Optional[int] = None  # the kernel's pid of the process that registered the session

    @property
    def folder(self) -> str:
        """The owner as a folder name under the save folder: uid-1000, token-alice."""
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.owner.replace(":", "-"))[:128]


@dataclass(frozen=True)
class Token:
    name: str
    secret: str
    admin: bool
    shared: bool = False  # the one bare token of a file: a shared secret, not a person


def parse_tokens(text: str, where: str) -> list[Token]:
    """The tokens of a --token-file: one bare token (its holder is ``token``, an admin, as one shared
    secret always was), or lines ``NAME TOKEN`` or ``NAME TOKEN admin`` (``#`` comments)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1 and len(lines[0]) == 1:
        return [Token("token", lines[0][0], True, shared=True)]
    out: list[Token] = []
    for k, parts in enumerate(lines, 1):
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
            raise ConfigError(f"{where}: line {k} is not NAME TOKEN or NAME TOKEN admin",
                              "write one token per line, each with a name, e.g. `alice 3f9c...`")
        name = parts[0]
        if not all(c.isalnum() or c in "._-" for c in name) or len(name) > 64:
            raise ConfigError(f"{where}: token name {name[:40]!r} has characters other than letters, digits, '.', "
                              "'_' and '-'", "name each token with at most 64 such characters")
        out.append(Token(name, parts[1], len(parts) == 3))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a token name appears twice", "give each token its own name")
    if len({t.secret for t in out}) != len(out):
        raise ConfigError(f"{where}: two names share one token", "give each name its own token")
    return out


def _digest(authorization: Optional[str]) -> bytes:
    return hashlib.sha256((authorization or "").encode(errors="replace")).digest()


class Tokens:
    """The tokens a TCP listener takes, each with its holder's name; compared in constant time
    (digests of equal length, every token tried, so neither the length nor the match leaks)."""

    def __init__(self, tokens: list[Token]):
        self.tokens = [(_digest(f"Bearer {t.secret}"), t) for t in tokens]

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def holder(self, authorization: Optional[str]) -> Optional[Token]:
        got = _digest(authorization)
        found = None
        for want, t in self.tokens:
            if hmac.compare_digest(want, got):
                found = t
        return found


class Identities:
    """Resolves a gRPC call to its Caller."""

    def __init__(self, sessions: Optional[dict] = None, tokens: Optional[Tokens] = None,
                 admin_gid: Optional[int] = None):
        self.sessions = sessions if sessions is not None else {}  # session id -> (pid, uid), daemon/rings.py
        self.tokens = tokens or Tokens([])
        self.admin_gid = admin_gid
        self._admins: dict[int, bool] = {}
        self._lock = threading.Lock()

    def is_admin_uid(self, uid: int) -> bool:
        if uid in (0, os.geteuid()):
            return True
        if self.admin_gid is None:
            return False
        with self._lock:
            known = self._admins.get(uid)
        if known is None:
            try:
                pw = pwd.getpwuid(uid)
                known = self.admin_gid in os.getgrouplist(pw.pw_name, pw.pw_gid)
            except KeyError:  # a uid without a passwd entry: its groups are unknown
                known = False
            with self._lock:
                self._admins[uid] = known
        return known

    def of(self, context) -> Caller:
        meta = dict(context.invocation_metadata() or ())
        peer = context.peer() or ""
        if peer.startswith("unix:"):
            who = self.sessions.get(meta.get(SESSION_KEY, ""))
            if who is None:
                return Caller(UNVERIFIED)
            pid, uid = who
            return Caller(uid_owner(uid), self.is_admin_uid(uid), uid, pid)
        holder = self.tokens.holder(meta.get("authorization"))
        if holder is not None and not holder.shared:
            return Caller(f"token:{holder.name}", holder.admin)
        cn = (context.auth_context() or {}).get("x509_common_name")
        if cn:  # one shared token, and a certificate per client: the certificate names the person
            return Caller(f"cert:{cn[0].decode(errors='replace')}")
        if holder is not None:
            return Caller(f"token:{holder.name}", holder.admin)
        return Caller(UNVERIFIED)


def resolve_group(group: Optional[str], flag: str = "--group") -> Optional[int]:
    """A group name or number (of ``flag``) as a gid."""
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"no group {group!r} ({flag})",
                          f"create it (groupadd {group}) or name an existing one") from None
