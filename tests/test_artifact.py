"""The surrogate artifact format on its own: round trip, checksums, refusals, one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hybrid.surrogate.artifact import (
    FORMAT,
    FORMAT_VERSION,
    META,
    read_artifact,
    sha256_file,
    write_artifact,
)
from hybrid.surrogate.errors import SurrogateError

GROUPS = {
    "basis": {"modes": np.arange(12.0).reshape(3, 4)},
    "reduced": {"A": np.eye(3)[None] * 2.0, "f": np.ones((1, 3), dtype=np.float32),
                "idx": np.array([3, 1, 2], dtype=np.int64)},
    "network": {},                                  # empty groups are not written
}


@pytest.fixture
def art(tmp_path):
    return write_artifact(tmp_path / "s", {"kind": "podnn", "n": 3}, GROUPS,
                          extra_files={"training.png": b"\x89PNG fake"})


def test_round_trip_is_exact(art):
    meta, groups = read_artifact(art)
    assert meta["kind"] == "podnn" and meta["n"] == 3
    assert meta["format"] == FORMAT == "hybrid-surrogate"
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert set(groups) == {"basis", "reduced"}
    for g, arrays in groups.items():
        assert set(arrays) == set(GROUPS[g])
        for k, v in arrays.items():
            assert v.dtype == GROUPS[g][k].dtype
            np.testing.assert_array_equal(v, GROUPS[g][k])
    assert sorted(p.name for p in art.iterdir()) == sorted(
        [META, "basis.safetensors", "reduced.safetensors", "training.png"])
    assert (art / "training.png").read_bytes() == b"\x89PNG fake"
    # the metadata lists the hash of every array file, and hashes itself
    assert meta["files"] == {f: sha256_file(art / f)
                             for f in ("basis.safetensors", "reduced.safetensors")}
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    assert meta["meta_sha256"] == hashlib.sha256(
        json.dumps(body, sort_keys=True).encode()).hexdigest()
    assert not any(p.name.startswith(".tmp-") for p in art.iterdir())


def test_sha256_file_of_a_large_file(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)     # several read chunks
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_rewriting_an_artifact_in_place_is_allowed(art):
    write_artifact(art, {"kind": "galerkin"}, {"basis": GROUPS["basis"]})
    meta, groups = read_artifact(art)
    assert meta["kind"] == "galerkin" and set(groups) == {"basis"}


def test_writing_refuses_files_and_foreign_directories(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SurrogateError, match=r"file: exists and is not a directory$"):
        write_artifact(f, {}, GROUPS)
    d = tmp_path / "other"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(SurrogateError, match=r"other: directory is not empty and holds no "
                                             r"surrogate; refusing to write into it$"):
        write_artifact(d, {}, GROUPS)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_artifact(empty, {}, GROUPS)                   # an empty directory is fine
    read_artifact(empty)


def rewrite_meta(art, **changes):
    meta = json.loads((art / META).read_text())
    meta.update(changes)
    (art / META).write_text(json.dumps(meta))
    return meta


def test_reading_refuses_what_is_not_a_surrogate(tmp_path, art):
    with pytest.raises(SurrogateError, match=r"nowhere: no such surrogate directory$"):
        read_artifact(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(SurrogateError, match=r"bare: not a surrogate \(no surrogate\.json\)$"):
        read_artifact(tmp_path / "bare")
    (art / META).write_text("{not json")
    with pytest.raises(SurrogateError, match=r"surrogate\.json: metadata is corrupted \("):
        read_artifact(art)
    (art / META).write_bytes(b"\xff\xfe")
    with pytest.raises(SurrogateError, match=r"surrogate\.json: metadata is corrupted"):
        read_artifact(art)
    for text in ("[1, 2]", json.dumps({"format": "other"})):
        (art / META).write_text(text)
        with pytest.raises(SurrogateError, match=r"surrogate\.json: not a hybrid surrogate$"):
            read_artifact(art)


def test_other_format_version_is_refused(art):
    rewrite_meta(art, format_version=2)
    with pytest.raises(SurrogateError, match=r"surrogate format version 2 is not supported "
                                             r"\(this hybrid reads version 1\)$"):
        read_artifact(art)


def test_modified_metadata_is_refused(art):
    rewrite_meta(art, n=4)
    with pytest.raises(SurrogateError, match=r"metadata checksum mismatch \(the file was "
                                             r"modified\)$"):
        read_artifact(art)
    meta = rewrite_meta(art, n=3)                       # restored: readable again
    assert read_artifact(art)[0]["meta_sha256"] == meta["meta_sha256"]


def test_missing_modified_or_unreadable_array_files_are_refused(art):
    blob = (art / "reduced.safetensors").read_bytes()
    (art / "reduced.safetensors").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(SurrogateError, match=r"reduced\.safetensors: checksum mismatch "
                                             r"\(file corrupted or modified\)$"):
        read_artifact(art)
    (art / "reduced.safetensors").unlink()
    with pytest.raises(SurrogateError, match=r"reduced\.safetensors: file of the surrogate is "
                                             r"missing$"):
        read_artifact(art)
    # a file whose hash matches the metadata but is not safetensors (a consistent forgery)
    junk = b"not a safetensors file"
    (art / "reduced.safetensors").write_bytes(junk)
    meta = json.loads((art / META).read_text())
    meta["files"]["reduced.safetensors"] = hashlib.sha256(junk).hexdigest()
    from hybrid.surrogate.artifact import _meta_hash
    meta["meta_sha256"] = _meta_hash(meta)
    (art / META).write_text(json.dumps(meta))
    with pytest.raises(SurrogateError, match=r"reduced\.safetensors: unreadable \("):
        read_artifact(art)


def test_nested_new_directory_and_empty_groups_anywhere(tmp_path):
    groups = {"network": {}, "basis": GROUPS["basis"], "extra": {}, "reduced": GROUPS["reduced"]}
    path = write_artifact(tmp_path / "a" / "b" / "s", {"kind": "x"}, groups)
    meta, read = read_artifact(path)
    assert set(read) == {"basis", "reduced"}
    assert set(meta["files"]) == {"basis.safetensors", "reduced.safetensors"}


def test_metadata_listing_no_files_gives_no_groups(tmp_path):
    from hybrid.surrogate.artifact import _meta_hash

    (tmp_path / "s").mkdir()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "x"}
    meta["meta_sha256"] = _meta_hash(meta)
    (tmp_path / "s" / META).write_text(json.dumps(meta))
    got, groups = read_artifact(tmp_path / "s")
    assert groups == {} and got == meta
