//! The kernels compiled once per machine: NVRTC turns `kernels.cu` into a
//! CUBIN for the device's architecture (machine code: nothing left for the
//! driver to compile at load), kept under `~/.cache/apr/cuda/` keyed by the
//! source's hash, the architecture and the NVRTC version, so a later start
//! loads it in milliseconds. A cache that cannot be read or written only costs
//! a compile.

use std::ffi::{c_char, c_int, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result, sys, Ptx};
use sha2::{Digest, Sha256};

use super::{device_error, SOURCE};
use crate::error::Result;

/// The kernels for `arch` (`sm_90a`), from the cache or compiled now.
pub(super) fn kernels(arch: &str) -> Result<Ptx> {
    let path = cache_path(arch);
    if let Some(cubin) = path.as_ref().and_then(|p| std::fs::read(p).ok()).filter(|c| !c.is_empty()) {
        return Ok(Ptx::from_binary(cubin));
    }
    let cubin = compile(arch)?;
    if let Some(path) = path {
        store(&path, &cubin);
    }
    Ok(Ptx::from_binary(cubin))
}

fn cache_path(arch: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    let key = Sha256::new().chain_update(SOURCE).chain_update(format!("{arch} nvrtc {major}.{minor}")).finalize();
    let hex: String = key.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Some(PathBuf::from(home).join(".cache/apr/cuda").join(format!("kernels-{arch}-{hex}.cubin")))
}

/// Written beside its final name, then renamed: a reader never sees half a file.
fn store(path: &std::path::Path, cubin: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&temporary, cubin));
    if written.and_then(|()| std::fs::rename(&temporary, path)).is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
}

fn compile(arch: &str) -> Result<Vec<u8>> {
    let source = CString::new(SOURCE).expect("the kernel source holds no NUL");
    let program = result::create_program(&source, None).map_err(|e| device_error(format!("NVRTC: {e:?}")))?;
    let options = [format!("--gpu-architecture={arch}")];
    // SAFETY: `program` is a live program; the options are NUL-free strings.
    let compiled = unsafe { result::compile_program(program, &options) };
    let outcome = match compiled {
        Ok(()) => cubin(program),
        Err(e) => Err(device_error(format!("compiling the kernels for {arch}: {e:?}: {}", log(program)))),
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(program) };
    outcome
}

fn cubin(program: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut size = 0usize;
    // SAFETY: `program` compiled; `size` is an out-parameter.
    let status = unsafe { sys::nvrtcGetCUBINSize(program, &mut size) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return Err(device_error(format!("NVRTC gave no CUBIN ({status:?}): is the architecture a real one?")));
    }
    let mut bytes = vec![0u8; size];
    // SAFETY: `bytes` holds the `size` bytes NVRTC reported.
    let status = unsafe { sys::nvrtcGetCUBIN(program, bytes.as_mut_ptr() as *mut c_char) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(device_error(format!("NVRTC: reading the CUBIN: {status:?}")));
    }
    Ok(bytes)
}

fn log(program: sys::nvrtcProgram) -> String {
    // SAFETY: `program` is live.
    match unsafe { result::get_program_log(program) } {
        Ok(log) => log.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect(),
        Err(_) => String::new(),
    }
}
