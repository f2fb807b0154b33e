"""Targets: what to request. Parsed once, encoded once into the bytes sent per hit.

Formats follow Vegeta's: ``http`` (a ``METHOD URL`` line, header lines, an optional
``@body-file`` line, targets separated by blank lines, ``#`` comments) and ``json``
(one object per line: ``method``, ``url``, ``header`` as name -> list of values,
``body`` base64).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tippingpoint import __version__
from tippingpoint.schemes import SCHEMES, scheme_list

__all__ = ["Origin", "Target", "TargetError", "encode_request", "parse_targets"]

USER_AGENT = f"tippingpoint/{__version__}"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class TargetError(ValueError):
    """A target that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return SCHEMES[self.scheme].tls

    @property
    def mqtt(self) -> bool:
        return SCHEMES[self.scheme].app == "mqtt"

    @property
    def websocket(self) -> bool:
        return SCHEMES[self.scheme].websocket

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Target:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    origin: Origin = field(init=False)
    path: str = field(init=False)
    host_header: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        scheme = SCHEMES.get(parts.scheme)
        if scheme is None or not parts.hostname:
            raise TargetError(f"bad URL {self.url!r}: use {scheme_list()}")
        try:
            port = parts.port or scheme.default_port
        except ValueError:
            raise TargetError(f"bad port in URL {self.url!r}") from None
        if not self.method or not self.method.isascii() or " " in self.method:
            raise TargetError(f"bad method {self.method!r}")
        object.__setattr__(self, "origin", Origin(parts.scheme, parts.hostname, port))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        object.__setattr__(self, "path", path)
        default = scheme.default_port
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        object.__setattr__(self, "host_header", host if port == default else f"{host}:{port}")


def encode_request(target: Target, keep_alive: bool = True) -> bytes:
    """The request bytes for ``target``: HTTP/1.1, Host, User-Agent, framing, headers."""
    names = {name.lower() for name, _ in target.headers}
    lines = [f"{target.method} {target.path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {target.host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines.extend(f"{name}: {value}" for name, value in target.headers)
    if (target.body or target.method in _BODY_METHODS) and "content-length" not in names:
        lines.append(f"Content-Length: {len(target.body)}")
    if not keep_alive and "connection" not in names:
        lines.append("Connection: close")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise TargetError(f"non-latin-1 text in the request for {target.url}") from None
    return head + target.body


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or " " in name:
        raise TargetError(f"bad header {text!r}: use 'Name: value'")
    return name, value.strip()


def _read_body(ref: str, base: Path | None) -> bytes:
    path = Path(ref)
    if base is not None and not path.is_absolute() and not path.exists():
        path = base / path
    try:
        return path.read_bytes()
    except OSError as e:
        raise TargetError(f"cannot read body file {ref!r}: {e.strerror}") from None


def parse_targets(
    text: str,
    fmt: str = "http",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    base: Path | None = None,
    name: str = "targets",
) -> list[Target]:
    """Targets from a targets file's text; ``headers``/``body`` are the command line's
    defaults (a target's own headers come after them, its own body replaces it). An
    error names the file (``name``) and the line: ``targets.txt:3: bad header ...``."""
    if fmt == "json":
        return _parse_json(text, headers, body, name)
    if fmt != "http":
        raise TargetError(f"unknown targets format {fmt!r}: use http or json")
    targets: list[Target] = []
    block: list[tuple[int, str]] = []
    for number, raw in enumerate([*text.splitlines(), ""], start=1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line:
            block.append((number, line))
            continue
        if block:
            targets.append(_block_target(block, headers, body, base, name))
            block = []
    if not targets:
        raise TargetError(
            f"{name}: no targets: give a URL or a targets file with 'METHOD URL' lines"
        )
    return targets


def _block_target(
    block: list[tuple[int, str]],
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    base: Path | None,
    name: str,
) -> Target:
    """One target of the http format: ``METHOD URL``, then headers and ``@body``."""
    where, first = block[0]
    method, _, url = first.partition(" ")
    if not url.strip():
        raise TargetError(f"{name}:{where}: expected 'METHOD URL', got {first[:60]!r}")
    own: list[tuple[str, str]] = []
    own_body = body
    for number, extra in block[1:]:
        try:
            if extra.startswith("@"):
                own_body = _read_body(extra[1:].strip(), base)
            else:
                own.append(parse_header(extra))
        except TargetError as e:
            raise TargetError(f"{name}:{number}: {e}") from None
    try:
        return Target(method.upper(), url.strip(), (*headers, *own), own_body)
    except TargetError as e:
        raise TargetError(f"{name}:{where}: {e}") from None


def _parse_json(
    text: str, headers: tuple[tuple[str, str], ...], body: bytes, name: str
) -> list[Target]:
    targets = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            own = tuple(
                (name, str(value))
                for name, values in (obj.get("header") or {}).items()
                for value in (values if isinstance(values, list) else [values])
            )
            own_body = base64.b64decode(obj["body"], validate=True) if obj.get("body") else body
            targets.append(
                Target(
                    str(obj.get("method", "GET")).upper(), obj["url"], (*headers, *own), own_body
                )
            )
        except KeyError as e:
            raise TargetError(f"{name}:{number}: a JSON target needs {e}") from None
        except TargetError as e:
            raise TargetError(f"{name}:{number}: {e}") from None
        except (json.JSONDecodeError, AttributeError, TypeError, binascii.Error) as e:
            raise TargetError(f"{name}:{number}: bad JSON target ({e})") from None
    if not targets:
        raise TargetError(f"{name}: no targets in the JSON targets file")
    return targets
