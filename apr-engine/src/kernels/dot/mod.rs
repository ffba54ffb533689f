//! Row dot products, chosen per weight dtype and CPU (detected at run time):
//! AVX-512 VNNI for the K-quants, AVX-VNNI for the 32-wide types, AVX2/FMA/F16C
//! for the rest, the portable scalar versions where the CPU has none of these.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod rows8;
pub mod scalar;

pub use rows8::{Rows8K, Rows8Kernel, Rows8Path, Rows8Q8};

use super::q8_act::{BlockQ8, BlockQ8K};
use crate::dtype::DType;

/// A dot of one weight row (its raw bytes) with one token's activations, in
/// the activation format the kernel consumes.
#[derive(Clone, Copy)]
pub enum RowDot {
    /// 32-wide weight blocks against [`BlockQ8`] activations.
    Q8(fn(&[u8], &[BlockQ8]) -> f32),
    /// K-quant super-blocks against [`BlockQ8K`] activations.
    Q8K(fn(&[u8], &[BlockQ8K]) -> f32),
    /// Float weights (F32/F16/BF16 bytes) against f32 activations.
    Float(fn(&[u8], &[f32]) -> f32),
}

/// Tokens a [`TileDot`] handles per call.
pub const TILE: usize = 8;

/// A dot of one weight row with [`TILE`] tokens at once: each weight block is
/// unpacked once and used for every token (the prefill kernel). Each result equals
/// the kernel's [`RowDot`] on that token bit for bit (same operations, same order).
#[derive(Clone, Copy)]
pub enum TileDot {
    Q8(Q8Tile),
    Q8K(Q8KTile),
}

/// A tile kernel of the 32-wide types.
pub type Q8Tile = fn(&[u8], &[&[BlockQ8]; TILE]) -> [f32; TILE];
/// A tile kernel of the K-quants.
pub type Q8KTile = fn(&[u8], &[&[BlockQ8K]; TILE]) -> [f32; TILE];

/// A selected kernel and its `--trace` name.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub name: &'static str,
    pub dot: RowDot,
    /// The multi-token form, where one exists (else prefill calls `dot` per token).
    pub tile: Option<TileDot>,
    /// The prefill form over rows repacked eight at a time, where one exists.
    pub rows8: Option<Rows8Path>,
}

/// The portable kernel for `dtype`, if it has a direct one (others dequantize rows).
pub fn scalar_kernel(dtype: DType) -> Option<Kernel> {
    use RowDot::*;
    let (name, dot) = match dtype {
        DType::Q4_0 => ("Q4_0×Q8_0 scalar", Q8(scalar::q4_0)),
        DType::Q4_1 => ("Q4_1×Q8_1 scalar", Q8(scalar::q4_1)),
        DType::Q5_0 => ("Q5_0×Q8_0 scalar", Q8(scalar::q5_0)),
        DType::Q5_1 => ("Q5_1×Q8_1 scalar", Q8(scalar::q5_1)),
        DType::Q8_0 => ("Q8_0×Q8_0 scalar", Q8(scalar::q8_0)),
        DType::Q4_K => ("Q4_K×Q8_K scalar", Q8K(scalar::q4_k)),
        DType::Q5_K => ("Q5_K×Q8_K scalar", Q8K(scalar::q5_k)),
        DType::Q6_K => ("Q6_K×Q8_K scalar", Q8K(scalar::q6_k)),
        DType::F32 => ("F32×F32 scalar", Float(scalar::f32_row)),
        DType::F16 => ("F16×F32 scalar", Float(scalar::f16_row)),
        DType::BF16 => ("BF16×F32 scalar", Float(scalar::bf16_row)),
        _ => return None,
    };
    Some(Kernel { name, dot, tile: None, rows8: None })
}

