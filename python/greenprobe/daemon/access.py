"""Who may reach the daemon and where it may write: one policy for every listener.

High-rate energy readings are a side channel (CVE-2020-8694, PLATYPUS), which is why the kernel made
RAPL root-only; a daemon that holds that right must hand the data only to users it was told to trust.

- **Unix socket**: the kernel checks the socket file (0660: the daemon's user and ``--group``). Its
  folder must belong to the daemon's user and be writable by nobody else, so no one can swap the
  socket; the per-user default folder must be 0700.
- **TCP, loopback included** (a port is open to every local user, whatever ``--group`` says) and the
  **Prometheus endpoint**: a bearer token, compared in constant time. Off loopback only with
  ``--allow-remote``, and then only over TLS, so the token never crosses a network in clear.
- **Tokens** come from ``$GREENPROBE_TOKEN`` or ``--token-file``, never the command line (every user
  sees it in ``ps``), and are never logged.
- **Files**: the daemon creates with umask 027 (files 0640, folders 0750) in setgid folders of the
  socket's group. ``Save`` writes only under ``--save-dir``: a client names a folder relative to it,
  walked one component at a time from an open folder with ``O_NOFOLLOW``, each temporary file
  created with ``O_EXCL``.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import socket
import stat
from pathlib import Path
from typing import Optional

import grpc

from ..addresses import is_loopback
from ..errors import ConfigError
from .identity import Token, Tokens, parse_tokens, resolve_group  # noqa: F401 - resolve_group: the listeners'

TOKEN_ENV = "GREENPROBE_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE = 64 << 10
UMASK = 0o027


class Refused(Exception):
    """A client's request that the policy refuses; the text is safe to send back."""


# -- tokens --------------------------------------------------------------------------------------
def load_tokens(token_file: Optional[str]) -> Optional[Tokens]:
    """The tokens of ``token_file`` (a regular file of this user that no one else may read or
    write, opened once without following links: one bare token, or ``NAME TOKEN [admin]`` lines,
    identity.parse_tokens) or the one of $GREENPROBE_TOKEN; None without either."""
    if token_file:
        path = Path(token_file)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise ConfigError(f"cannot read --token-file {path}: {e.strerror}",
                              "give the path of a plain file (not a link) that holds the token") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"--token-file {path} is not a regular file", "point it at a plain file")
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise ConfigError(f"--token-file {path} is not this user's alone (owner uid {st.st_uid}, mode "
                                  f"{stat.S_IMODE(st.st_mode):04o})", f"chown $(id -u) {path}; chmod 600 {path}")
            raw = os.read(fd, MAX_TOKEN_FILE + 1)
        finally:
            os.close(fd)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"--token-file {path} is not UTF-8 text", "write the token as text") from None
        if not text.strip() or len(raw) > MAX_TOKEN_FILE:
            raise ConfigError(f"--token-file {path} is empty or longer than {MAX_TOKEN_FILE >> 10} KiB",
                              "write one token, or one NAME TOKEN line per user, into it")
        tokens = parse_tokens(text, f"--token-file {path}")
    else:
        raw_env = os.environ.get(TOKEN_ENV, "").strip()
        tokens = [Token("token", raw_env, True, shared=True)] if raw_env else []
    for t in tokens:
        if len(t.secret) < MIN_TOKEN_CHARS:
            who = "the token" if t.shared else f"the token of {t.name}"
            raise ConfigError(f"{who} has {len(t.secret)} characters: too short to resist guessing",
                              f"use at least {MIN_TOKEN_CHARS}, e.g. `export {TOKEN_ENV}=$(openssl rand -hex 24)`")
    return Tokens(tokens) if tokens else None


def as_tokens(token) -> Optional[Tokens]:
    """A listener's tokens from what its caller has: Tokens, one token's text (a shared secret, its
    holder an admin), or None."""
    if token is None or isinstance(token, Tokens):
        return token
    return Tokens([Token("token", token, True, shared=True)])


class TokenCheck(grpc.ServerInterceptor):
    """Refuses every call on the server it guards that lacks ``authorization: Bearer TOKEN`` with one
    of its tokens."""

    def __init__(self, tokens: Tokens):
        self.tokens = tokens

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong token (set {TOKEN_ENV})")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        meta = dict(details.invocation_metadata or ())
        if self.tokens.holder(meta.get("authorization")) is None:
            return self._deny
        return continuation(details)


# -- listeners -----------------------------------------------------------------------------------
def check_tcp(what: str, host: str, allow_remote: bool, token: Optional[str], tls: bool) -> None:
    """The rule for a TCP listener (gRPC --listen or --prometheus-addr); raises ConfigError with the fix."""
    if not token:
        raise ConfigError(f"{what} on TCP needs a token: a port, loopback included, serves every local user "
                          "whatever --group says",
                          f"export {TOKEN_ENV}=$(openssl rand -hex 24) (or --token-file FILE) before starting the "
                          "daemon; clients send the same token")
    if is_loopback(host):
        return
    if not allow_remote:
        raise ConfigError(f"{what} on {host} is not a loopback address",
                          "bind loopback (127.0.0.1); energy data is a side channel (CVE-2020-8694), so add "
                          "--allow-remote (with TLS) only if remote readers are intended")
    if not tls:
        raise ConfigError(f"{what} off loopback needs TLS: the token would cross the network in clear",
                          "pass --tls-cert CERT.pem --tls-key KEY.pem (and --tls-client-ca CA.pem for client "
                          "certificates); clients trust the CA through GREENPROBE_TLS_CA")


