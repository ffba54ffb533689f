//! The CUDA backend, on cudarc with the driver and NVRTC loaded at run time:
//! the binary builds and runs without a CUDA toolkit, and where there is no
//! driver, device or NVRTC, `cuda` is unavailable with the reason said.
//! Kernels (`kernels.cu`) are compiled for the device's architecture once per
//! machine (`compile.rs`). Weights are uploaded once, in their file dtype; activations,
//! the KV cache and the workspace live in device memory, and values reach the
//! host only through `read`/`download`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

mod compile;
mod graphs;
mod tensor_cores;

use super::{AttentionShape, Backend, HostMatrix, RopeStyle, StepKey};
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

/// Rows of a block of the decode products, a warp each (`WARP_ROWS` in kernels.cu).
const MATVEC_ROWS_PER_BLOCK: usize = 8;

/// Tokens from which a matrix product runs as tiles (each weight chunk
/// dequantized once for 64 tokens) instead of one block per row.
const TILED_FROM_TOKENS: usize = 16;

/// The largest head the attention kernel holds (in registers, 32 lanes a warp).
const MAX_HEAD_DIM: usize = 256;

/// Threads of an attention block: 4 warps (`ATTENTION_WARPS` in kernels.cu).
const ATTENTION_THREADS: u32 = 128;

/// A one-token query's cached positions are split over at most this many
/// blocks per head (flash-decoding), one split per this many positions of
/// the cache's capacity: fixed per cache, so a recorded decode step stays valid.
const MAX_ATTENTION_SPLITS: usize = 32;
const POSITIONS_PER_SPLIT: usize = 256;

pub struct Cuda {
    ctx: Arc<CudaContext>,
    /// Every operation runs in order on this one stream (not the legacy
    /// default stream, which cannot be recorded into a graph).
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    /// The split attention's partial results and counts of finished splits.
    attention_splits: Mutex<AttentionSplits>,
    /// A decode product's input in 8 bit, sized for the largest seen.
    quantized_input: Mutex<QuantizedInput>,
    steps: graphs::Steps,
    /// Prompt-sized products on tensor cores, or why not (the tiled kernels serve then).
    tensor_cores: std::result::Result<tensor_cores::TensorCores, String>,
    /// "NVIDIA H200 (sm_90)".
    pub device: String,
}