/// True when this CPU runs the AVX2 kernels.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX2 kernel for `dtype`, if the CPU has AVX2/FMA/F16C and the dtype has one.
#[cfg(target_arch = "x86_64")]
pub fn avx2_kernel(dtype: DType) -> Option<Kernel> {
    use RowDot::*;
    if !has_avx2() {
        return None;
    }
    // SAFETY (every closure below): the CPU features these functions need were detected above.
    let tile = match dtype {
        DType::Q4_0 => Some(TileDot::Q8(|w, x| unsafe { avx2::q4_0_tile(w, x) })),
        DType::Q4_1 => Some(TileDot::Q8(|w, x| unsafe { avx2::q4_1_tile(w, x) })),
        DType::Q5_0 => Some(TileDot::Q8(|w, x| unsafe { avx2::q5_0_tile(w, x) })),
        DType::Q5_1 => Some(TileDot::Q8(|w, x| unsafe { avx2::q5_1_tile(w, x) })),
        DType::Q8_0 => Some(TileDot::Q8(|w, x| unsafe { avx2::q8_0_tile(w, x) })),
        DType::Q4_K => Some(TileDot::Q8K(|w, x| unsafe { avx2::q4_k_tile(w, x) })),
        DType::Q6_K => Some(TileDot::Q8K(|w, x| unsafe { avx2::q6_k_tile(w, x) })),
        _ => None,
    };
    let (name, dot) = match dtype {
        DType::Q4_0 => ("Q4_0×Q8_0 avx2", Q8(|w, x| unsafe { avx2::q4_0(w, x) })),
        DType::Q4_1 => ("Q4_1×Q8_1 avx2", Q8(|w, x| unsafe { avx2::q4_1(w, x) })),
        DType::Q5_0 => ("Q5_0×Q8_0 avx2", Q8(|w, x| unsafe { avx2::q5_0(w, x) })),
        DType::Q5_1 => ("Q5_1×Q8_1 avx2", Q8(|w, x| unsafe { avx2::q5_1(w, x) })),
        DType::Q8_0 => ("Q8_0×Q8_0 avx2", Q8(|w, x| unsafe { avx2::q8_0(w, x) })),
        DType::Q4_K => ("Q4_K×Q8_K avx2", Q8K(|w, x| unsafe { avx2::q4_k(w, x) })),
        DType::Q5_K => ("Q5_K×Q8_K avx2", Q8K(|w, x| unsafe { avx2::q5_k(w, x) })),
        DType::Q6_K => ("Q6_K×Q8_K avx2", Q8K(|w, x| unsafe { avx2::q6_k(w, x) })),
        DType::F32 => ("F32×F32 avx2", Float(|w, x| unsafe { avx2::f32_row(w, x) })),
        DType::F16 => ("F16×F32 avx2", Float(|w, x| unsafe { avx2::f16_row(w, x) })),
        DType::BF16 => ("BF16×F32 avx2", Float(|w, x| unsafe { avx2::bf16_row(w, x) })),
        _ => return None,
    };
    Some(Kernel { name, dot, tile, rows8: None })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn avx2_kernel(_dtype: DType) -> Option<Kernel> {
    None
}

/// True when this CPU runs the AVX-VNNI kernels (AVX2 ones with `vpdpbusd`).
pub fn has_avx_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX-VNNI kernel for `dtype`: the 32-wide types, whose AVX2 kernels spend a
/// `maddubs` + `madd` pair per block that `vpdpbusd` does in one instruction.
/// Results equal the AVX2 kernel's bit for bit (the integer sums are exact in both).
#[cfg(target_arch = "x86_64")]
pub fn vnni_kernel(dtype: DType) -> Option<Kernel> {
    use RowDot::Q8;
    if !has_avx_vnni() {
        return None;
    }
    // SAFETY (every closure below): the CPU features these functions need were detected above.
    let (name, dot, tile): (_, _, Q8Tile) = match dtype {
        DType::Q4_0 => ("Q4_0×Q8_0 avx-vnni", Q8(|w, x| unsafe { avx2::q4_0_vnni(w, x) }), |w, x| unsafe {
            avx2::q4_0_tile_vnni(w, x)
        }),
        DType::Q4_1 => ("Q4_1×Q8_1 avx-vnni", Q8(|w, x| unsafe { avx2::q4_1_vnni(w, x) }), |w, x| unsafe {
            avx2::q4_1_tile_vnni(w, x)
        }),
        DType::Q5_0 => ("Q5_0×Q8_0 avx-vnni", Q8(|w, x| unsafe { avx2::q5_0_vnni(w, x) }), |w, x| unsafe {
            avx2::q5_0_tile_vnni(w, x)
        }),
        DType::Q5_1 => ("Q5_1×Q8_1 avx-vnni", Q8(|w, x| unsafe { avx2::q5_1_vnni(w, x) }), |w, x| unsafe {
            avx2::q5_1_tile_vnni(w, x)
        }),
        DType::Q8_0 => ("Q8_0×Q8_0 avx-vnni", Q8(|w, x| unsafe { avx2::q8_0_vnni(w, x) }), |w, x| unsafe {
            avx2::q8_0_tile_vnni(w, x)
        }),
        _ => return None,
    };
    Some(Kernel { name, dot, tile: Some(TileDot::Q8(tile)), rows8: None })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn vnni_kernel(_dtype: DType) -> Option<Kernel> {
    None
}

/// True when this CPU runs the AVX-512 VNNI kernels.
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX-512 VNNI kernel for `dtype`: Q4_K and Q6_K, whose sub-block scales
/// `vpdpwssd` applies while it accumulates 64 weights per instruction pair.
#[cfg(target_arch = "x86_64")]
pub fn avx512_kernel(dtype: DType) -> Option<Kernel> {
    use RowDot::Q8K;
    if !has_avx512_vnni() {
        return None;
    }
    // SAFETY (every closure below): the CPU features these functions need were detected above.
    let (name, dot, tile, rows8): (_, _, Q8KTile, _) = match dtype {
        DType::Q4_K => (
            "Q4_K×Q8_K avx512-vnni",
            Q8K(|w, x| unsafe { avx512::q4_k(w, x) }),
            |w, x| unsafe { avx512::q4_k_tile(w, x) },
            Rows8Path::Q8K(Rows8Kernel {
                repack: |rows, out| unsafe { avx512::q4_k_repack(rows, out) },
                tile: |blocks, x| unsafe { avx512::q4_k_rows8_tile(blocks, x) },
                single: |blocks, x| unsafe { avx512::q4_k_rows8(blocks, x) },
            }),
        ),
        DType::Q6_K => (
            "Q6_K×Q8_K avx512-vnni",
            Q8K(|w, x| unsafe { avx512::q6_k(w, x) }),
            |w, x| unsafe { avx512::q6_k_tile(w, x) },
            Rows8Path::Q8K(Rows8Kernel {
                repack: |rows, out| unsafe { avx512::q6_k_repack(rows, out) },
                tile: |blocks, x| unsafe { avx512::q6_k_rows8_tile(blocks, x) },
                single: |blocks, x| unsafe { avx512::q6_k_rows8(blocks, x) },
            }),
        ),
        _ => return block32_with_rows8(dtype),
    };
    Some(Kernel { name, dot, tile: Some(TileDot::Q8K(tile)), rows8: Some(rows8) })
}

/// The signed 32-wide types: their AVX-VNNI (or AVX2) row and tile kernels for
/// decoding, with the AVX-512 [`Rows8Q8`] form for prefill.
#[cfg(target_arch = "x86_64")]
fn block32_with_rows8(dtype: DType) -> Option<Kernel> {
    // SAFETY (every closure below): avx512_kernel detected the features these functions need.
    let rows8 = |repack, tile, single| Some(Rows8Path::Q8(Rows8Kernel { repack, tile, single }));
    if dtype == DType::Q5_0 {
        // Decoding Q5_0 is bound by unpacking its fifth bits: the AVX-512 form does two blocks at once.
        return Some(Kernel {
            name: "Q5_0×Q8_0 avx512-vnni",
            dot: RowDot::Q8(|w, x| unsafe { avx512::q5_0(w, x) }),
            tile: Some(TileDot::Q8(|w, x| unsafe { avx512::q5_0_tile(w, x) })),
            rows8: rows8(
                |rows, out| unsafe { avx512::q5_0_repack(rows, out) },
                |blocks, x| unsafe { avx512::q5_0_rows8_tile(blocks, x) },
                |blocks, x| unsafe { avx512::q5_0_rows8(blocks, x) },
            ),
        });
    }
    // The row and tile kernels stay AVX-VNNI (AVX2 on Ice Lake and Cascade Lake, which lack it).
    let decode = vnni_kernel(dtype).or_else(|| avx2_kernel(dtype))?;
    let vnni = has_avx_vnni();
    let (name, rows8) = match dtype {
        DType::Q4_0 => (
            if vnni { "Q4_0×Q8_0 avx-vnni, prefill avx512-vnni" } else { "Q4_0×Q8_0 avx2, prefill avx512-vnni" },
            rows8(
                |rows, out| unsafe { avx512::q4_0_repack(rows, out) },
                |blocks, x| unsafe { avx512::q4_0_rows8_tile(blocks, x) },
                |blocks, x| unsafe { avx512::q4_0_rows8(blocks, x) },
            ),
        ),
        DType::Q8_0 => (
            if vnni { "Q8_0×Q8_0 avx-vnni, prefill avx512-vnni" } else { "Q8_0×Q8_0 avx2, prefill avx512-vnni" },
            rows8(
                |rows, out| unsafe { avx512::q8_0_repack(rows, out) },
                |blocks, x| unsafe { avx512::q8_0_rows8_tile(blocks, x) },
                |blocks, x| unsafe { avx512::q8_0_rows8(blocks, x) },
            ),
        ),
        _ => return None,
    };
    Some(Kernel { name, rows8, ..decode })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn avx512_kernel(_dtype: DType) -> Option<Kernel> {
    None
}

/// The fastest kernel this CPU has for `dtype`; `None` for dtypes that take the
/// dequantize-a-row path (Q2_K, Q3_K and the non-weight types).
pub fn best_kernel(dtype: DType) -> Option<Kernel> {
    avx512_kernel(dtype).or_else(|| vnni_kernel(dtype)).or_else(|| avx2_kernel(dtype)).or_else(|| scalar_kernel(dtype))
}

/// Dot of two f32 slices with the fastest available code.
pub fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features detected just above.
        return unsafe { avx2::f32_dot(a, b) };
    }
    scalar::f32_dot(a, b)
}