def tls_files(cert: Optional[str], key: Optional[str], client_ca: Optional[str]) -> Optional[tuple]:
    """(key PEM, cert PEM, client CA PEM or None) or None without --tls-cert; ConfigError with the fix."""
    if not cert and not key:
        if client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key", "pass the server's certificate and key")
        return None
    if not (cert and key):
        raise ConfigError("--tls-cert and --tls-key go together", "pass both: the certificate and its private key")
    out = []
    for flag, path in (("--tls-key", key), ("--tls-cert", cert), ("--tls-client-ca", client_ca)):
        if path is None:
            out.append(None)
            continue
        try:
            out.append(Path(path).read_bytes())
        except OSError as e:
            raise ConfigError(f"cannot read {flag} {path}: {e.strerror}", f"check the path given to {flag}") from None
    return tuple(out)


def grpc_tls_credentials(pems: tuple):
    key, cert, client_ca = pems
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


# -- the socket and its folder -------------------------------------------------------------------
def prepare_socket_dir(folder: Path, gid: Optional[int], private: bool) -> None:
    """Makes ``folder`` (0700, or 0710 with the socket's group so members can reach the socket) or
    checks the one that is there: a real folder of this user (or root's) that nobody else can write
    to, in folders nobody else can write to either; ``private`` (the per-user default) must be
    exactly that user's and closed to everyone."""
    uid = os.geteuid()
    check_trusted_parents(folder, "the socket's folder")
    where = f"the socket's folder {folder}"
    try:
        fd, st = own_folder(folder, 0o700, gid, 0o710)
    except NotAFolder as e:
        raise ConfigError(f"{where} is not a folder ({e})",
                          "remove it, or give --socket a path in a folder of your own") from None
    os.close(fd)
    mode = stat.S_IMODE(st.st_mode)
    closed = 0o077 if gid is None else 0o067  # with a group, its members may pass through (x), nothing else
    if private and (st.st_uid != uid or mode & closed):
        raise ConfigError(f"{where} belongs to uid {st.st_uid} with mode {mode:04o}: someone else could swap "
                          "the socket", f"remove {folder} (the daemon makes it again, 0700), or set XDG_RUNTIME_DIR")
    if st.st_uid not in (uid, 0):
        raise ConfigError(f"{where} belongs to uid {st.st_uid}, not this user", "use a folder of your own")
    if mode & 0o022:  # sticky or not: in /tmp anyone may bind the name before the daemon or after it
        raise ConfigError(f"{where} is writable by others (mode {mode:04o}): they could swap the socket",
                          f"chmod go-w {folder}, or use a folder of your own")


def check_trusted_parents(path: Path, what: str) -> None:
    """Every folder above ``path`` (as given and with links resolved) belongs to root or this user
    and is writable by no one else, or is a root-owned sticky folder such as /tmp, where no one
    may rename or replace another's entries; otherwise another user could swap a folder on the way
    and point the daemon's writes anywhere."""
    uid = os.geteuid()
    for chain in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for parent in chain.parents:
            try:
                st = os.stat(parent)
            except FileNotFoundError:
                continue  # made by the daemon, below a checked folder
            mode = stat.S_IMODE(st.st_mode)
            sticky_root = st.st_uid == 0 and mode & stat.S_ISVTX
            if st.st_uid not in (0, uid) or (mode & 0o022 and not sticky_root):
                raise ConfigError(f"{what} {path} lies in {parent}, which uid {st.st_uid} owns or others may write "
                                  f"to (mode {mode:04o}): they could swap a folder on the way",
                                  "use a path whose every folder belongs to root or this user and is not writable "
                                  "by others (e.g. under /var/lib or /run)")


class NotAFolder(Exception):
    """A name that is a link or a file where a folder should be (the text: why, from the kernel)."""


