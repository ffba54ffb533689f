//! Conversions on the real 0.5B model: GGUF -> APR -> GGUF is lossless, and
//! GGUF -> SafeTensors F32 -> APR keeps every value and the tokenizer.

use std::path::Path;

use apr_engine::container::{FormatKind, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::testing::models::QWEN_0_5B;
use apr_engine::{quant, DType};

fn convert_to(input: &ModelFile, output: &Path, to: FormatKind, dtype: DTypeChoice) -> ModelFile {
    convert(input, output, ConvertOptions { to, dtype, force: false }, &mut |_| {}).expect("conversion succeeds");
    ModelFile::open(output).expect("converted file opens")
}

fn assert_same_tensor_bytes(a: &ModelFile, b: &ModelFile) {
    assert_eq!(a.tensors().len(), b.tensors().len());
    for ta in a.tensors() {
        let vb = b.tensor(&ta.name).unwrap_or_else(|| panic!("{} missing after round trip", ta.name));
        assert_eq!((ta.dtype, &ta.shape), (vb.dtype(), &vb.info.shape), "{}", ta.name);
        assert!(a.view(ta).bytes == vb.bytes, "{}: bytes differ", ta.name);
    }
}

#[test]
fn gguf_to_apr_to_gguf_is_lossless() {
    let original = ModelFile::open(QWEN_0_5B.require()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let apr = convert_to(&original, &dir.path().join("m.apr"), FormatKind::Apr, DTypeChoice::Keep);
    assert_same_tensor_bytes(&original, &apr);
    assert!(apr.metadata().get("tokenizer.ggml.tokens").is_some(), "APR carries the tokenizer");
    let back = convert_to(&apr, &dir.path().join("back.gguf"), FormatKind::Gguf, DTypeChoice::Keep);
    assert_same_tensor_bytes(&original, &back);
    assert_eq!(original.metadata(), back.metadata(), "metadata identical after GGUF -> APR -> GGUF");
}

#[test]
fn gguf_to_safetensors_f32_to_apr_keeps_values_and_tokenizer() {
    let original = ModelFile::open(QWEN_0_5B.require()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = convert_to(&original, &dir.path().join("model.safetensors"), FormatKind::SafeTensors, DTypeChoice::Keep);
    for ta in original.tensors() {
        let vb = st.tensor(&ta.name).unwrap_or_else(|| panic!("{} missing in SafeTensors", ta.name));
        assert_eq!(vb.dtype(), DType::F32, "{}", ta.name);
        let expected = quant::dequantize_to_vec(ta.dtype, original.view(ta).bytes).unwrap();
        let expected: Vec<u8> = expected.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(expected == vb.bytes, "{}: SafeTensors values differ from the dequantized GGUF", ta.name);
    }
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "qwen2.block_count"] {
        assert_eq!(
            original.metadata().get(key),
            st.metadata().get(key),
            "{key} travels through config.json/tokenizer.json"
        );
    }
    python_package_reads_what_gguf_py_dequantizes(&dir.path().join("model.safetensors"), &original.path);
    let apr = convert_to(&st, &dir.path().join("m.apr"), FormatKind::Apr, DTypeChoice::Keep);
    assert_same_tensor_bytes(&st, &apr);
    assert_eq!(st.metadata().get("tokenizer.ggml.tokens"), apr.metadata().get("tokenizer.ggml.tokens"));
}

#[test]
fn existing_output_is_not_overwritten_without_force() {
    let original = ModelFile::open(QWEN_0_5B.require()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.apr");
    std::fs::write(&out, b"keep me").unwrap();
    let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::Keep, force: false };
    let err = convert(&original, &out, options, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

/// The `safetensors` Python package loads our export, and every tensor holds
/// the values gguf-py dequantizes from the original (scripts/safetensors_readback.py).
fn python_package_reads_what_gguf_py_dequantizes(exported: &Path, original: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/safetensors_readback.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("--model")
        .arg(exported)
        .arg("--gguf")
        .arg(original)
        .output()
        .expect("python3 runs (scripts/test.sh installs gguf, numpy and safetensors)");
    assert!(
        output.status.success(),
        "safetensors/gguf-py readback failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
}
