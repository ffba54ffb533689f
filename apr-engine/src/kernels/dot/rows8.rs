//! The prefill layout of rows repacked eight at a time: one 64-byte register
//! holds 8 weights of each of 8 rows (row r at bytes 8r..8r+8), unpacked to
//! unsigned bytes, so one multiply instruction serves eight rows and one
//! broadcast of 8 activation bytes. Prefill repacks a chunk of rows once and
//! runs every token over it; the kernels that read it are in `avx512`.

use super::TILE;
use crate::kernels::q8_act::{BlockQ8, BlockQ8K};

/// One K-quant super-block (256 weights) of eight rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Rows8K {
    /// `weights[g]`: elements 8g..8g+8 of each row.
    pub weights: [[u8; 64]; 32],
    /// Factor of block sum 4q + m for row r at `corrections[q][4r + m]`.
    pub corrections: [[i16; 32]; 4],
    /// The row's `d` and correction factor, each in lanes 2r and 2r + 1.
    pub d: [f32; 16],
    pub d_correction: [f32; 16],
    /// Scale of weight group s of row r at `scales[s][r]`.
    pub scales: [[i16; 8]; 16],
}

impl Default for Rows8K {
    fn default() -> Self {
        Rows8K {
            weights: [[0; 64]; 32],
            corrections: [[0; 32]; 4],
            d: [0.0; 16],
            d_correction: [0.0; 16],
            scales: [[0; 8]; 16],
        }
    }
}

/// One 32-wide block (Q4_0, Q5_0, Q8_0) of eight rows: weights shifted to
/// unsigned by the type's offset, which the kernel takes back through the
/// activations' integer sum.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Rows8Q8 {
    /// `weights[g]`: elements 8g..8g+8 of each row.
    pub weights: [[u8; 64]; 4],
    /// The row's `d` in lanes 2r and 2r + 1.
    pub d: [f32; 16],
}

impl Default for Rows8Q8 {
    fn default() -> Self {
        Rows8Q8 { weights: [[0; 64]; 4], d: [0.0; 16] }
    }
}

/// The functions of one repacked layout `B` over activations `A`: repack eight
/// rows (all their blocks), then dot them with [`TILE`] tokens (`result[token][row]`)
/// or with one.
pub struct Rows8Kernel<B, A> {
    pub repack: fn(&[&[u8]; 8], &mut [B]),
    #[allow(clippy::type_complexity)]
    pub tile: fn(&[B], &[&[A]; TILE]) -> [[f32; 8]; TILE],
    pub single: fn(&[B], &[A]) -> [f32; 8],
}

// Derived Clone/Copy would require `B: Copy, A: Copy`; the fields are fn pointers.
impl<B, A> Clone for Rows8Kernel<B, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B, A> Copy for Rows8Kernel<B, A> {}

/// A kernel's repacked prefill form, by activation format.
#[derive(Clone, Copy)]
pub enum Rows8Path {
    Q8(Rows8Kernel<Rows8Q8, BlockQ8>),
    Q8K(Rows8Kernel<Rows8K, BlockQ8K>),
}
