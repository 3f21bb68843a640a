//! The GGUF reader on files built here byte by byte: every metadata value type, arrays (nested too), custom
//! alignment, versions 2 and 3; and on damaged files: every truncation, bad magic, bad version, out-of-bounds
//! and misaligned tensors, absurd counts, random corruption. Damage must give an error naming the problem,
//! never a panic.

use std::path::PathBuf;

use hearth_engine::loader::gguf::{GgufFile, MetaValue};
use hearth_engine::tensor::DType;

/// A minimal GGUF writer for tests.
struct Writer {
    version: u32,
    alignment: u64,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn s(x: &str) -> Vec<u8> {
    let mut v = (x.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(x.as_bytes());
    v
}

impl Writer {
    fn new(version: u32, alignment: u64) -> Writer {
        let mut w = Writer {
            version,
            alignment,
            kv: Vec::new(),
            tensors: Vec::new(),
        };
        if alignment != 32 {
            w.kv(
                "general.alignment",
                4,
                (alignment as u32).to_le_bytes().to_vec(),
            );
        }
        w
    }
    fn kv(&mut self, k: &str, ty: u32, payload: Vec<u8>) {
        self.kv.push((k.to_string(), ty, payload));
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, ty, p) in &self.kv {
            b.extend(s(k));
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(p);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            b.extend(s(name));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        let start = (b.len() as u64).div_ceil(self.alignment) * self.alignment;
        b.resize(start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            b.resize((start + off) as usize, 0);
            b.extend_from_slice(data);
        }
        b
    }
}

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn sample_file(version: u32, alignment: u64) -> Vec<u8> {
    let mut w = Writer::new(version, alignment);
    w.kv("t.u8", 0, vec![200]);
    w.kv("t.i8", 1, vec![(-5i8) as u8]);
    w.kv("t.u16", 2, 60000u16.to_le_bytes().to_vec());
    w.kv("t.i16", 3, (-30000i16).to_le_bytes().to_vec());
    w.kv("t.u32", 4, 4_000_000_000u32.to_le_bytes().to_vec());
    w.kv("t.i32", 5, (-2_000_000_000i32).to_le_bytes().to_vec());
    w.kv("t.f32", 6, 1.5f32.to_le_bytes().to_vec());
    w.kv("t.bool", 7, vec![1]);
    w.kv("t.str", 8, s("héllo"));
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&3u64.to_le_bytes());
    for v in [7u32, 8, 9] {
        arr.extend_from_slice(&v.to_le_bytes());
    }
    w.kv("t.arr_u32", 9, arr);
    let mut sarr = 8u32.to_le_bytes().to_vec();
    sarr.extend_from_slice(&2u64.to_le_bytes());
    sarr.extend(s("a"));
    sarr.extend(s(""));
    w.kv("t.arr_str", 9, sarr);
    // An array of two arrays of i8.
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend_from_slice(&2u64.to_le_bytes());
    for inner in [[1i8, 2], [3, 4]] {
        nested.extend_from_slice(&1u32.to_le_bytes());
        nested.extend_from_slice(&2u64.to_le_bytes());
        nested.extend(inner.iter().map(|&x| x as u8));
    }
    w.kv("t.nested", 9, nested);
    w.kv("t.u64", 10, u64::MAX.to_le_bytes().to_vec());
    w.kv("t.i64", 11, i64::MIN.to_le_bytes().to_vec());
    w.kv("t.f64", 12, 2.25f64.to_le_bytes().to_vec());
    // A type hearth does not run is listed aside (first, so truncations still cut a tensor it checks).
    w.tensor("c", &[1], 27, vec![0u8; 8]);
    let f: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.tensor("a", &[3, 2], 0, f);
    let mut q8 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| i as u8));
    w.tensor("b", &[32, 1], 8, q8);
    w.bytes()
}

#[test]
fn reads_every_metadata_type_and_tensor() {
    for (version, align) in [(3, 32), (2, 32), (3, 64), (3, 8)] {
        let p = write_tmp(
            &format!("ok-{version}-{align}.gguf"),
            &sample_file(version, align),
        );
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(g.version, version);
        let m = |k: &str| g.get(k).unwrap().clone();
        assert_eq!(m("t.u8"), MetaValue::U8(200));
        assert_eq!(m("t.i8"), MetaValue::I8(-5));
        assert_eq!(m("t.u16"), MetaValue::U16(60000));
        assert_eq!(m("t.i16"), MetaValue::I16(-30000));
        assert_eq!(m("t.u32"), MetaValue::U32(4_000_000_000));
        assert_eq!(m("t.i32"), MetaValue::I32(-2_000_000_000));
        assert_eq!(m("t.f32"), MetaValue::F32(1.5));
        assert_eq!(m("t.bool"), MetaValue::Bool(true));
        assert_eq!(g.get_str("t.str"), Some("héllo"));
        assert_eq!(
            m("t.arr_u32"),
            MetaValue::Array(vec![
                MetaValue::U32(7),
                MetaValue::U32(8),
                MetaValue::U32(9)
            ])
        );
        assert_eq!(
            m("t.arr_str"),
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("".into())
            ])
        );
        assert_eq!(
            m("t.nested"),
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I8(1), MetaValue::I8(2)]),
                MetaValue::Array(vec![MetaValue::I8(3), MetaValue::I8(4)])
            ])
        );
        assert_eq!(m("t.u64"), MetaValue::U64(u64::MAX));
        assert_eq!(m("t.i64"), MetaValue::I64(i64::MIN));
        assert_eq!(m("t.f64"), MetaValue::F64(2.25));
        assert_eq!(g.tensors.len(), 2);
        let a = &g.tensors[0];
        assert_eq!(
            (a.name.as_str(), a.dtype, a.shape.clone()),
            ("a", DType::F32, vec![2, 3])
        );
        assert_eq!(a.to_f32(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = &g.tensors[1];
        assert_eq!((b.dtype, b.shape.clone()), (DType::Q8_0, vec![1, 32]));
        assert_eq!(b.to_f32()[3], 1.5);
        assert_eq!(g.unsupported, vec![("c".to_string(), "I64".to_string())]);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let full = sample_file(3, 32);
    for len in 0..full.len() {
        let p = write_tmp("trunc.gguf", &full[..len]);
        match GgufFile::open(&p) {
            Ok(_) => panic!("a file cut to {len} of {} bytes opened", full.len()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("trunc.gguf"),
                    "error does not name the file: {msg}"
                );
                assert!(
                    msg.contains("truncated")
                        || msg.contains("out of bounds")
                        || msg.contains("cannot fit"),
                    "unclear error at {len}: {msg}"
                );
            }
        }
    }
}

