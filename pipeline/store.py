"""Object stores: a folder standing in for the bucket, and S3. One interface, chosen by settings.

Keys are S3 keys (``uploads/…``, ``results/<document_id>/…``). In the folder store a key becomes a
path only through ``safe_relative_path``: S3 accepts ``../x``, ``/etc/passwd`` or NUL bytes in a
key, and an upload event must never make us read or write outside the bucket folder. Writes are
atomic per object (temp file + rename locally; a single PUT on S3), so a reader never sees half an
output and a rerun replaces rather than mixes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Protocol

from pipeline.errors import ConfigError, TransientError, UnsafeKey
from pipeline.settings import Settings

MAX_KEY_BYTES = 1024  # S3's own limit


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    version_id: str | None = None


def safe_relative_path(key: str) -> PurePosixPath:
    """The key as a relative path with no way out of its root; raises UnsafeKey."""
    if not key or "\x00" in key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UnsafeKey("the object key is empty, holds a NUL byte or is longer than 1024 bytes")
    if key.startswith("/") or "\\" in key:
        raise UnsafeKey("the object key is absolute or holds a backslash")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in ("", ".", ".."):
        raise UnsafeKey("the object key holds an empty, '.' or '..' segment")
    if any(len(p.encode()) > 255 for p in parts):
        raise UnsafeKey("a segment of the object key is longer than 255 bytes")
    return PurePosixPath(*parts)


class Store(Protocol):
    bucket: str

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo: ...
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> Path: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def local_path(self, key: str) -> Path | None: ...


def output_mode(settings: Settings) -> int:
    """The configured mode of result files: owner read-write, group read at most."""
    try:
        mode = int(settings.output_mode, 8)
    except ValueError:
        raise ConfigError("output_mode must be an octal mode such as 0640 or 0600") from None
    if mode & ~0o660 or not mode & 0o600 == 0o600:
        raise ConfigError("output_mode must give the owner read-write and nobody else write or any access "
                          "beyond group read (0600, 0640 or 0660)")
    return mode


def _dir_mode(file_mode: int) -> int:
    """A folder's mode for files of ``file_mode``: read -> read + traverse, for owner and group."""
    return 0o700 | (0o050 if file_mode & 0o040 else 0)


