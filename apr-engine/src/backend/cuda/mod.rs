//! The CUDA backend, on cudarc with the driver and NVRTC loaded at run time:
//! the binary builds and runs without a CUDA toolkit, and where there is no
//! driver, device or NVRTC, `cuda` is unavailable with the reason said.
//! Kernels (`kernels.cu`) are compiled for the device's architecture once per
//! machine (`compile.rs`). Weights are uploaded once, in their file dtype; activations,
//! the KV cache and the workspace live in device memory, and values reach the
//! host only through `read`/`download`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

mod compile;

use super::{AttentionShape, Backend, HostMatrix, RopeStyle, SeqSpan};
use crate::dtype::DType;
use crate::error::{Error, Result};

const SOURCE: &str = include_str!("kernels.cu");

/// The weight dtypes the kernels read.
pub fn supported_dtypes() -> impl Iterator<Item = DType> {
    KERNEL_DTYPES.iter().map(|(dtype, _)| *dtype)
}

/// Dtypes with a kernel, and the suffix of their kernels' names.
const KERNEL_DTYPES: [(DType, &str); 11] = [
    (DType::F32, "f32"),
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
    (DType::Q4_0, "q4_0"),
    (DType::Q4_1, "q4_1"),
    (DType::Q5_0, "q5_0"),
    (DType::Q5_1, "q5_1"),
    (DType::Q8_0, "q8_0"),
    (DType::Q4_K, "q4_k"),
    (DType::Q5_K, "q5_k"),
    (DType::Q6_K, "q6_k"),
];

/// Tokens from which a matrix product runs as tiles (each weight chunk
/// dequantized once for 64 tokens) instead of one warp per row.
const TILED_FROM_TOKENS: usize = 16;

/// Shared memory the attention kernel may use for one row of scores (the default limit).
const ATTENTION_SCORES_BYTES: usize = 48 * 1024 - 256;

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    /// "NVIDIA H200 (sm_90)".
    pub device: String,
}

/// A weight matrix on the device, in its file dtype, with the kernels that read it.
pub struct CudaMatrix {
    bytes: CudaSlice<u8>,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    matvec: CudaFunction,
    tiled: CudaFunction,
    embed: CudaFunction,
}

fn device_error(e: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "cuda", message: e.to_string() }
}

fn int(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| device_error(format!("{v} does not fit a kernel's 32-bit argument")))
}

/// Why CUDA cannot run here (checked once per process), or `None`.
pub fn unavailable() -> Option<String> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE.get_or_init(|| probe().err()).clone()
}

fn probe() -> std::result::Result<(), String> {
    // SAFETY: only looks for the shared libraries by name.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC (libnvrtc.so) to compile the kernels with".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("the CUDA driver did not start: {e}"))?;
    if count < 1 {
        return Err("no CUDA device".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("CUDA device 0: {e}"))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| e.to_string())?;
    if major < 7 {
        return Err(format!("compute capability {major}.{minor} is below 7.0"));
    }
    Ok(())
}

/// The NVRTC target of a compute capability: Hopper's own instructions on sm_90.
fn arch(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, 0) => "sm_90a",
        (8, 9) => "sm_89",
        (8, 6) => "sm_86",
        (8, 0) => "sm_80",
        (7, 5) => "sm_75",
        (7, _) => "sm_70",
        _ => "sm_80",
    }
}

impl Cuda {
    /// Device 0, its kernels compiled for its architecture.
    pub fn new() -> Result<Cuda> {
        if let Some(why) = unavailable() {
            return Err(Error::Unsupported(format!("backend cuda: {why}")));
        }
        let ctx = CudaContext::new(0).map_err(device_error)?;
        let (major, minor) = ctx.compute_capability().map_err(device_error)?;
        let name = ctx.name().map_err(device_error)?;
        let module = ctx.load_module(compile::kernels(arch(major, minor))?).map_err(device_error)?;
        let mut names: Vec<String> =
            ["rms_norm", "rope", "attention", "silu_mul", "add", "add_bias", "gather_rows"].map(String::from).into();
        for (_, suffix) in KERNEL_DTYPES {
            names.push(format!("matvec_{suffix}"));
            names.push(format!("matmul_tiled_{suffix}"));
            names.push(format!("embed_{suffix}"));
        }
        let functions = names
            .into_iter()
            .map(|name| Ok((name.clone(), module.load_function(&name).map_err(device_error)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let device = format!("{name} (sm_{major}{minor})");
        Ok(Cuda { stream: ctx.default_stream(), ctx, functions, device })
    }

    fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| device_error(format!("no kernel {name}")))
    }

    fn suffix(dtype: DType) -> Result<&'static str> {
        KERNEL_DTYPES
            .iter()
            .find(|(d, _)| *d == dtype)
            .map(|(_, s)| *s)
            .ok_or_else(|| Error::Unsupported(format!("backend cuda: no kernel for {dtype} weights yet")))
    }
}

