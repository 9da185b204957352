"""HTTPS for the REST API: a TLS front that hands plain HTTP to waitress on loopback.

waitress has no TLS, and wrapping its non-blocking sockets in `ssl` breaks on partial
records and large answers. So with SslEnabled the front owns HttpPort: it accepts a
connection, refuses remote peers unless RemoteAccessAllowed, does the TLS handshake
(SslCertificate holds the certificate and its key), then relays bytes to waitress, which
listens on an ephemeral loopback port. One thread per connection relays both directions
with select(), so an SSL object is only ever used by one thread. The client's real address
and port are kept by the relay's local port, and the HTTP layer asks `real_address` for them
before anything else looks at the request.

A relay thread is a slot: at most `RELAYS` at once, `per_address` of them for one address
(HttpConnectionsPerAddress), and the TLS handshake must be done within `header_timeout`
(HttpHeaderTimeout); other connections are closed at once (300 idle sockets were 300
threads). waitress, behind, keeps its header deadline for what the relay hands on.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
from collections import Counter
from typing import Any

from .limits import AddressWarnings

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
RELAYS = 200  # relay threads at most (waitress' connection_limit, behind)


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


class TlsFront:
    """Listens on (host, port) with TLS, relays to 127.0.0.1:backend_port."""

    def __init__(self, host: str, port: int, backend_port: int, certificate: str, *,
                 remote_allowed: bool, timeout: float, per_address: int = 0,
                 header_timeout: float = 0.0):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(certificate)
        self.backend_port = backend_port
        self.remote_allowed = remote_allowed
        self.timeout = timeout
        self.per_address = per_address
        self.header_timeout = header_timeout or timeout
        self.relays: Counter[str] = Counter()  # relay threads per client address
        self._relays_lock = threading.Lock()
        self.warnings = AddressWarnings(logger)
        self.peers: dict[int, tuple[str, int]] = {}  # relay's local port: client
        self.sock = socket.create_server((host, port), backlog=64)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tls", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def real_address(self, backend_peer_port: int) -> tuple[str, int] | None:
        return self.peers.get(backend_peer_port)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self.remote_allowed and not _loopback(addr[0]):
                conn.close()
                continue
            refused = self._take_slot(addr[0])
            if refused:
                self.warnings.warning(addr[0], "TLS connection from %s closed: %s", addr[0],
                                      refused)
                conn.close()
                continue
            try:
                threading.Thread(target=self._relay, args=(conn, addr[0], addr[1]),
                                 name="tls-relay", daemon=True).start()
            except RuntimeError:  # no thread to be had
                self._give_slot(addr[0])
                conn.close()

    def _take_slot(self, client: str) -> str:
        """Count a relay for `client`; or why not (then nothing is counted)."""
        with self._relays_lock:
            if sum(self.relays.values()) >= RELAYS:
                return f"{RELAYS} TLS connections are open"
            if self.per_address and self.relays[client] >= self.per_address:
                return f"it already holds {self.per_address} (HttpConnectionsPerAddress)"
            self.relays[client] += 1
            return ""

    def _give_slot(self, client: str) -> None:
        with self._relays_lock:
            self.relays[client] -= 1
            if self.relays[client] <= 0:
                del self.relays[client]

    def _relay(self, conn: socket.socket, client: str, client_port: int) -> None:
        try:
            self._relay_in_slot(conn, client, client_port)
        finally:
            self._give_slot(client)

    def _relay_in_slot(self, conn: socket.socket, client: str, client_port: int) -> None:
        conn.settimeout(self.header_timeout)  # the handshake's deadline (per read)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as e:
            logger.info("TLS handshake with %s failed: %s", client, e)
            conn.close()
            return
        tls.settimeout(self.timeout)
        port = 0
        backend: socket.socket | None = None
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
            backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = backend.getsockname()[1]
            self.peers[port] = (client, client_port)
            self._pump(tls, backend)
        except (OSError, ssl.SSLError) as e:
            logger.debug("TLS relay for %s ended: %s", client, e)
        finally:
            self.peers.pop(port, None)
            for sock in (tls, backend):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass

    def _pump(self, tls: ssl.SSLSocket, backend: socket.socket) -> None:
        while not self._stop.is_set():
            if tls.pending():
                ready: list[Any] = [tls]
            else:
                ready, _, _ = select.select([tls, backend], [], [], self.timeout)
                if not ready:
                    return  # idle for HttpRequestTimeout
            if tls in ready:
                data = tls.recv(CHUNK)
                if not data:
                    return
                backend.sendall(data)
            if backend in ready:
                data = backend.recv(CHUNK)
                if not data:
                    return
                tls.sendall(data)


# Set in a request's environment once its REMOTE_ADDR is the client's (see real_address).
_RESOLVED = "pipacs.tls_resolved"


def real_address(front: TlsFront | None, environ: dict[str, Any]) -> str:
    """The HTTP client's address, seen through the TLS front when there is one; the first
    call puts the client's address and port in REMOTE_ADDR and REMOTE_PORT, for every later
    reader of the request (the log, Python hooks, an instance's RemoteIP)."""
    remote = str(environ.get("REMOTE_ADDR", ""))
    if front is None or environ.get(_RESOLVED):
        return remote
    environ[_RESOLVED] = True
    if _loopback(remote):
        try:
            found = front.real_address(int(environ.get("REMOTE_PORT", 0)))
        except (TypeError, ValueError):
            found = None
        if found:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = found[0], str(found[1])
            return found[0]
    return remote
