"""Serving a service with uvicorn, the same way for all three services.

One place decides what the HTTP server does before our app sees a request:

* uvicorn's own access log stays off: it writes the raw target with its query string (a
  token passed as ``?token=`` would land in the log). :class:`RequestContextMiddleware`
  logs one line per request, path only, with the request id.
* Connections that never finish their request headers are closed after
  ``header_timeout_seconds`` (uvicorn has no such timeout: its keep-alive timer only runs
  between requests, so a client sending a header byte by byte would hold a connection
  and its buffers forever). Idle keep-alive connections close after
  ``keep_alive_seconds``.
* Header blocks are capped (h11's incomplete-event limit), so a client cannot make the
  server buffer an unbounded header.
* With a certificate and key the service speaks HTTPS; with a client CA it asks for (or
  requires) client certificates and hands the verified one to the app as the ASGI TLS
  extension (``scope["extensions"]["tls"]["client_cert_chain"]``), which uvicorn itself
  does not fill in. The hub binds node tokens to these certificates.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 64 * 1024
"""Far above any legitimate header block here (a bearer JWT is a few KB)."""


class HeaderTimeoutProtocol(H11Protocol):
    """h11 protocol that closes a connection whose request headers arrive too slowly.

    A timer runs from the first byte of each request (and from the connection's opening)
    until the request line and headers are complete.
    """

    header_timeout_seconds: float = 15.0
    _header_timer: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("ssl_object")
        der = peer.getpeercert(binary_form=True) if peer is not None else None
        if der:
            self.app = _with_client_cert(self.app, ssl.DER_cert_to_PEM_cert(der))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # request line and headers are complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        self.logger.info(
            "closed a connection whose request headers did not arrive within %.0f s",
            self.header_timeout_seconds,
        )
        self.transport.close()


def _with_client_cert(app: Any, pem: str) -> Any:
    """``app`` with the connection's verified client certificate in every request scope."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        extensions = scope.setdefault("extensions", {})
        extensions["tls"] = {**extensions.get("tls", {}), "client_cert_chain": [pem]}
        await app(scope, receive, send)

    return wrapped


def client_cert_pem(scope: Any) -> str | None:
    """The verified client certificate (PEM) of this request's connection, if any."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    return chain[0] if chain else None


class TlsConfigError(ValueError):
    """The certificate, key or CA files cannot be used; the message names the file."""


@dataclass(frozen=True)
class ServerTls:
    """HTTPS for a service: its certificate and key, and optionally a client CA.

    With ``client_ca`` the TLS handshake asks clients for a certificate signed by that CA;
    ``require_client_cert`` makes one mandatory (the hub under mutual TLS), otherwise a
    client without one still connects and the app decides (probes, admins).
    """

    certfile: Path
    keyfile: Path
    client_ca: Path | None = None
    require_client_cert: bool = False

    def check(self) -> None:
        """Load the files once, so a bad one stops the start with a clear message."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except FileNotFoundError as exc:
            raise TlsConfigError(f"TLS certificate or key file not found: {exc.filename}") from exc
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"cannot use the TLS certificate {self.certfile} with key {self.keyfile}: {exc}"
            ) from exc
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (ssl.SSLError, OSError) as exc:
                raise TlsConfigError(f"cannot use the client CA {self.client_ca}: {exc}") from exc

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ssl_certfile": str(self.certfile),
            "ssl_keyfile": str(self.keyfile),
        }
        if self.client_ca is not None:
            options["ssl_ca_certs"] = str(self.client_ca)
            options["ssl_cert_reqs"] = (
                ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
            )
        return options


def server_tls(
    certfile: Path | None, keyfile: Path | None, client_ca: Path | None = None, **kwargs: Any
) -> ServerTls | None:
    """The TLS set-up for these settings, None for plain HTTP; both files or neither."""
    if certfile is None and keyfile is None:
        if client_ca is not None:
            raise TlsConfigError("a client CA needs HTTPS: set the certificate and key as well")
        return None
    if certfile is None or keyfile is None:
        raise TlsConfigError("HTTPS needs both a certificate file and a key file")
    tls = ServerTls(Path(certfile), Path(keyfile), Path(client_ca) if client_ca else None, **kwargs)
    tls.check()
    return tls


def client_tls(
    ca_bundle: Path | None, certfile: Path | None = None, keyfile: Path | None = None
) -> ssl.SSLContext | bool:
    """TLS of an outgoing connection (to the hub): verify against ``ca_bundle`` (or the
    system store) and present a client certificate when one is configured."""
    if ca_bundle is None and certfile is None:
        return True  # httpx's default: the system's CAs
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot use the CA bundle {ca_bundle}: {exc}") from exc
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"cannot use the client certificate {certfile} with key {keyfile}: {exc}"
            ) from exc
    return context


@dataclass(frozen=True)
class ServerLimits:
    """Timeouts and caps of the HTTP server, below the app."""

    header_timeout_seconds: float = 15.0
    keep_alive_seconds: float = 5.0
    max_header_bytes: int = MAX_HEADER_BYTES

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that apply these limits."""
        protocol = type(
            "HeaderTimeoutProtocol",
            (HeaderTimeoutProtocol,),
            {"header_timeout_seconds": self.header_timeout_seconds},
        )
        return {
            "http": protocol,
            "timeout_keep_alive": self.keep_alive_seconds,
            "h11_max_incomplete_event_size": self.max_header_bytes,
            "access_log": False,
            "log_config": None,
        }


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    tls: ServerTls | None = None,
    limits: ServerLimits | None = None,
    **extra: Any,
) -> None:
    """Run ``app`` (an ASGI app, or an import string with ``factory=True`` in ``extra``),
    over HTTPS when ``tls`` is given."""
    import uvicorn

    options = (limits or ServerLimits()).uvicorn_options()
    if tls is not None:
        options |= tls.uvicorn_options()
    uvicorn.run(app, host=host, port=port, **options, **extra)