/// One thread per value, 256 a block.
fn elementwise_config(len: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (len.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn rows_config(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

impl Backend for Cuda {
    type Buffer = CudaSlice<f32>;
    type Matrix = CudaMatrix;

    fn name(&self) -> &'static str {
        "cuda"
    }

    /// The device and its memory in use (by this process and any other).
    fn description(&self) -> String {
        let gib = |bytes: usize| bytes as f64 / (1u64 << 30) as f64;
        match self.ctx.mem_get_info() {
            Ok((free, total)) => {
                format!("cuda: {}, {:.2} of {:.1} GiB in use", self.device, gib(total - free), gib(total))
            }
            Err(_) => format!("cuda: {}", self.device),
        }
    }

    fn kernel_name(&self, dtype: DType) -> &'static str {
        match Cuda::suffix(dtype) {
            Ok(_) => "cuda: dequant in registers × f32 (warp per row; 64×64 tiles from 16 tokens)",
            Err(_) => "cuda: unsupported",
        }
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream.alloc_zeros::<f32>(len.max(1)).map_err(device_error)
    }

    fn upload(&self, values: &[f32]) -> Result<CudaSlice<f32>> {
        if values.is_empty() {
            return self.alloc(1);
        }
        self.stream.clone_htod(values).map_err(device_error)
    }

    fn write(&self, buffer: &mut CudaSlice<f32>, values: &[f32]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_htod(values, &mut buffer.slice_mut(0..values.len())).map_err(device_error)
    }

    fn read<'a>(&self, buffer: &'a CudaSlice<f32>, len: usize) -> Result<Cow<'a, [f32]>> {
        let mut host = vec![0.0f32; len];
        if len > 0 {
            self.stream.memcpy_dtoh(&buffer.slice(0..len), &mut host).map_err(device_error)?;
        }
        Ok(Cow::Owned(host))
    }

    fn prepare(&self, matrix: &HostMatrix) -> Result<CudaMatrix> {
        let suffix =
            Cuda::suffix(matrix.dtype).map_err(|e| Error::Unsupported(format!("tensor {}: {e}", matrix.name)))?;
        let view = matrix.view();
        let bytes = self.stream.clone_htod(view.bytes).map_err(device_error)?;
        Ok(CudaMatrix {
            bytes,
            rows: view.rows,
            cols: view.cols,
            row_bytes: view.row_bytes(),
            matvec: self.function(&format!("matvec_{suffix}"))?.clone(),
            tiled: self.function(&format!("matmul_tiled_{suffix}"))?.clone(),
            embed: self.function(&format!("embed_{suffix}"))?.clone(),
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(device_error)
    }

    fn embed(&self, table: &CudaMatrix, tokens: &[u32], out: &mut CudaSlice<f32>) -> Result<()> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= table.rows) {
            return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary ({})", table.rows)));
        }
        let ids = self.stream.clone_htod(tokens).map_err(device_error)?;
        let (row_bytes, cols) = (int(table.row_bytes)?, int(table.cols)?);
        let mut launch = self.stream.launch_builder(&table.embed);
        launch.arg(&table.bytes).arg(&row_bytes).arg(&cols).arg(&ids).arg(out);
        // SAFETY: the kernel reads `tokens.len()` ids below `rows` and writes that many rows of `cols`.
        unsafe { launch.launch(rows_config(tokens.len(), 128)) }.map_err(device_error)?;
        Ok(())
    }

    fn matmul(
        &self,
        ws: &[&CudaMatrix],
        x: &CudaSlice<f32>,
        n_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let tiled = n_rows >= TILED_FROM_TOKENS;
            let (row_bytes, rows, cols, n) = (int(w.row_bytes)?, int(w.rows)?, int(w.cols)?, int(n_rows)?);
            let mut launch = self.stream.launch_builder(if tiled { &w.tiled } else { &w.matvec });
            launch.arg(&w.bytes).arg(&row_bytes).arg(&rows).arg(&cols).arg(x).arg(&n).arg(&mut **out);
            // Tiles of 64 rows × 64 tokens; else eight warps a block, one row each.
            let grid = if tiled {
                (w.rows.div_ceil(64) as u32, n_rows.div_ceil(64) as u32, 1)
            } else {
                (w.rows.div_ceil(8) as u32, 1, 1)
            };
            let config = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: x holds n_rows × cols values and out n_rows × rows.
            unsafe { launch.launch(config) }.map_err(device_error)?;
        }
        Ok(())
    }

    fn add_bias(&self, x: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, bias_len: usize, n_rows: usize) -> Result<()> {
        let config = elementwise_config(bias_len * n_rows);
        let (width, n) = (int(bias_len)?, int(n_rows)?);
        let mut launch = self.stream.launch_builder(self.function("add_bias")?);
        launch.arg(x).arg(bias).arg(&width).arg(&n);
        // SAFETY: x holds n_rows × bias_len values.
        unsafe { launch.launch(config) }.map_err(device_error)?;
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        width: usize,
        eps: f32,
        n_rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let w = int(width)?;
        let mut launch = self.stream.launch_builder(self.function("rms_norm")?);
        launch.arg(x).arg(weight).arg(&w).arg(&eps).arg(out);
        // SAFETY: x and out hold n_rows × width values.
        unsafe { launch.launch(rows_config(n_rows, 256)) }.map_err(device_error)?;
        Ok(())
    }

    fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        spans: &[SeqSpan],
        heads: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        let halves = i32::from(style == RopeStyle::Halves);
        let (heads, head_dim) = (int(heads)?, int(head_dim)?);
        for span in spans {
            let (first_row, start_pos) = (int(span.first_row)?, int(span.start_pos)?);
            let mut launch = self.stream.launch_builder(self.function("rope")?);
            launch.arg(&mut *x).arg(&first_row).arg(&start_pos).arg(&heads).arg(&head_dim).arg(&base).arg(&halves);
            // SAFETY: the span's rows are inside x.
            unsafe { launch.launch(rows_config(span.n_tokens, 128)) }.map_err(device_error)?;
        }
        Ok(())
    }

    fn kv_store(
        &self,
        cache: &mut CudaSlice<f32>,
        position: usize,
        src: &CudaSlice<f32>,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        let from = src.slice(first_row * width..(first_row + n) * width);
        let mut to = cache.slice_mut(position * width..(position + n) * width);
        self.stream.memcpy_dtod(&from, &mut to).map_err(device_error)
    }

    fn zero(&self, buffer: &mut CudaSlice<f32>, start: usize, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.stream.memset_zeros(&mut buffer.slice_mut(start..start + len)).map_err(device_error)
    }

    fn attention(
        &self,
        q: &CudaSlice<f32>,
        keys: &CudaSlice<f32>,
        values: &CudaSlice<f32>,
        s: AttentionShape,
        first_row: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let positions = s.start_pos + s.n_tokens;
        let scores = positions * std::mem::size_of::<f32>();
        if scores > ATTENTION_SCORES_BYTES {
            return Err(device_error(format!(
                "attention over {positions} positions: this kernel holds at most {} (a split over the KV length is to come)",
                ATTENTION_SCORES_BYTES / 4
            )));
        }
        let (row, start, heads, kv_heads, dim) =
            (int(first_row)?, int(s.start_pos)?, int(s.heads)?, int(s.kv_heads)?, int(s.head_dim)?);
        let mut launch = self.stream.launch_builder(self.function("attention")?);
        launch.arg(q).arg(keys).arg(values).arg(&row).arg(&start).arg(&heads).arg(&kv_heads).arg(&dim).arg(out);
        let config = LaunchConfig {
            grid_dim: (s.n_tokens as u32, s.heads as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: scores as u32,
        };
        // SAFETY: q/out hold the span's rows; keys/values hold `positions` rows of kv_heads × head_dim.
        unsafe { launch.launch(config) }.map_err(device_error)?;
        Ok(())
    }

    fn silu_mul(&self, gate: &mut CudaSlice<f32>, up: &CudaSlice<f32>, len: usize) -> Result<()> {
        let config = elementwise_config(len);
        let n = int(len)?;
        let mut launch = self.stream.launch_builder(self.function("silu_mul")?);
        launch.arg(gate).arg(up).arg(&n);
        // SAFETY: both hold at least len values.
        unsafe { launch.launch(config) }.map_err(device_error)?;
        Ok(())
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        let config = elementwise_config(len);
        let n = int(len)?;
        let mut launch = self.stream.launch_builder(self.function("add")?);
        launch.arg(x).arg(y).arg(&n);
        // SAFETY: both hold at least len values.
        unsafe { launch.launch(config) }.map_err(device_error)?;
        Ok(())
    }

    fn gather_rows(&self, x: &CudaSlice<f32>, rows: &[usize], width: usize, out: &mut CudaSlice<f32>) -> Result<()> {
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let ids = self.stream.clone_htod(&ids).map_err(device_error)?;
        let w = int(width)?;
        let mut launch = self.stream.launch_builder(self.function("gather_rows")?);
        launch.arg(x).arg(&ids).arg(&w).arg(out);
        // SAFETY: every row index is inside x; out holds rows.len() rows.
        unsafe { launch.launch(rows_config(rows.len(), 256)) }.map_err(device_error)?;
        Ok(())
    }
}
