//! Small datasets written in the publishers' exact layouts (shared/FORMATS.md), with a known
//! pixel pattern: for tests, benchmarks and demos on machines without the real archives.
//!
//! Image `i` of a split has `pixel(i, c, y, x) = (i*7 + c*50 + y*3 + x*5) % 256` and label
//! `i % classes` (STL-10 stores `1 + i % 10`); CelebA attribute `a` of image `i` is set when
//! `(i + a) % 3 == 0`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The test pattern value of image `i`, channel `c`, row `y`, column `x`.
pub fn pixel(i: u64, c: usize, y: usize, x: usize) -> u8 {
    ((i * 7 + c as u64 * 50 + y as u64 * 3 + x as u64 * 5) % 256) as u8
}

/// The pattern's attribute `a` of image `i`, as 0/1.
pub fn attribute(i: u64, a: usize) -> i8 {
    ((i + a as u64) % 3 == 0) as i8
}

fn planes(i: u64, side: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        for y in 0..side {
            for x in 0..side {
                v.push(pixel(i, c, y, x));
            }
        }
    }
    v
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).at(d)?;
    }
    std::fs::write(path, bytes).at(path)
}

/// Binary CIFAR records for images `first..first+n` (3,073 bytes each; 3,074 for CIFAR-100
/// with coarse label `i % 20` first).
pub fn cifar_binary_records(first: u64, n: u64, hundred: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        if hundred {
            out.push((i % 20) as u8);
            out.push((i % 100) as u8);
        } else {
            out.push((i % 10) as u8);
        }
        out.extend(planes(i, 32));
    }
    out
}

/// Writes `cifar-10-batches-bin/` (or `cifar-100-binary/`) under `root` with `per_file` images
/// in each train file (5 files for CIFAR-10, 1 for CIFAR-100) and `test` test images.
/// Returns the data folder.
pub fn cifar_binary(root: &Path, per_file: u64, test: u64, hundred: bool) -> Result<PathBuf> {
    if hundred {
        let dir = root.join("cifar-100-binary");
        write(&dir.join("train.bin"), &cifar_binary_records(0, per_file, true))?;
        write(&dir.join("test.bin"), &cifar_binary_records(0, test, true))?;
        let fine: Vec<String> = (0..100).map(|i| format!("fine{i}")).collect();
        let coarse: Vec<String> = (0..20).map(|i| format!("coarse{i}")).collect();
        write(&dir.join("fine_label_names.txt"), fine.join("\n").as_bytes())?;
        write(&dir.join("coarse_label_names.txt"), coarse.join("\n").as_bytes())?;
        return Ok(dir);
    }
    let dir = root.join("cifar-10-batches-bin");
    for b in 0..5 {
        write(&dir.join(format!("data_batch_{}.bin", b + 1)), &cifar_binary_records(b * per_file, per_file, false))?;
    }
    write(&dir.join("test_batch.bin"), &cifar_binary_records(0, test, false))?;
    write(&dir.join("batches.meta.txt"), crate::sources::cifar::CIFAR10_CLASSES.join("\n").as_bytes())?;
    write(&dir.join("readme.html"), b"<html>synthetic</html>")?;
    Ok(dir)
}

