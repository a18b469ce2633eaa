"""Files crossing the serial line in checksummed, resumable chunks.

Downloads (a snapshot): the unit keeps the bytes under a short id; the client asks for
`get ID OFFSET LENGTH` and receives a JSON header (offset, length, CRC-32, total size)
followed by exactly LENGTH raw bytes. A chunk that arrives short or with a wrong CRC is
simply asked for again, and a client that lost the line resumes at the first offset it
does not have; the whole file's SHA-256 is given up front.

Uploads (a signed bundle): `upload begin SIZE SHA256`, then `upload data ID OFFSET BASE64`
lines (text, so they pass the line reader like any command); `upload status ID` says how
much has arrived, which is where a resumed upload continues.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import time
import zlib
from dataclasses import dataclass, field

KEEP_S = 900.0
KEEP_DOWNLOADS = 4
MAX_UPLOAD_BYTES = 16 * 2**20
DEFAULT_CHUNK = 8192
MAX_CHUNK = 16384


class TransferError(ValueError):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass
class Download:
    data: bytes
    sha256: str
    created: float = field(default_factory=time.monotonic)


@dataclass
class Upload:
    size: int
    sha256: str
    data: bytearray = field(default_factory=bytearray)
    created: float = field(default_factory=time.monotonic)

    @property
    def complete(self) -> bool:
        return len(self.data) == self.size


class Transfers:
    def __init__(self) -> None:
        self.downloads: dict[str, Download] = {}
        self.uploads: dict[str, Upload] = {}
        self._ids = itertools.count(1)

    def _expire(self) -> None:
        now = time.monotonic()
        for table in (self.downloads, self.uploads):
            for key in [k for k, v in table.items() if now - v.created > KEEP_S]:
                del table[key]
        while len(self.downloads) > KEEP_DOWNLOADS:
            del self.downloads[next(iter(self.downloads))]

    def offer(self, data: bytes) -> tuple[str, Download]:
        self._expire()
        transfer_id = f"d{next(self._ids)}"
        item = Download(data, hashlib.sha256(data).hexdigest())
        self.downloads[transfer_id] = item
        return transfer_id, item

    def chunk(self, transfer_id: str, offset: int, length: int) -> tuple[dict, bytes]:
        item = self.downloads.get(transfer_id)
        if item is None:
            raise TransferError("unknown_transfer", f"no download {transfer_id!r} (expired after "
                                                    f"{KEEP_S / 60:.0f} min, or never made)")
        if not 0 <= offset <= len(item.data):
            raise TransferError("bad_offset", f"offset {offset} is outside 0-{len(item.data)}")
        length = max(1, min(length, MAX_CHUNK))
        data = item.data[offset:offset + length]
        return {"transfer": transfer_id, "offset": offset, "length": len(data), "total": len(item.data),
                "crc32": zlib.crc32(data), "sha256": item.sha256}, data

    def begin_upload(self, size: int, sha256: str) -> str:
        self._expire()
        if not 0 < size <= MAX_UPLOAD_BYTES:
            raise TransferError("bad_size", f"upload size {size} is outside 1-{MAX_UPLOAD_BYTES} bytes")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
            raise TransferError("bad_sha256", "the SHA-256 must be 64 hex digits")
        transfer_id = f"u{next(self._ids)}"
        self.uploads[transfer_id] = Upload(size, sha256.lower())
        return transfer_id

    def upload_data(self, transfer_id: str, offset: int, b64: str) -> Upload:
        item = self._upload(transfer_id)
        if offset != len(item.data):
            raise TransferError("bad_offset", f"upload {transfer_id} continues at offset {len(item.data)}, "
                                              f"not {offset}")
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise TransferError("bad_chunk", "chunk is not valid base64 (damaged on the line?); send it again") \
                from None
        if len(item.data) + len(data) > item.size:
            raise TransferError("too_long", f"upload {transfer_id} would exceed its {item.size} bytes")
        item.data += data
        return item

    def upload_status(self, transfer_id: str) -> Upload:
        return self._upload(transfer_id)

    def take_upload(self, transfer_id: str) -> bytes:
        """The complete, checksum-verified upload (removed from the store)."""
        item = self._upload(transfer_id)
        if not item.complete:
            raise TransferError("incomplete", f"upload {transfer_id} has {len(item.data)} of {item.size} bytes")
        if hashlib.sha256(item.data).hexdigest() != item.sha256:
            del self.uploads[transfer_id]
            raise TransferError("checksum", f"upload {transfer_id} does not match its SHA-256 (damaged on the "
                                            "line); upload it again")
        del self.uploads[transfer_id]
        return bytes(item.data)

    def _upload(self, transfer_id: str) -> Upload:
        self._expire()
        item = self.uploads.get(transfer_id)
        if item is None:
            raise TransferError("unknown_transfer", f"no upload {transfer_id!r} (expired or never begun)")
        return item