#[test]
fn bad_headers_are_clear_errors() {
    let full = sample_file(3, 32);
    let err = |bytes: &[u8]| {
        GgufFile::open(&write_tmp("bad.gguf", bytes))
            .err()
            .expect("should fail")
            .to_string()
    };

    let mut b = full.clone();
    b[0] = b'X';
    assert!(err(&b).contains("bad magic"));

    let mut b = full.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err(&b).contains("version 1"));

    let mut b = full.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&b).contains("tensor count"));

    let mut b = full.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(err(&b).contains("metadata count"));

    // A tensor whose data lies past the end of the file.
    let mut w = Writer::new(3, 32);
    w.tensor("big", &[64, 1000], 0, vec![0u8; 16]);
    let e = err(&w.bytes());
    assert!(e.contains("big") && e.contains("out of bounds"), "{e}");

    // A row that is not a whole number of blocks.
    let mut w = Writer::new(3, 32);
    w.tensor("odd", &[30, 1], 8, vec![0u8; 64]);
    let e = err(&w.bytes());
    assert!(e.contains("odd") && e.contains("blocks"), "{e}");
}

#[test]
fn random_corruption_never_panics() {
    let full = sample_file(3, 32);
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let mut b = full.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let p = write_tmp("fuzz.gguf", &b);
        let _ = std::panic::catch_unwind(|| {
            GgufFile::open(&p).map(|g| {
                for t in &g.tensors {
                    let _ = t.to_f32();
                }
            })
        })
        .expect("the reader panicked on a corrupted file");
    }
}

/// Arrays longer than 1024 items (vocabularies) are kept packed; every accessor reads them like short ones,
/// and damage inside them is still a clear error.
#[test]
fn long_arrays_are_packed_and_read_like_short_ones() {
    let n = 3000u64;
    let words: Vec<String> = (0..n).map(|i| format!("tok{i}é")).collect();
    let mut strs = 8u32.to_le_bytes().to_vec();
    strs.extend_from_slice(&n.to_le_bytes());
    for w in &words {
        strs.extend(s(w));
    }
    let mut f32s = 6u32.to_le_bytes().to_vec();
    f32s.extend_from_slice(&n.to_le_bytes());
    for i in 0..n {
        f32s.extend_from_slice(&(i as f32 * -0.5).to_le_bytes());
    }
    let mut i32s = 5u32.to_le_bytes().to_vec();
    i32s.extend_from_slice(&n.to_le_bytes());
    for i in 0..n {
        i32s.extend_from_slice(&(i as i32 - 7).to_le_bytes());
    }
    let mut w = Writer::new(3, 32);
    w.kv("tokenizer.ggml.tokens", 9, strs.clone());
    w.kv("tokenizer.ggml.scores", 9, f32s);
    w.kv("tokenizer.ggml.token_type", 9, i32s);
    let g = GgufFile::open(&write_tmp("packed.gguf", &w.bytes())).unwrap();
    let t = g.get("tokenizer.ggml.tokens").unwrap();
    assert!(matches!(t, MetaValue::Packed(_)));
    assert_eq!(t.array_len(), Some(n as usize));
    assert!(t.as_array().is_none());
    for i in [0usize, 1, 1023, 1024, 2999] {
        assert_eq!(t.str_at(i), Some(words[i].as_str()));
        assert_eq!(
            g.get("tokenizer.ggml.scores").unwrap().f64_at(i),
            Some(i as f64 * -0.5)
        );
        assert_eq!(
            g.get("tokenizer.ggml.token_type").unwrap().i64_at(i),
            Some(i as i64 - 7)
        );
    }
    assert_eq!(t.str_at(3000), None);
    assert_eq!(g.get("tokenizer.ggml.scores").unwrap().str_at(0), None);
    if let MetaValue::Packed(p) = g.get("tokenizer.ggml.token_type").unwrap() {
        assert_eq!(p.get(5), Some(MetaValue::I32(-2)));
    }

    // Invalid UTF-8 in one packed string: an error naming the key and item.
    let bad_at = strs.len() - 1;
    let mut bad = strs;
    bad[bad_at] = 0xff;
    let mut w = Writer::new(3, 32);
    w.kv("tokenizer.ggml.tokens", 9, bad);
    let e = GgufFile::open(&write_tmp("packed_bad.gguf", &w.bytes()))
        .err()
        .expect("invalid UTF-8 must be refused")
        .to_string();
    assert!(
        e.contains("tokenizer.ggml.tokens[2999]") && e.contains("UTF-8"),
        "{e}"
    );
}
