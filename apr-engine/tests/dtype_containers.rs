//! Every DType's id survives every container that can hold it; SafeTensors,
//! which has no block dtypes, refuses them with an error that names the dtype.

use apr_engine::container::{
    apr, gguf, safetensors, MemorySource, MetaValue, Metadata, ModelFile, TensorSpec, WriteOptions,
};
use apr_engine::DType;

fn one_tensor_per_dtype(dtypes: &[DType]) -> MemorySource {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("test".into()));
    let mut source = MemorySource::new(meta);
    for &dtype in dtypes {
        let shape = vec![2, 256];
        let bytes = vec![0u8; dtype.byte_size(&shape).unwrap() as usize];
        source
            .push(TensorSpec { name: format!("t.{}.weight", dtype.name().to_lowercase()), dtype, shape }, bytes)
            .unwrap();
    }
    source
}

fn assert_dtypes_survive(path: &std::path::Path, dtypes: &[DType]) {
    let model = ModelFile::open(path).unwrap();
    for &dtype in dtypes {
        let name = format!("t.{}.weight", dtype.name().to_lowercase());
        let t = model.tensor(&name).unwrap_or_else(|| panic!("{name} missing in {}", path.display()));
        assert_eq!(t.dtype(), dtype, "{name} in {}", path.display());
        assert_eq!(t.dtype().id(), dtype.id());
    }
}

#[test]
fn every_dtype_round_trips_through_gguf_and_apr() {
    let dir = tempfile::tempdir().unwrap();
    let source = one_tensor_per_dtype(DType::ALL);
    let gguf_path = dir.path().join("all.gguf");
    gguf::write(&gguf_path, &source, WriteOptions::default(), &mut |_| {}).unwrap();
    assert_dtypes_survive(&gguf_path, DType::ALL);
    let apr_path = dir.path().join("all.apr");
    apr::write(&apr_path, &source, WriteOptions::default(), &mut |_| {}).unwrap();
    assert_dtypes_survive(&apr_path, DType::ALL);
}

#[test]
fn plain_dtypes_round_trip_through_safetensors_and_blocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, blocks): (Vec<DType>, Vec<DType>) = DType::ALL.iter().partition(|d| !d.is_quantized());
    let path = dir.path().join("model.safetensors");
    safetensors::write(&path, &one_tensor_per_dtype(&plain), WriteOptions::default(), &mut |_| {}).unwrap();
    assert_dtypes_survive(&path, &plain);
    for dtype in blocks {
        let out = dir.path().join(format!("{dtype}.safetensors"));
        let err = safetensors::write(&out, &one_tensor_per_dtype(&[dtype]), WriteOptions::default(), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains(dtype.name()), "error for {dtype} names it: {err}");
        assert!(!out.exists(), "no partial file left for {dtype}");
    }
}
