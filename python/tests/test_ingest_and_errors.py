"""siamlab.ingest (the CLI's options and errors) and bad data raising with the file and row."""

import shutil

import numpy as np
import pytest

import siamlab
from conftest import write_cifar10


def test_ingest_writes_a_manifest_and_recognises_a_complete_output(tmp_path):
    src = write_cifar10(tmp_path, 6, test=3)
    out = tmp_path / "shards"
    m = siamlab.ingest("cifar10", src=src, out=out, jobs=1)
    assert m["splits"]["train"]["rows"] == 30 and m["splits"]["test"]["rows"] == 3
    assert m["classes"][:2] == ["airplane", "automobile"]
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = siamlab.ingest("cifar10", src=str(src), out=out)  # same arguments: nothing to do
    assert again == m and (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"other arguments \(resize: null → 16\)"):
        siamlab.ingest("cifar10", src=src, out=out, resize=16)  # other arguments, no overwrite
    m16 = siamlab.ingest("cifar10", src=src, out=out, resize=16, overwrite=True)
    assert m16["splits"]["train"]["size_range"] == [16, 16, 16, 16]
    assert len(siamlab.Pipeline(out, views="eval", n_views=1, batch_size=30)) == 1


def test_generated_sources_take_the_cli_options(tmp_path):
    m = siamlab.ingest("random", out=tmp_path / "r", count=40, size=12, seed=3)
    assert m["splits"]["train"]["rows"] == 40 and m["arguments"]["random"]["size"] == 12
    b = next(iter(siamlab.Pipeline(tmp_path / "r", batch_size=40)))
    assert b.views[0].shape == (40, 3, 12, 12) and (b.labels == -1).all()


def test_bad_arguments_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        siamlab.ingest("imagenet", src=tmp_path, out=tmp_path / "o")
    with pytest.raises(ValueError, match="needs a path"):
        siamlab.ingest("cifar10", out=tmp_path / "o")
    with pytest.raises(ValueError, match="shard_size_mb"):
        siamlab.ingest("random", out=tmp_path / "o", shard_size_mb=0)
    with pytest.raises(ValueError, match="resize 0"):
        siamlab.ingest("random", out=tmp_path / "o", resize=0)


def test_a_corrupt_source_names_the_file_and_writes_nothing(tmp_path):
    src = write_cifar10(tmp_path, 4)
    with open(src / "data_batch_3.bin", "ab") as f:
        f.write(b"xx")  # not a multiple of 3,073 bytes
    out = tmp_path / "shards"
    with pytest.raises(siamlab.Error, match="data_batch_3.bin"):
        siamlab.ingest("cifar10", src=src, out=out)
    assert not (out / "manifest.json").exists()


def test_a_folder_without_shards_raises_naming_it(tmp_path):
    with pytest.raises(siamlab.Error, match="nothing-here"):
        siamlab.Pipeline(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(siamlab.Error, match="empty"):
        siamlab.Pipeline(tmp_path / "empty")


def test_a_truncated_shard_raises_naming_the_shard(cifar_shards, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(cifar_shards, data)
    shard = sorted((data / "train").iterdir())[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(siamlab.Error, match=shard.name):
        siamlab.Pipeline(data)


def test_an_image_corrupted_inside_a_shard_raises_naming_shard_and_row(cifar_shards, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(cifar_shards, data)
    shard = sorted((data / "train").iterdir())[0]
    raw = bytearray(shard.read_bytes())
    # Shards are uncompressed: image bytes lie in row order. Spoil row 3's PNG data chunk.
    starts = [i for i in range(len(raw)) if raw.startswith(b"\x89PNG\r\n\x1a\n", i)]
    assert len(starts) > 4
    idat = raw.index(b"IDAT", starts[3])
    raw[idat:idat + 4] = b"QDAT"
    shard.write_bytes(bytes(raw))
    p = siamlab.Pipeline(data, batch_size=4, shuffle=False, views="eval", n_views=1)
    with pytest.raises(siamlab.Error, match=shard.name + ": row 3: image does not decode"):
        for _ in p:
            pass
    # with skip_bad the row is skipped and counted
    q = siamlab.Pipeline(data, batch_size=4, shuffle=False, views="eval", n_views=1, skip_bad=True)
    got = np.concatenate([b.indices for b in q])
    assert 3 not in got.tolist() and len(got) == 99 and q.stats()["skipped"] == 1