/// Overwrites the pixels of every binary CIFAR-10 file in `dir` with Gaussian noise (the
/// `random` source's images, seed 0), keeping labels: a harder input for PNG encoding.
pub fn fill_cifar_with_noise(dir: &Path) -> Result<()> {
    let spec = crate::sources::RandomSpec { count: u64::MAX, size: 32, ..Default::default() };
    let mut rgb = vec![0u8; 3072];
    let mut i = 0u64;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .at(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    names.sort();
    for path in names {
        let mut bytes = std::fs::read(&path).at(&path)?;
        for rec in bytes.chunks_exact_mut(3073) {
            crate::sources::random::draw_image(&spec, i, &mut rgb);
            rec[1..].copy_from_slice(&rgb);
            i += 1;
        }
        std::fs::write(&path, bytes).at(&path)?;
    }
    Ok(())
}

/// A pickle of a CIFAR-10 batch dict exactly as Python 2's `cPickle.dump(d, f, 2)` writes it:
/// byte-string keys, the numpy array through `_reconstruct` + `BUILD` with its raw bytes in a
/// `BINSTRING`, labels as a list of ints.
pub fn cifar_python_batch(first: u64, n: u64) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'q', 1, b'('];
    let short = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    let int = |p: &mut Vec<u8>, v: u64| {
        if v < 256 {
            p.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            p.push(b'M');
            p.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            p.push(b'J');
            p.extend_from_slice(&(v as i32).to_le_bytes());
        }
    };
    short(&mut p, b"data");
    p.extend_from_slice(
        b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04U\x01b\x87q\x05Rq\x06(K\x01",
    );
    int(&mut p, n);
    p.extend_from_slice(b"M\x00\x0c\x86q\x07cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\t(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89");
    let mut raw = Vec::with_capacity(n as usize * 3072);
    for i in first..first + n {
        raw.extend(planes(i, 32));
    }
    p.push(b'T');
    p.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    p.extend_from_slice(&raw);
    p.extend_from_slice(b"q\ntb");
    short(&mut p, b"labels");
    p.extend_from_slice(b"]q\x0b(");
    for i in first..first + n {
        int(&mut p, i % 10);
    }
    p.push(b'e');
    short(&mut p, b"batch_label");
    short(&mut p, b"synthetic batch");
    short(&mut p, b"filenames");
    p.extend_from_slice(b"](");
    for i in first..first + n {
        short(&mut p, format!("img_{i}.png").as_bytes());
    }
    p.extend_from_slice(b"eu.");
    p
}

/// Writes `cifar-10-batches-py/` under `root` (pickled batches and `batches.meta`).
pub fn cifar_python(root: &Path, per_file: u64, test: u64) -> Result<PathBuf> {
    let dir = root.join("cifar-10-batches-py");
    for b in 0..5 {
        write(&dir.join(format!("data_batch_{}", b + 1)), &cifar_python_batch(b * per_file, per_file))?;
    }
    write(&dir.join("test_batch"), &cifar_python_batch(0, test))?;
    let mut meta = vec![0x80, 2, b'}', b'(', b'U', 11];
    meta.extend_from_slice(b"label_names]");
    meta.push(b'(');
    for c in crate::sources::cifar::CIFAR10_CLASSES {
        meta.extend_from_slice(&[b'U', c.len() as u8]);
        meta.extend_from_slice(c.as_bytes());
    }
    meta.extend_from_slice(b"eu.");
    write(&dir.join("batches.meta"), &meta)?;
    Ok(dir)
}

/// STL-10 `*_X.bin` bytes (column-major) for images `first..first+n`.
pub fn stl10_images(first: u64, n: u64) -> Vec<u8> {
    let s = crate::sources::stl10::SIDE;
    let mut out = Vec::with_capacity(n as usize * 3 * s * s);
    for i in first..first + n {
        for c in 0..3 {
            for x in 0..s {
                for y in 0..s {
                    out.push(pixel(i, c, y, x));
                }
            }
        }
    }
    out
}

/// Writes `stl10_binary/` under `root` with the given split sizes (0 leaves the split out).
pub fn stl10(root: &Path, train: u64, test: u64, unlabeled: u64) -> Result<PathBuf> {
    let dir = root.join("stl10_binary");
    for (split, n) in [("train", train), ("test", test)] {
        if n > 0 {
            write(&dir.join(format!("{split}_X.bin")), &stl10_images(0, n))?;
            write(&dir.join(format!("{split}_y.bin")), &(0..n).map(|i| (1 + i % 10) as u8).collect::<Vec<_>>())?;
        }
    }
    if unlabeled > 0 {
        let path = dir.join("unlabeled_X.bin");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).at(&path)?);
        let mut i = 0;
        while i < unlabeled {
            let k = 256.min(unlabeled - i);
            f.write_all(&stl10_images(i, k)).at(&path)?;
            i += k;
        }
        f.flush().at(&path)?;
    }
    write(&dir.join("class_names.txt"), crate::sources::stl10::STL10_CLASSES.join("\n").as_bytes())?;
    let folds: Vec<String> = (0..10)
        .map(|f| (0..train).filter(|i| i % 10 == f).map(|i| i.to_string()).collect::<Vec<_>>().join(" "))
        .collect();
    write(&dir.join("fold_indices.txt"), folds.join("\n").as_bytes())?;
    Ok(dir)
}

