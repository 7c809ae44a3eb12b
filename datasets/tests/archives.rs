//! A flipped bit anywhere in a compressed archive is an error naming the archive — or, where it
//! changes nothing that is read (a gzip header's timestamp), the same shards. Never other pixels.
//! A tar.gz of several gzip members is read whole; bytes after its last member are an error.

use std::io::{Read, Write};
use std::path::Path;

use siamlab_datasets::container::Container;
use siamlab_datasets::sources::Cifar;
use siamlab_datasets::{ingest, synth, IngestOptions, Outcome};

fn hashes(o: &Outcome) -> Vec<String> {
    let m = o.manifest();
    m.split_order.iter().flat_map(|s| m.splits[s].shards.iter().map(|x| x.sha256.clone())).collect()
}

fn ingest_cifar(archive: &Path, out: &Path) -> siamlab_datasets::Result<Outcome> {
    ingest(Box::new(Cifar::open(archive, false)?), &IngestOptions::new(out))
}

/// Flips one bit at each of `n` places spread over `from..` of `archive` (and each of the last
/// 8 bytes) and ingests: every run fails naming the archive, or gives the reference shards.
fn sweep(archive: &Path, from: usize, n: usize) -> usize {
    let good = std::fs::read(archive).unwrap();
    let reference = hashes(&ingest_cifar(archive, &archive.with_extension("ref")).unwrap());
    let len = good.len();
    let places: Vec<usize> = (0..n).map(|k| from + k * (len - from) / n).chain(len - 8..len).collect();
    let mut errors = 0;
    for (k, &at) in places.iter().enumerate() {
        let mut b = good.clone();
        b[at] ^= 1 << (k % 8);
        std::fs::write(archive, &b).unwrap();
        let out = archive.with_extension(format!("o{k}"));
        match ingest_cifar(archive, &out) {
            Ok(o) => {
                assert!(at < len - 8, "byte {at} of {len}: a flip in the gzip trailer was not noticed");
                assert_eq!(hashes(&o), reference, "byte {at} of {len}: other data ingested");
            }
            Err(e) => {
                let name = archive.file_name().unwrap().to_string_lossy();
                assert!(e.to_string().contains(&*name), "byte {at}: {e}");
                assert!(!out.exists(), "byte {at}: output left behind");
                errors += 1;
            }
        }
    }
    std::fs::write(archive, &good).unwrap();
    errors
}

#[test]
fn bit_flips_in_a_tar_gz_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    // Past the 10-byte gzip header (whose timestamp and OS bytes nothing reads).
    let errors = sweep(&tgz, 10, 40);
    assert!(errors >= 40, "only {errors} of 48 flips in the compressed data or the trailer were errors");
}

#[test]
fn bit_flips_in_a_zip_member_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let zip_path = t.path().join("c.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut names: Vec<_> = std::fs::read_dir(&src).unwrap().flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in &names {
        z.start_file(format!("cifar-10-batches-bin/{}", name.to_string_lossy()), opts).unwrap();
        z.write_all(&std::fs::read(src.join(name)).unwrap()).unwrap();
    }
    z.finish().unwrap();
    // Flips inside data_batch_3.bin's compressed bytes (after its 30-byte local header and name).
    let bytes = std::fs::read(&zip_path).unwrap();
    let name = b"cifar-10-batches-bin/data_batch_3.bin";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let next = at + bytes[at..].windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    let good = bytes.clone();
    let mut errors = 0;
    for k in 0..16 {
        let pos = at + 4 + k * (next - at - 8) / 16;
        let mut b = good.clone();
        b[pos] ^= 1 << (k % 8);
        std::fs::write(&zip_path, &b).unwrap();
        let out = t.path().join(format!("z{k}"));
        match ingest_cifar(&zip_path, &out) {
            Ok(_) => panic!("byte {pos}: a flipped bit in a deflated member was ingested"),
            Err(e) => {
                assert!(e.to_string().contains("c.zip"), "{e}");
                assert!(!out.exists());
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 16);
}

/// `tar` bytes as gzip members, one per piece (`cat a.gz b.gz …`, which `gzip -d` and Python's
/// `tarfile` read whole).
fn gzip_members(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(piece).unwrap();
        out.extend(gz.finish().unwrap());
    }
    out
}

