"""Folder store safety and atomicity; S3 store through moto with real boto3 calls."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from pipeline.errors import UnsafeKey
from pipeline.store import FolderStore, S3Store, safe_relative_path


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "uploads/../../x", "/etc/passwd", "uploads/a\x00b", "uploads//x", "uploads/./x",
     "uploads/..", "", "a\\..\\b", "uploads/" + "x" * 1100, "uploads/" + "y" * 256 + "/z"],
)
def test_unsafe_keys_never_become_paths(tmp_path, key):
    store = FolderStore(tmp_path, "bucket")
    with pytest.raises(UnsafeKey) as err:
        store.put_bytes(key, b"x")
    assert key not in str(err.value) or key == ""
    assert list(tmp_path.parent.glob("passwd")) == []


def test_symlink_inside_bucket_cannot_lead_out(tmp_path):
    store = FolderStore(tmp_path / "root", "bucket")
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "uploads").symlink_to(outside)
    with pytest.raises(UnsafeKey):
        store.put_bytes("uploads/x.pdf", b"x")
    assert not (outside / "x.pdf").exists()


def test_folder_store_round_trip_and_etag(tmp_path):
    store = FolderStore(tmp_path, "bucket")
    info = store.put_bytes("uploads/Zoë scan (1).pdf", b"hello")
    assert info.etag == "5d41402abc4b2a76b9719d911017c592"  # MD5, as S3's single-part ETag
    assert store.get_bytes("uploads/Zoë scan (1).pdf") == b"hello"
    assert store.head("uploads/Zoë scan (1).pdf").size == 5
    assert store.head("uploads/missing") is None
    assert list(store.list("uploads/")) == ["uploads/Zoë scan (1).pdf"]
    with pytest.raises(KeyError):
        store.get_bytes("uploads/missing")


def test_folder_store_writes_are_atomic_replacements(tmp_path):
    store = FolderStore(tmp_path, "bucket")
    store.put_bytes("results/d/text.txt", b"old")
    store.put_bytes("results/d/text.txt", b"new")
    assert store.get_bytes("results/d/text.txt") == b"new"
    assert not [p for p in store.root.rglob(".tmp-*")]
    assert store.delete_prefix("results/d/") == 1


def test_safe_relative_path_keeps_ordinary_keys():
    assert str(safe_relative_path("uploads/a b/c+d.pdf")) == "uploads/a b/c+d.pdf"


@mock_aws
def test_s3_store_through_boto3(settings, tmp_path):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="uploads")
    store = S3Store(settings.replace(store_backend="s3", aws_region="us-east-1"))
    src = tmp_path / "f.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    info = store.put_file("uploads/a b.bin", src, "application/octet-stream")
    assert info.size == 2000 and info.etag
    assert store.head("uploads/a b.bin").etag == info.etag
    assert store.get_bytes("uploads/a b.bin") == src.read_bytes()
    dest = tmp_path / "out.bin"
    store.download("uploads/a b.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert store.head("uploads/none") is None
    with pytest.raises(KeyError):
        store.get_bytes("uploads/none")
    store.put_bytes("results/x/1", b"1")
    store.put_bytes("results/x/2", b"2")
    assert sorted(store.list("results/")) == ["results/x/1", "results/x/2"]
    assert store.delete_prefix("results/x/") == 2
    assert list(store.list("results/")) == []


@mock_aws
def test_s3_store_missing_bucket_is_a_config_error(settings):
    from pipeline.errors import ConfigError

    store = S3Store(settings.replace(store_backend="s3", bucket="nope", aws_region="us-east-1"))
    with pytest.raises(ConfigError):
        store.put_bytes("uploads/x", b"x")
