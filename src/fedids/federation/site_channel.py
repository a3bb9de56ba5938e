"""The local channel between a site's two Flower processes: files in one 0700 folder on the site host.

A site aggregator of a three-tier deployment (:mod:`fedids.federation.site_app`) is two Flower apps on one
host: a ClientApp on the site's SuperNode toward the central SuperLink, started by that SuperNode once per
central message, and a long-lived ServerApp on the site's own SuperLink that holds the Grid of the site's
devices. Flower has no hierarchy (flwr #2212, #3926) and no channel between two runs, so the ClientApp hands
each central message to the ServerApp through this folder and waits for the answer.

Protocol: the ClientApp writes ``<id>.request`` (``id``: 32 random hex digits), the ServerApp reads and
removes it, and writes ``<id>.reply``, which the ClientApp reads and removes. Every file is written to a
temporary name and renamed into place (atomic on one file system), mode 0600, inside a 0700 folder. The
ServerApp stops when it finds ``stop``. A file holds one Flower ``RecordDict`` serialised with Flower's own
protobuf serde (``flwr.common.serde``), never pickle: the message type (and, in a reply, an error) travel
in one extra ``ConfigRecord``. Guarantees: only the site host's service user can read or write the folder;
what crosses it is exactly what the central server sent and what the site answers.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ConfigRecord, RecordDict

ENVELOPE = "fedids.site-envelope"  # ConfigRecord added to the content: message type, error
REQUEST, REPLY, STOP = ".request", ".reply", "stop"
POLL_S = 0.2
MAX_BYTES = 1 << 30  # a message larger than 1 GiB is refused (a sealed model is a few MB)


class ChannelError(RuntimeError):
    """The other side of the channel failed, answered with an error, or did not answer in time."""


@dataclass(frozen=True)
class Envelope:
    """One message through the channel: its Flower message type, content, and (replies) an error."""

    message_type: str
    content: RecordDict
    error: str = ""


def encode_envelope(envelope: Envelope) -> bytes:
    """Flower's protobuf of the content, with the envelope's fields in :data:`ENVELOPE`."""
    from flwr.common.serde import recorddict_to_proto

    if ENVELOPE in envelope.content:
        raise ValueError(f"content already holds a {ENVELOPE!r} record")
    content = RecordDict(dict(envelope.content.items()))
    content[ENVELOPE] = ConfigRecord({"message-type": envelope.message_type, "error": envelope.error})
    return recorddict_to_proto(content).SerializeToString()


def decode_envelope(data: bytes) -> Envelope:
    """The inverse of :func:`encode_envelope`; ValueError for bytes that are not an envelope."""
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
    from google.protobuf.message import DecodeError

    try:
        content = recorddict_from_proto(ProtoRecordDict.FromString(data))
    except (DecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"not a site channel message ({exc})") from None
    if ENVELOPE not in content.config_records:
        raise ValueError("not a site channel message (no envelope record)")
    header = content.config_records[ENVELOPE]
    del content[ENVELOPE]
    return Envelope(str(header["message-type"]), content, str(header.get("error", "")))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _read(path: Path) -> Envelope:
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path.name}: larger than {MAX_BYTES} bytes")
    return decode_envelope(path.read_bytes())


class SiteChannel:
    """The channel folder ``directory`` (created 0700; refused if others may read or write it)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = self.directory.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{self.directory}: mode {mode:o}, the site channel needs 0700")

    # ------------------------------------------------------------------ the ClientApp's side
    def request(self, envelope: Envelope, timeout_s: float) -> Envelope:
        """Hand ``envelope`` to the site's ServerApp and wait (at most ``timeout_s``) for its reply."""
        ident = secrets.token_hex(16)
        _write_atomic(self.directory / f"{ident}{REQUEST}", encode_envelope(envelope))
        reply = self.directory / f"{ident}{REPLY}"
        deadline = time.monotonic() + timeout_s
        while not reply.exists():
            if time.monotonic() > deadline:
                (self.directory / f"{ident}{REQUEST}").unlink(missing_ok=True)
                raise ChannelError(f"the site's ServerApp did not answer within {timeout_s:.0f} s")
            time.sleep(POLL_S)
        try:
            answer = _read(reply)
        finally:
            reply.unlink(missing_ok=True)
        if answer.error:
            raise ChannelError(f"site: {answer.error}")
        return answer

    # ------------------------------------------------------------------ the ServerApp's side
    def next_request(self, timeout_s: float) -> tuple[str, Envelope] | None:
        """The oldest pending request (its id and envelope, the file removed), or None after ``timeout_s``
        without one or once :data:`STOP` exists. An unreadable request is answered with an error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() <= deadline and not self.stopped:
            pending = sorted(self.directory.glob(f"*{REQUEST}"), key=lambda p: (p.stat().st_mtime, p.name))
            for path in pending:
                ident = path.name[: -len(REQUEST)]
                try:
                    envelope = _read(path)
                except (OSError, ValueError) as exc:
                    self.reply(ident, Envelope("", RecordDict(), f"unreadable request: {exc}"))
                    continue
                finally:
                    path.unlink(missing_ok=True)
                return ident, envelope
            time.sleep(POLL_S)
        return None

    def reply(self, ident: str, envelope: Envelope) -> None:
        _write_atomic(self.directory / f"{ident}{REPLY}", encode_envelope(envelope))

    @property
    def stopped(self) -> bool:
        return (self.directory / STOP).exists()


__all__ = ["ENVELOPE", "ChannelError", "Envelope", "SiteChannel", "decode_envelope", "encode_envelope"]