/// A weight matrix on the device, in its file dtype, with the kernels that read it.
pub struct CudaMatrix {
    bytes: CudaSlice<u8>,
    /// The GGML type id, as the fused kernel switches on it.
    dtype: i32,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    tiled: CudaFunction,
    embed: CudaFunction,
    dequant_bf16: CudaFunction,
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
        // SAFETY: one stream does all the work, in order, so cudarc need not
        // order streams with events (an event inside a graph recording is not wanted).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(device_error)?;
        let name = ctx.name().map_err(device_error)?;
        let module = ctx.load_module(compile::kernels(arch(major, minor))?).map_err(device_error)?;
        let mut names: Vec<String> = [
            "matvec_fused",
            "quantize_q8",
            "f32_to_bf16",
            "rms_norm",
            "rope",
            "kv_store",
            "attention",
            "silu_mul",
            "add",
            "add_bias",
            "gather_rows",
        ]
        .map(String::from)
        .into();
        for (_, suffix) in KERNEL_DTYPES {
            names.push(format!("matmul_tiled_{suffix}"));
            names.push(format!("embed_{suffix}"));
            names.push(format!("dequant_bf16_{suffix}"));
        }
        let functions = names
            .into_iter()
            .map(|name| Ok((name.clone(), module.load_function(&name).map_err(device_error)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let device = format!("{name} (sm_{major}{minor})");
        let stream = ctx.new_stream().map_err(device_error)?;
        let attention_splits = Mutex::new(AttentionSplits::new(&stream, 1, 32)?);
        let quantized_input = Mutex::new(QuantizedInput::new(&stream, 32)?);
        let tensor_cores = tensor_cores::TensorCores::new(&stream);
        Ok(Cuda {
            stream,
            ctx,
            functions,
            attention_splits,
            quantized_input,
            steps: graphs::Steps::default(),
            tensor_cores,
            device,
        })
    }

    /// This backend with prompt-sized products on the tiled kernels instead
    /// of tensor cores (to compare the two).
    pub fn without_tensor_cores(mut self) -> Cuda {
        self.tensor_cores = Err("turned off".into());
        self
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

/// One matrix of a fused product: where its rows go and the bias they get.
struct Fused<'a> {
    w: &'a CudaMatrix,
    out: &'a mut CudaSlice<f32>,
    bias: Option<&'a CudaSlice<f32>>,
}

/// What `matvec_fused` does after the products (its `mode` argument).
#[derive(Clone, Copy)]
enum FusedMode {
    Store = 0,
    Accumulate = 1,
    SiluGate = 2,
}

/// A decode product's input in 8 bit: per 32 values, their int8 values, scale and sum.
struct QuantizedInput {
    values: CudaSlice<i8>,
    scales: CudaSlice<f32>,
    sums: CudaSlice<f32>,
    /// The f32 buffer (device address, length) an RMSNorm just wrote and
    /// quantized here as well: the next product over it, which in the
    /// forward pass follows the norm directly, skips quantizing it again.
    /// Taken by that product, so it is never trusted twice.
    normed: Option<(u64, usize)>,
}

impl QuantizedInput {
    fn new(stream: &Arc<CudaStream>, len: usize) -> Result<QuantizedInput> {
        Ok(QuantizedInput {
            values: stream.alloc_zeros::<i8>(len).map_err(device_error)?,
            scales: stream.alloc_zeros::<f32>(len / 32).map_err(device_error)?,
            sums: stream.alloc_zeros::<f32>(len / 32).map_err(device_error)?,
            normed: None,
        })
    }
}

/// Weights the decode products dot with the f32 input instead of its 8-bit form.
fn is_float(dtype: i32) -> bool {
    [DType::F32, DType::F16, DType::BF16].iter().any(|&d| d as i32 == dtype)
}

impl Cuda {
    /// One launch for up to three matrices over `x` (fewer than
    /// `TILED_FROM_TOKENS` tokens): a warp per row of each, or per row of
    /// gate and up together for `SiluGate`. Quantized weights are dotted with
    /// `x` in 8 bit, quantized here first.
    fn matvec_fused(
        &self,
        mut parts: Vec<Fused<'_>>,
        x: &CudaSlice<f32>,
        n_rows: usize,
        mode: FusedMode,
    ) -> Result<()> {
        let cols = parts[0].w.cols;
        if parts.iter().any(|p| p.w.cols != cols) {
            return Err(device_error("a fused product's matrices must share their input width"));
        }
        let mut input = self.quantized_input.lock().unwrap_or_else(|p| p.into_inner());
        let already = input.normed.take() == Some((address(&self.stream, x), n_rows * cols));
        if !already && parts.iter().any(|p| !is_float(p.w.dtype)) {
            self.quantize(x, n_rows * cols, &mut input)?;
        }
        let rows: usize = match mode {
            FusedMode::SiluGate => parts[0].w.rows,
            _ => parts.iter().map(|p| p.w.rows).sum(),
        };
        let (cols, n, mode) = (int(cols)?, int(n_rows)?, mode as i32);
        let null = 0u64;
        let zero = 0i32;
        let shapes: Vec<(i32, i32)> =
            parts.iter().map(|p| Ok((int(p.w.row_bytes)?, int(p.w.rows)?))).collect::<Result<_>>()?;
        let mut launch = self.stream.launch_builder(self.function("matvec_fused")?);
        let unused = 3 - parts.len();
        for (part, (row_bytes, rows)) in parts.iter_mut().zip(&shapes) {
            launch.arg(&part.w.bytes).arg(row_bytes).arg(rows).arg(&part.w.dtype).arg(&mut *part.out);
            match part.bias {
                Some(bias) => launch.arg(bias),
                None => launch.arg(&null),
            };
        }
        for _ in 0..unused {
            launch.arg(&null).arg(&zero).arg(&zero).arg(&zero).arg(&null).arg(&null);
        }
        launch.arg(&cols).arg(x).arg(&input.values).arg(&input.scales).arg(&input.sums).arg(&n).arg(&mode);
        let blocks = rows.div_ceil(MATVEC_ROWS_PER_BLOCK);
        let config = rows_config(blocks, 32 * MATVEC_ROWS_PER_BLOCK as u32);
        // SAFETY: x (and its 8-bit form) hold n_rows × cols values; each out n_rows × its rows; a bias its rows.
        unsafe { launch.launch(config) }.map_err(device_error)?;
        Ok(())
    }

    /// `x` (`len` values, a multiple of 32) into `input`'s 8-bit form.
    fn quantize(&self, x: &CudaSlice<f32>, len: usize, input: &mut QuantizedInput) -> Result<()> {
        self.make_room(input, len)?;
        let n = int(len)?;
        let mut launch = self.stream.launch_builder(self.function("quantize_q8")?);
        launch.arg(x).arg(&n).arg(&mut input.values).arg(&mut input.scales).arg(&mut input.sums);
        // SAFETY: x holds len values; the outputs len values and len / 32 scales and sums.
        unsafe { launch.launch(elementwise_config(len)) }.map_err(device_error)?;
        Ok(())
    }

    /// Grows `input` to hold `len` values if it is smaller.
    fn make_room(&self, input: &mut QuantizedInput, len: usize) -> Result<()> {
        if input.values.len() < len {
            // A reallocation would leave recorded steps pointing at freed memory.
            self.steps.check_not_recording("the decode products' 8-bit input")?;
            self.steps.forget_all();
            *input = QuantizedInput::new(&self.stream, len)?;
        }
        Ok(())
    }
}

/// The device address of a buffer (to recognise it again).
fn address<T>(stream: &Arc<CudaStream>, buffer: &CudaSlice<T>) -> u64 {
    let (ptr, _sync) = buffer.device_ptr(stream);
    ptr
}

/// The split attention's scratch: per (head, split) the max, sum and
/// weighted values, and per head how many splits have finished.
struct AttentionSplits {
    partials: CudaSlice<f32>,
    done: CudaSlice<u32>,
}

impl AttentionSplits {
    fn new(stream: &Arc<CudaStream>, heads: usize, head_dim: usize) -> Result<AttentionSplits> {
        Ok(AttentionSplits {
            partials: stream.alloc_zeros::<f32>(heads * MAX_ATTENTION_SPLITS * (head_dim + 2)).map_err(device_error)?,
            done: stream.alloc_zeros::<u32>(heads).map_err(device_error)?,
        })
    }
}

impl Cuda {
    /// RoPE of `heads` heads of each row of `x` and, given, `heads2` of `x2`, in one launch.
    #[allow(clippy::too_many_arguments)]
    fn launch_rope(
        &self,
        x: &mut CudaSlice<f32>,
        heads: usize,
        second: Option<(&mut CudaSlice<f32>, usize)>,
        positions: &CudaSlice<u32>,
        n_rows: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        let halves = i32::from(style == RopeStyle::Halves);
        let (heads, head_dim, null) = (int(heads)?, int(head_dim)?, 0u64);
        let mut launch = self.stream.launch_builder(self.function("rope")?);
        launch.arg(x).arg(&heads);
        let heads2 = match second {
            Some((x2, heads2)) => {
                launch.arg(x2);
                int(heads2)?
            }
            None => {
                launch.arg(&null);
                0
            }
        };
        launch.arg(&heads2).arg(positions).arg(&head_dim).arg(&base).arg(&halves);
        // A thread per pair index of a head, as many heads at once as fit 256 threads.
        let threads = (head_dim as u32 / 2).clamp(256, 1024);
        // SAFETY: x (and x2) hold n_rows rows of their heads × head_dim; positions n_rows values.
        unsafe { launch.launch(rows_config(n_rows, threads)) }.map_err(device_error)?;
        Ok(())
    }

    /// Rows `first_row..first_row + n` of `src` (and of a second source) into
    /// their positions' rows of the cache (and of a second cache), in one launch.
    fn launch_kv_store(
        &self,
        (cache, src): (&mut CudaSlice<f32>, &CudaSlice<f32>),
        second: Option<(&mut CudaSlice<f32>, &CudaSlice<f32>)>,
        positions: &CudaSlice<u32>,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        let (first, w, null) = (int(first_row)?, int(width)?, 0u64);
        let mut launch = self.stream.launch_builder(self.function("kv_store")?);
        launch.arg(cache).arg(src);
        match second {
            Some((cache2, src2)) => launch.arg(cache2).arg(src2),
            None => launch.arg(&null).arg(&null),
        };
        launch.arg(positions).arg(&first).arg(&w);
        // SAFETY: the sources hold the n rows from first_row; each position is below the
        // caches' capacity (checked by the forward pass).
        unsafe { launch.launch(rows_config(n, 256)) }.map_err(device_error)?;
        Ok(())
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
    type Indices = CudaSlice<u32>;
    type Matrix = CudaMatrix;

    fn name(&self) -> &'static str {
        "cuda"
    }

    /// The device and its memory in use (by this process and any other).
    fn description(&self) -> String {
        let gib = |bytes: usize| bytes as f64 / (1u64 << 30) as f64;
        let prompts = match &self.tensor_cores {
            Ok(_) => "prompts on tensor cores".to_string(),
            Err(why) => format!("prompts on CUDA cores ({why})"),
        };
        match self.ctx.mem_get_info() {
            Ok((free, total)) => {
                format!("cuda: {}, {:.2} of {:.1} GiB in use, {prompts}", self.device, gib(total - free), gib(total))
            }
            Err(_) => format!("cuda: {}, {prompts}", self.device),
        }
    }

    fn kernel_name(&self, dtype: DType) -> &'static str {
        match (Cuda::suffix(dtype), &self.tensor_cores) {
            (Err(_), _) => "cuda: unsupported",
            (Ok(_), Ok(_)) => {
                "cuda: int8 dot products, a warp per row (input in 8 bit); from 16 tokens bf16 tiles on tensor cores (cuBLAS)"
            }
            (Ok(_), Err(_)) => "cuda: int8 dot products, a warp per row (input in 8 bit); 64×64 f32 tiles from 16 tokens",
        }
    }

    fn device_memory_in_use(&self) -> Option<u64> {
        let (free, total) = self.ctx.mem_get_info().ok()?;
        Some((total - free) as u64)
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
            dtype: matrix.dtype as i32,
            rows: view.rows,
            cols: view.cols,
            row_bytes: view.row_bytes(),
            tiled: self.function(&format!("matmul_tiled_{suffix}"))?.clone(),
            embed: self.function(&format!("embed_{suffix}"))?.clone(),
            dequant_bf16: self.function(&format!("dequant_bf16_{suffix}"))?.clone(),
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(device_error)
    }

    /// The device's own clock: events recorded on the stream around the work.
    fn time(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<std::time::Duration> {
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(timing).map_err(device_error)?;
        let end = self.ctx.new_event(timing).map_err(device_error)?;
        start.record(&self.stream).map_err(device_error)?;
        work()?;
        end.record(&self.stream).map_err(device_error)?;
        end.synchronize().map_err(device_error)?;
        let ms = start.elapsed_ms(&end).map_err(device_error)?;
        Ok(std::time::Duration::from_secs_f64(f64::from(ms) / 1e3))
    }

    fn alloc_indices(&self, len: usize) -> Result<CudaSlice<u32>> {
        self.stream.alloc_zeros::<u32>(len.max(1)).map_err(device_error)
    }

    fn write_indices(&self, indices: &mut CudaSlice<u32>, values: &[u32]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_htod(values, &mut indices.slice_mut(0..values.len())).map_err(device_error)
    }

    fn run_step(&self, key: Option<&StepKey>, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.steps.run(&self.stream, key, work)
    }

    fn embed(&self, table: &CudaMatrix, tokens: &CudaSlice<u32>, n: usize, out: &mut CudaSlice<f32>) -> Result<()> {
        let (row_bytes, cols) = (int(table.row_bytes)?, int(table.cols)?);
        let mut launch = self.stream.launch_builder(&table.embed);
        launch.arg(&table.bytes).arg(&row_bytes).arg(&cols).arg(tokens).arg(out);
        // SAFETY: the kernel reads `n` ids, checked below `rows` by the forward pass, and writes n rows of `cols`.
        unsafe { launch.launch(rows_config(n, 128)) }.map_err(device_error)?;
        Ok(())
    }

    fn matmul(
        &self,
        ws: &[&CudaMatrix],
        x: &CudaSlice<f32>,
        n_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        if let (true, Ok(tensor_cores)) = (n_rows >= TILED_FROM_TOKENS, &self.tensor_cores) {
            return tensor_cores.matmul(&self.stream, self.function("f32_to_bf16")?, ws, x, n_rows, outs);
        }
        if n_rows < TILED_FROM_TOKENS {
            let mut outs = outs.iter_mut();
            for group in ws.chunks(3) {
                let parts = group.iter().zip(outs.by_ref()).map(|(w, out)| Fused { w, out, bias: None }).collect();
                self.matvec_fused(parts, x, n_rows, FusedMode::Store)?;
            }
            return Ok(());
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (row_bytes, rows, cols, n) = (int(w.row_bytes)?, int(w.rows)?, int(w.cols)?, int(n_rows)?);
            let mut launch = self.stream.launch_builder(&w.tiled);
            launch.arg(&w.bytes).arg(&row_bytes).arg(&rows).arg(&cols).arg(x).arg(&n).arg(&mut **out);
            // Tiles of 64 rows × 64 tokens.
            let grid = (w.rows.div_ceil(64) as u32, n_rows.div_ceil(64) as u32, 1);
            let config = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: x holds n_rows × cols values and out n_rows × rows.
            unsafe { launch.launch(config) }.map_err(device_error)?;
        }
        Ok(())
    }

    fn matmul_bias(
        &self,
        ws: &[&CudaMatrix],
        biases: &[Option<&CudaSlice<f32>>],
        widths: &[usize],
        x: &CudaSlice<f32>,
        n_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        if n_rows >= TILED_FROM_TOKENS || ws.len() > 3 {
            self.matmul(ws, x, n_rows, outs)?;
            for ((out, bias), &width) in outs.iter_mut().zip(biases).zip(widths) {
                if let Some(bias) = bias {
                    self.add_bias(out, bias, width, n_rows)?;
                }
            }
            return Ok(());
        }
        let parts: Vec<Fused> =
            ws.iter().zip(outs.iter_mut()).zip(biases).map(|((w, out), bias)| Fused { w, out, bias: *bias }).collect();
        self.matvec_fused(parts, x, n_rows, FusedMode::Store)
    }

    fn matmul_add(
        &self,
        w: &CudaMatrix,
        x: &CudaSlice<f32>,
        n_rows: usize,
        width: usize,
        scratch: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if n_rows >= TILED_FROM_TOKENS {
            self.matmul(&[w], x, n_rows, &mut [&mut *scratch])?;
            return self.add(out, scratch, n_rows * width);
        }
        self.matvec_fused(vec![Fused { w, out, bias: None }], x, n_rows, FusedMode::Accumulate)
    }

    fn matmul_silu_gate(
        &self,
        gate: &CudaMatrix,
        up: &CudaMatrix,
        x: &CudaSlice<f32>,
        n_rows: usize,
        width: usize,
        gate_out: &mut CudaSlice<f32>,
        up_out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if n_rows >= TILED_FROM_TOKENS || gate.rows != up.rows {
            self.matmul(&[gate, up], x, n_rows, &mut [&mut *gate_out, &mut *up_out])?;
            return self.silu_mul(gate_out, up_out, n_rows * width);
        }
        let parts = vec![Fused { w: gate, out: gate_out, bias: None }, Fused { w: up, out: up_out, bias: None }];
        self.matvec_fused(parts, x, n_rows, FusedMode::SiluGate)
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

    /// For fewer than `TILED_FROM_TOKENS` rows, also quantizes the output
    /// for the decode product that follows (see `QuantizedInput::normed`).
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
        let mut guard = self.quantized_input.lock().unwrap_or_else(|p| p.into_inner());
        let input = &mut *guard;
        let quantized = n_rows < TILED_FROM_TOKENS && width.is_multiple_of(32);
        if quantized {
            self.make_room(input, n_rows * width)?;
        }
        let mut launch = self.stream.launch_builder(self.function("rms_norm")?);
        launch.arg(x).arg(weight).arg(&w).arg(&eps).arg(&mut *out);
        let null = 0u64;
        if quantized {
            launch.arg(&mut input.values).arg(&mut input.scales).arg(&mut input.sums);
        } else {
            launch.arg(&null).arg(&null).arg(&null);
        }
        // SAFETY: x and out hold n_rows × width values; the 8-bit form as many, and a scale and sum per 32.
        unsafe { launch.launch(rows_config(n_rows, 256)) }.map_err(device_error)?;
        input.normed = quantized.then(|| (address(&self.stream, out), n_rows * width));
        Ok(())
    }

    fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        positions: &CudaSlice<u32>,
        n_rows: usize,
        heads: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        self.launch_rope(x, heads, None, positions, n_rows, head_dim, base, style)
    }

    fn rope_pair(
        &self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        positions: &CudaSlice<u32>,
        n_rows: usize,
        (heads, kv_heads, head_dim): (usize, usize, usize),
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        self.launch_rope(q, heads, Some((k, kv_heads)), positions, n_rows, head_dim, base, style)
    }

    fn kv_store(
        &self,
        cache: &mut CudaSlice<f32>,
        positions: &CudaSlice<u32>,
        src: &CudaSlice<f32>,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        self.launch_kv_store((cache, src), None, positions, first_row, n, width)
    }

    fn kv_store_pair(
        &self,
        (keys, values): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
        positions: &CudaSlice<u32>,
        (k, v): (&CudaSlice<f32>, &CudaSlice<f32>),
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        self.launch_kv_store((keys, k), Some((values, v)), positions, first_row, n, width)
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
        positions: &CudaSlice<u32>,
        s: AttentionShape,
        first_row: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if s.head_dim > MAX_HEAD_DIM || !s.head_dim.is_multiple_of(32) || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(Error::Unsupported(format!(
                "backend cuda: attention with head size {} and {} heads over {} KV heads \
                 (a multiple of 32 up to {MAX_HEAD_DIM}, and a multiple)",
                s.head_dim, s.heads, s.kv_heads
            )));
        }
        let kv_dim = s.kv_heads * s.head_dim;
        let splits = attention_splits(s.n_tokens, keys.len() / kv_dim);
        let (row, heads, kv_heads, dim, n_splits) =
            (int(first_row)?, int(s.heads)?, int(s.kv_heads)?, int(s.head_dim)?, int(splits)?);
        let mut scratch = self.attention_splits.lock().unwrap_or_else(|p| p.into_inner());
        // Sized for the most splits at once, so it is allocated once per model
        // (a reallocation would leave recorded steps pointing at freed memory).
        let partials_len = s.heads * MAX_ATTENTION_SPLITS * (s.head_dim + 2);
        if splits > 1 && (scratch.done.len() < s.heads || scratch.partials.len() < partials_len) {
            self.steps.check_not_recording("the attention's partial results")?;
            self.steps.forget_all();
            *scratch = AttentionSplits::new(&self.stream, s.heads, s.head_dim)?;
        }
        let AttentionSplits { partials, done } = &mut *scratch;
        let mut launch = self.stream.launch_builder(self.function("attention")?);
        launch.arg(q).arg(keys).arg(values).arg(positions).arg(&row).arg(&heads).arg(&kv_heads).arg(&dim);
        launch.arg(&n_splits).arg(&mut *out).arg(partials).arg(done);
        let grid = (s.n_tokens as u32, s.heads as u32, splits as u32);
        let config = LaunchConfig { grid_dim: grid, block_dim: (ATTENTION_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: q/out hold the span's rows; keys/values the cache up to each row's position;
        // partials and done the splits' results when there are several.
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

    fn gather_rows(
        &self,
        x: &CudaSlice<f32>,
        rows: &CudaSlice<u32>,
        n: usize,
        width: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let w = int(width)?;
        let mut launch = self.stream.launch_builder(self.function("gather_rows")?);
        launch.arg(x).arg(rows).arg(&w).arg(out);
        // SAFETY: every row index is inside x; out holds n rows.
        unsafe { launch.launch(rows_config(n, 256)) }.map_err(device_error)?;
        Ok(())
    }
}

/// How many blocks share one query's positions: one for a prompt (its many
/// queries fill the device), for a single query one per `POSITIONS_PER_SPLIT`
/// positions of the cache's capacity (not of its length, so a step's launch
/// shape does not change as the cache fills).
fn attention_splits(n_tokens: usize, capacity: usize) -> usize {
    if n_tokens > 1 {
        return 1;
    }
    capacity.div_ceil(POSITIONS_PER_SPLIT).clamp(1, MAX_ATTENTION_SPLITS)
}