def own_folder(name, mode: int, gid: Optional[int], group_mode: int, dir_fd: Optional[int] = None):
    """Makes the folder ``name`` (``mode``; its missing parents 0755, unless ``dir_fd`` is given) and
    opens it without following a link: (descriptor, its stat). A folder this call made gets the
    socket's group and ``group_mode`` through the descriptor, never by name, so nothing swapped in
    between is touched; one that was there is left as it is. NotAFolder for a link or a file."""
    if dir_fd is None:
        for parent in reversed(Path(name).parents):
            if not parent.exists():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parent, 0o755)
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        made = True
    except FileExistsError:
        made = False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as e:  # ELOOP: a link; ENOTDIR: a file
        raise NotAFolder(e.strerror) from None
    try:
        if made and gid is not None:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, group_mode)
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def prepare_socket_path(path: Path) -> None:
    """Removes a stale socket; refuses a live one and anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket: the daemon will not replace it",
                          "give --socket a path of its own")
    if socket_in_use(path):
        raise ConfigError(f"a daemon already serves {path}", "stop it, or give this one another --socket")
    os.unlink(path)


def socket_in_use(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)  # a full backlog must not hang the start
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- files ---------------------------------------------------------------------------------------
def make_output_dir(path: Path, gid: Optional[int]) -> int:
    """An output folder the daemon writes into, opened (the descriptor is returned: later writes go
    through it, not through a name someone could swap): made 0750 and setgid to the socket's group
    (so its files, 0640 under umask 027, are the group's); one that exists must be this user's,
    writable by nobody else, and is left as it is. Its parents must be trusted
    (``check_trusted_parents``)."""
    check_trusted_parents(path, "output folder")
    try:
        fd, st = own_folder(path, 0o750, gid, 0o2750)
    except NotAFolder as e:
        raise ConfigError(f"{path} is not a folder ({e})", "give an output folder of your own") from None
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not this user", "give an output folder of your own")
    if stat.S_IMODE(st.st_mode) & 0o022:
        os.close(fd)
        raise ConfigError(f"{path} is writable by others: they could plant links there", f"chmod go-w {path}")
    return fd


NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_DEPTH = 8


class SaveRoot:
    """The one folder Save writes under. A client names a folder in it (``run1``, ``a/b``); the
    daemon walks there from an open folder, component by component, with ``O_NOFOLLOW``, making
    what is missing (0750, the socket's group) and refusing any link or folder not its own."""

    def __init__(self, root: Path, gid: Optional[int], max_bytes: int = 0):
        self.root = Path(os.path.abspath(root))
        self.fd = make_output_dir(self.root, gid)  # held: the root is reached through it, never by name again
        self.gid = gid
        self.max_bytes = max_bytes  # 0: no cap

    def used_bytes(self) -> int:
        """The disk space the files under the root take (links not followed)."""
        return bytes_under(".", self.fd)

    def check_room(self) -> None:
        """Refused when the root already holds --save-max-bytes: clients' saves cannot fill the disk."""
        if not self.max_bytes:
            return
        used = self.used_bytes()
        if used >= self.max_bytes:
            raise Refused(f"the save folder {self.root} holds {size_text(used)}, the daemon's limit "
                          f"(--save-max-bytes {size_text(self.max_bytes)}): remove old saves, raise the limit, "
                          "or save on the client with save_local()")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def parts(self, name: str) -> list[str]:
        """The components of a client's folder name; Refused with why."""
        if name.startswith("/"):  # an absolute name is accepted only inside the root, as it was given
            root = str(self.root)
            if not (name == root or name.startswith(root + "/")):
                raise Refused(f"{name} is outside the daemon's save folder {root}; name a folder inside it "
                              "(e.g. run1), or save on the client with save_local()")
            name = name[len(root):].lstrip("/")
        parts = [p for p in name.split("/") if p]
        if not parts:
            raise Refused("name a folder under the daemon's save folder (e.g. run1)")
        if len(parts) > MAX_DEPTH:
            raise Refused(f"at most {MAX_DEPTH} folder levels")
        for p in parts:
            if not NAME.fullmatch(p) or p in (".", ".."):
                raise Refused(f"{p[:40]!r} is not a folder name greenprobe accepts: letters, digits, '.', '_', '-', "
                              "at most 128, not starting with '.' or '-'")
        return parts

    def open(self, name: str, owner_folder: Optional[str] = None) -> tuple[int, Path]:
        """An open descriptor of the folder ``name`` under the root (made if missing), and its path;
        Refused if a link or someone else's folder is on the way. ``owner_folder``: the caller's own
        folder under the root (identity.Caller.folder), which ``name`` is then inside: one user's
        ``run1`` is never another's."""
        parts = self.parts(name)
        if owner_folder is not None:
            if parts[0] == owner_folder:  # named as the reply showed it
                parts = parts[1:] or parts
            parts = [owner_folder, *parts]
        fd = os.dup(self.fd)
        try:
            for p in parts:
                try:
                    nfd, st = own_folder(p, 0o750, self.gid, 0o2750, dir_fd=fd)
                except NotAFolder as e:
                    raise Refused(f"{p!r} under the save folder is not a folder the daemon made ({e})") from None
                os.close(fd)
                fd = nfd
                if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o022:
                    raise Refused(f"{p!r} under the save folder belongs to someone else or is writable by others")
            return fd, self.root.joinpath(*parts)
        except BaseException:
            os.close(fd)
            raise


def bytes_under(top=".", dir_fd: Optional[int] = None) -> int:
    """The disk space the files under ``top`` take (relative to the open folder ``dir_fd`` when
    given), links not followed."""
    used = 0
    for _, _, files, dfd in os.fwalk(top, dir_fd=dir_fd, follow_symlinks=False):
        for f in files:
            with contextlib.suppress(OSError):
                used += os.stat(f, dir_fd=dfd, follow_symlinks=False).st_blocks * 512
    return used


def size_text(n: int) -> str:
    """Bytes in words: 512 B, 64 KiB, 1.5 MiB, 20 GiB."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"
