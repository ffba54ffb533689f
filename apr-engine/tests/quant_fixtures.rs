//! Bit-exactness against gguf-py on the committed fixtures written by
//! `scripts/gen_quant_fixtures.py`: every dtype's dequantization, and the
//! quantized bytes of every dtype gguf-py can quantize.

use apr_engine::dtype::DType;
use apr_engine::quant;
use std::path::PathBuf;

struct Fixture {
    expected_by: String,
    blocks: Vec<u8>,
    expected: Vec<f32>,
    /// (input values, gguf-py's bytes, gguf-py's dequantization of those bytes)
    quantize: Option<(Vec<f32>, Vec<u8>, Vec<f32>)>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length {}", text.len());
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn load(dtype: DType) -> Fixture {
    let path = fixture_dir().join(format!("{}.json", dtype.name()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with scripts/gen_quant_fixtures.py)", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let field = |name: &str| json[name].as_str().map(str::to_owned);
    let hex = |name: &str| unhex(&field(name).unwrap_or_else(|| panic!("{}: no {name}", path.display())));
    assert_eq!(json["ggml_type"].as_u64(), Some(u64::from(dtype.id())), "{}", path.display());
    let quantize = field("quantize_input_f32_hex").map(|_| {
        (f32s(&hex("quantize_input_f32_hex")), hex("quantize_expected_hex"), f32s(&hex("quantize_dequantized_f32_hex")))
    });
    Fixture {
        expected_by: field("expected_by").unwrap_or_default(),
        blocks: hex("blocks_hex"),
        expected: f32s(&hex("expected_f32_hex")),
        quantize,
    }
}

/// Asserts two f32 slices are identical bit for bit, naming the first difference.
fn assert_bits_equal(what: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a.to_bits() != b.to_bits()) {
        panic!(
            "{what}: first difference at element {i}: ours {} ({:#010x}), expected {} ({:#010x})",
            ours[i],
            ours[i].to_bits(),
            theirs[i],
            theirs[i].to_bits()
        );
    }
}

#[test]
fn every_dtype_dequantizes_bit_exactly() {
    for &dtype in DType::ALL {
        let fixture = load(dtype);
        assert!(fixture.blocks.len() >= 2 * dtype.block_bytes(), "{dtype}: fixture too small");
        let ours = quant::dequantize_to_vec(dtype, &fixture.blocks).unwrap();
        assert_bits_equal(&format!("{dtype} ({})", fixture.expected_by), &ours, &fixture.expected);
    }
}

#[test]
fn fixtures_cover_gguf_py_where_it_has_a_codec() {
    // gguf-py has no Q8_1/Q8_K/integer/F64 codec; everything else must be checked against it.
    let without = [DType::Q8_1, DType::Q8_K, DType::I8, DType::I16, DType::I32, DType::I64, DType::F64];
    for &dtype in DType::ALL {
        let by_gguf_py = load(dtype).expected_by == "gguf.quants.dequantize";
        assert_eq!(by_gguf_py, !without.contains(&dtype), "{dtype}");
    }
}

#[test]
fn quantization_matches_gguf_py_bytes() {
    let quantized_by_gguf_py =
        [DType::F16, DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0];
    for dtype in quantized_by_gguf_py {
        let (input, expected, expected_values) =
            load(dtype).quantize.unwrap_or_else(|| panic!("{dtype}: no quantize case"));
        assert!(quant::can_quantize(dtype));
        let ours = quant::quantize(dtype, &input).unwrap();
        if let Some(i) = ours.iter().zip(&expected).position(|(a, b)| a != b) {
            let block = i / dtype.block_bytes();
            panic!(
                "{dtype}: byte {i} (block {block}, offset {}) is {:#04x}, gguf-py wrote {:#04x}",
                i % dtype.block_bytes(),
                ours[i],
                expected[i]
            );
        }
        assert_eq!(ours.len(), expected.len(), "{dtype}: length");
        let values = quant::dequantize_to_vec(dtype, &ours).unwrap();
        assert_bits_equal(&format!("{dtype} round trip"), &values, &expected_values);
    }
}