def protect_data_dir(settings: Settings) -> None:
    """The data folder is owner-only; with group-readable results, the group may traverse it (0710)
    to reach them by path, never list it. Only bits are taken away from a folder that exists."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    allowed = 0o710 if output_mode(settings) & 0o040 else 0o700
    current = data.stat().st_mode & 0o777
    if current & ~allowed:
        os.chmod(data, current & allowed)


class FolderStore:
    """A bucket as a folder: ``<root>/<bucket>/<key>``. ETag is the MD5 of the content, as S3's.

    Keys map to paths byte for byte, as S3 keys are: NFC and NFD spellings of one name are two
    objects, a look-alike of '/' or '.' (U+2215, U+FF0E) is an ordinary character of one segment.
    Modes are set explicitly (not left to the umask): originals and everything else 0600 in 0700
    folders; result files ``file_mode`` (settings.output_mode) in folders that let the same
    readers in; folders above them on the way from the store root traverse-only for those readers.
    """

    def __init__(self, root: Path, bucket: str, results_prefix: str = "results/", file_mode: int = 0o600) -> None:
        safe_relative_path(bucket)
        self.bucket = bucket
        self.results_prefix = results_prefix
        self.file_mode = file_mode
        self.root = (Path(root) / bucket).resolve()
        traverse = 0o710 if file_mode & 0o040 else 0o700
        for folder in (self.root.parent, self.root):
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                os.chmod(folder, traverse)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*safe_relative_path(key).parts)
        # Belt and braces: a symlink planted inside the bucket must not lead out of it either.
        if not path.resolve().is_relative_to(self.root):
            raise UnsafeKey("the object key resolves outside the bucket")
        return path

    def _modes(self, key: str) -> tuple[int, int]:
        """(file mode, folder mode) for a key: results as configured, everything else owner-only."""
        if key.startswith(self.results_prefix):
            return self.file_mode, _dir_mode(self.file_mode)
        return 0o600, 0o700

    def _make_parent(self, key: str, path: Path) -> None:
        _, dmode = self._modes(key)
        missing = []
        folder = path.parent
        while not folder.exists() and folder != self.root:
            missing.append(folder)
            folder = folder.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in missing:
            try:
                os.chmod(folder, dmode)
            except FileNotFoundError:  # removed meanwhile by a concurrent delete_prefix
                pass

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        path = self._path(key)
        self._make_parent(key, path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, self._modes(key)[0])
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ObjectInfo(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo:
        dest = self._path(key)
        self._make_parent(key, dest)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)  # keeps the temp file's 0600
            os.chmod(tmp, self._modes(key)[0])
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(key, dest)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError("no such object") from None

    def download(self, key: str, dest: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise KeyError("no such object")
        shutil.copyfile(src, dest)
        return dest

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return self._info(key, path) if path.is_file() else None

    @staticmethod
    def _info(key: str, path: Path) -> ObjectInfo:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                md5.update(chunk)
        return ObjectInfo(key, path.stat().st_size, md5.hexdigest())

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the folder the prefix ends in, not the whole bucket: jobs call delete_prefix
        # several times per document, and walking every upload and result each time made a long
        # local batch quadratic (bench/README-pipeline.md, long batch).
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        return len(keys)


#: S3 retries, chosen rather than inherited (botocore's default is the legacy mode, 5 attempts).
#: Standard mode: jittered exponential backoff (at most 1, 2, 4, 8 s between the 5 attempts) on
#: throttling (SlowDown, 503), 5xx, connect errors and read timeouts. Every call we make is safe to
#: repeat (a PUT of a whole object to its final key, GET, HEAD, a delete of listed keys), so a read
#: timeout may be retried. Not adaptive mode: its client-side rate limiter learns per client, and
#: each worker process has its own short-lived client, so it would learn nothing; a call that still
#: fails after ~15 s of backoff is a TransientError (exit 75) that the job definition retries as a
#: whole, minutes later, which rides out a longer S3 brown-out than a longer SDK loop would.
S3_MAX_ATTEMPTS = 5
S3_CONNECT_TIMEOUT = 5.0
#: Per socket read, not per transfer: S3's first byte comes in milliseconds; 30 s bounds a hung
#: connection while leaving room for a slow PUT's final response.
S3_READ_TIMEOUT = 30.0


def s3_client(settings: Settings):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT,
        read_timeout=S3_READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
    )
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None,
                        region_name=settings.aws_region or None, config=config)


class S3Store:
    """S3 through boto3; ``endpoint_url`` honoured so moto's server or MinIO work."""

    def __init__(self, settings: Settings, client=None) -> None:
        self.bucket = settings.bucket
        self.client = client or s3_client(settings)

    def _call(self, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyError("no such object") from None
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId"):
                raise ConfigError(f"S3 refused the request ({code})") from None
            raise TransientError(f"S3 error ({code})") from None
        except BotoCoreError as exc:
            raise TransientError(f"S3 unreachable ({type(exc).__name__})") from None

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else {}
        resp = self._call(self.client.put_object, Key=key, Body=data, **extra)
        return ObjectInfo(key, len(data), resp["ETag"].strip('"'), resp.get("VersionId"))

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo:
        with Path(path).open("rb") as fh:
            extra = {"ContentType": content_type} if content_type else {}
            resp = self._call(self.client.put_object, Key=key, Body=fh, **extra)
        return ObjectInfo(key, Path(path).stat().st_size, resp["ETag"].strip('"'), resp.get("VersionId"))

    def get_bytes(self, key: str) -> bytes:
        return self._call(self.client.get_object, Key=key)["Body"].read()

    def download(self, key: str, dest: Path) -> Path:
        body = self._call(self.client.get_object, Key=key)["Body"]
        with Path(dest).open("wb") as fh:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                fh.write(chunk)
        return dest

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._call(self.client.head_object, Key=key)
        except KeyError:
            return None
        return ObjectInfo(key, resp["ContentLength"], resp["ETag"].strip('"'), resp.get("VersionId"))

    def list(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(self.client.list_objects_v2, Prefix=prefix, **extra)
            for obj in page.get("Contents", []):
                yield obj["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call(self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def local_path(self, key: str) -> Path | None:
        return None


def open_store(settings: Settings) -> Store:
    if settings.store_backend == "s3":
        return S3Store(settings)
    mode = output_mode(settings)
    if settings.effective_store_root.is_relative_to(settings.data_dir.resolve()):
        protect_data_dir(settings)
    return FolderStore(settings.effective_store_root, settings.bucket, settings.results_prefix, mode)