/// Attribute names in CelebA's order.
pub const CELEBA_ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// The test pattern of image `i` at `width`×`height` as interleaved RGB.
pub fn pattern_rgb(i: u64, width: u32, height: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height as usize {
        for x in 0..width as usize {
            for c in 0..3 {
                rgb.push(pixel(i, c, y, x));
            }
        }
    }
    rgb
}

/// A PNG of the test pattern for image `i` at `width`×`height`.
pub fn pattern_png(i: u64, width: u32, height: u32) -> Vec<u8> {
    crate::encode::encode_png(width, height, &pattern_rgb(i, width, height))
}

/// Writes a CelebA folder under `root` with `n` images: `img_align_celeba/` (or
/// `img_align_celeba.zip` when `zip`), the attribute and partition files as `.txt` (or `.csv`).
/// Images are PNG bytes of the pattern under CelebA's `NNNNNN.jpg` names unless `jpeg`.
/// Partition of image `i`: 0 if `i % 5 < 3`, 1 if `i % 5 == 3`, else 2.
pub fn celeba(root: &Path, n: u64, width: u32, height: u32, csv: bool, zip: bool, jpeg: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(root).at(root)?;
    let name = |i: u64| format!("{:06}.jpg", i + 1);
    let image = |i: u64| -> Vec<u8> {
        if !jpeg {
            return pattern_png(i, width, height);
        }
        let rgb = pattern_rgb(i, width, height);
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode(&rgb, width, height, image::ExtendedColorType::Rgb8)
            .expect("in-memory JPEG");
        out
    };
    if zip {
        let path = root.join("img_align_celeba.zip");
        let file = std::fs::File::create(&path).at(&path)?;
        let mut z = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.add_directory("img_align_celeba/", opts)
            .map_err(|e| crate::Error::corrupt_file(path.display().to_string(), e.to_string()))?;
        for i in 0..n {
            z.start_file(format!("img_align_celeba/{}", name(i)), opts)
                .map_err(|e| crate::Error::corrupt_file(path.display().to_string(), e.to_string()))?;
            z.write_all(&image(i)).at(&path)?;
        }
        z.finish().map_err(|e| crate::Error::corrupt_file(path.display().to_string(), e.to_string()))?;
    } else {
        for i in 0..n {
            write(&root.join("img_align_celeba").join(name(i)), &image(i))?;
        }
    }
    let part = |i: u64| match i % 5 {
        0..=2 => 0,
        3 => 1,
        _ => 2,
    };
    let value = |i: u64, a: usize| if attribute(i, a) == 1 { "1" } else { "-1" };
    if csv {
        let mut attr = format!("image_id,{}\n", CELEBA_ATTRIBUTES.join(","));
        let mut p = String::from("image_id,partition\n");
        for i in 0..n {
            let vals: Vec<&str> = (0..40).map(|a| value(i, a)).collect();
            attr += &format!("{},{}\n", name(i), vals.join(","));
            p += &format!("{},{}\n", name(i), part(i));
        }
        write(&root.join("list_attr_celeba.csv"), attr.as_bytes())?;
        write(&root.join("list_eval_partition.csv"), p.as_bytes())?;
    } else {
        let mut attr = format!("{n}\n{} \n", CELEBA_ATTRIBUTES.join(" "));
        let mut p = String::new();
        for i in 0..n {
            let vals: Vec<String> = (0..40).map(|a| format!("{:>2}", value(i, a))).collect();
            attr += &format!("{} {}\n", name(i), vals.join(" "));
            p += &format!("{} {}\n", name(i), part(i));
        }
        write(&root.join("list_attr_celeba.txt"), attr.as_bytes())?;
        write(&root.join("list_eval_partition.txt"), p.as_bytes())?;
    }
    Ok(root.to_path_buf())
}

/// Packs folder `dir` (as its own top-level folder) into `out` as `.tar.gz`.
pub fn tar_gz(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).at(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    t.append_dir_all(&name, dir).at(dir)?;
    t.into_inner().at(out)?.finish().at(out)?;
    Ok(())
}
