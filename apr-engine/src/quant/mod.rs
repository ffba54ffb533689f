//! Quantized block formats: dequantization and quantization kernels (to be written).