/// Every member of a container with its contents.
fn contents(path: &Path) -> siamlab_datasets::Result<Vec<(String, Vec<u8>)>> {
    let (list, mut data) = Container::open(path)?.scan(&|_| true)?;
    Ok(list.into_iter().map(|m| (m.name.clone(), data.remove(&m.name).unwrap())).collect())
}

/// Issue 17: a tar.gz of several gzip members was read up to the end of the first only; split
/// between two tar entries, the rest of the archive was silently left out. Every member is read:
/// the same members, the same bytes, the same shards as the one-member archive.
#[test]
fn a_tar_gz_of_several_gzip_members_is_read_whole() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let one = t.path().join("one.tar.gz");
    synth::tar_gz(&src, &one).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&one).unwrap()).read_to_end(&mut tar_bytes).unwrap();
    // Where the tar's fourth entry's header starts: a split there leaves a valid, shorter tar.
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let at = archive.entries().unwrap().nth(3).unwrap().unwrap().raw_header_position() as usize;
    let whole = contents(&one).unwrap();
    assert!(whole.len() >= 6, "{} members", whole.len());
    let third = tar_bytes.len() / 3 + 17;
    for (k, pieces) in [
        vec![&tar_bytes[..at], &tar_bytes[at..]],
        vec![&tar_bytes[..third], &tar_bytes[third..2 * third], &tar_bytes[2 * third..]],
    ]
    .into_iter()
    .enumerate()
    {
        let multi = t.path().join(format!("multi{k}.tar.gz"));
        std::fs::write(&multi, gzip_members(&pieces)).unwrap();
        assert_eq!(contents(&multi).unwrap(), whole, "{} gzip members", pieces.len());
        let a = hashes(&ingest_cifar(&one, &t.path().join(format!("a{k}"))).unwrap());
        let b = hashes(&ingest_cifar(&multi, &t.path().join(format!("b{k}"))).unwrap());
        assert_eq!(a, b, "{} gzip members", pieces.len());
    }
}

/// Zero bytes after the last gzip member, or between members (block padding), are skipped as
/// `gzip -d` and Python read them: the same rows as the unpadded archive.
#[test]
fn zero_padding_after_or_between_gzip_members_is_skipped() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let good = std::fs::read(&tgz).unwrap();
    let want = hashes(&ingest_cifar(&tgz, &t.path().join("plain")).unwrap());
    let whole = contents(&tgz).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&good[..]).read_to_end(&mut tar_bytes).unwrap();
    let half = tar_bytes.len() / 2 + 5;
    let padded_between =
        [gzip_members(&[&tar_bytes[..half]]), vec![0u8; 512], gzip_members(&[&tar_bytes[half..]]), vec![0u8; 7]]
            .concat();
    for (k, bytes) in [[&good[..], &[0u8; 10240][..]].concat(), [&good[..], &[0u8; 1][..]].concat(), padded_between]
        .into_iter()
        .enumerate()
    {
        let padded = t.path().join(format!("p{k}.tar.gz"));
        std::fs::write(&padded, bytes).unwrap();
        assert_eq!(contents(&padded).unwrap(), whole, "case {k}");
        assert_eq!(hashes(&ingest_cifar(&padded, &t.path().join(format!("o{k}"))).unwrap()), want, "case {k}");
    }
}

/// Bytes after the last gzip member that are not another member (here: text, half a gzip
/// header, zeros followed by text) are a one-line error naming the archive, and nothing is
/// written.
#[test]
fn bytes_after_the_last_gzip_member_are_an_error() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let good = std::fs::read(&tgz).unwrap();
    let zeros_then_text = [&[0u8; 16][..], b"x"].concat();
    for (k, tail) in [&b"trailing text that is no gzip member\n"[..], &[0x1f, 0x8b, 8][..], &zeros_then_text[..]]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&tgz, [&good[..], tail].concat()).unwrap();
        let err = contents(&tgz).unwrap_err().to_string();
        assert!(err.contains("c.tar.gz") && err.contains("corrupt archive"), "tail {k}: {err}");
        assert!(!err.contains('\n'), "tail {k}: {err}");
        let out = t.path().join(format!("o{k}"));
        let err = ingest_cifar(&tgz, &out).unwrap_err().to_string();
        assert!(err.contains("c.tar.gz") && err.contains("corrupt archive"), "tail {k}: {err}");
        assert!(!out.exists(), "tail {k}: output left behind");
    }
}
