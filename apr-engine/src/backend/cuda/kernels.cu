// The CUDA backend's kernels, compiled at run time by NVRTC for the device's
// architecture. Weights stay in their file dtype: each matrix kernel
// dequantizes the blocks it reads in registers (32 values at a time) and dots
// them with f32 activations. Dtype ids are the GGML type ids (apr's DType).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define DT_F32 0
#define DT_F16 1
#define DT_Q4_0 2
#define DT_Q4_1 3
#define DT_Q5_0 6
#define DT_Q5_1 7
#define DT_Q8_0 8
#define DT_Q4_K 12
#define DT_Q5_K 13
#define DT_Q6_K 14
#define DT_BF16 30

__device__ __forceinline__ float f16_bits(u16 bits) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
    return f;
}

// A little-endian f16 at any byte address (block scales are only 2-byte aligned).
__device__ __forceinline__ float f16_at(const u8* p) {
    return f16_bits((u16)p[0] | ((u16)p[1] << 8));
}

__device__ __forceinline__ u32 u32_at(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// Scale and min of sub-block j (0..8) of a Q4_K/Q5_K block's 12 packed bytes.
__device__ __forceinline__ void k4_scale_min(const u8* s, int j, float* sc, float* m) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *m = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *m = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Weights 8 * part .. 8 * part + 8 of chunk `c` (elements 32c..32c+32) of a row in dtype T.
template <int T>
__device__ __forceinline__ void dequant8(const u8* row, int c, int part, float* v) {
    int e0 = 8 * part;
    if (T == DT_F32) {
        const float* p = (const float*)row + 32 * c + e0;
        for (int i = 0; i < 8; i++) v[i] = p[i];
    } else if (T == DT_F16 || T == DT_BF16) {
        const u16* p = (const u16*)row + 32 * c + e0;
        for (int i = 0; i < 8; i++) v[i] = T == DT_F16 ? f16_bits(p[i]) : __uint_as_float((u32)p[i] << 16);
    } else if (T == DT_Q4_0 || T == DT_Q4_1) {
        const u8* b = row + (T == DT_Q4_0 ? 18 : 20) * c;
        const u8* qs = b + (T == DT_Q4_0 ? 2 : 4) + (e0 & 15);
        float d = f16_at(b), m = T == DT_Q4_1 ? f16_at(b + 2) : 0.0f;
        int shift = e0 < 16 ? 0 : 4;
        for (int i = 0; i < 8; i++) {
            int q = (qs[i] >> shift) & 0x0f;
            v[i] = T == DT_Q4_0 ? d * (float)(q - 8) : d * (float)q + m;
        }
    } else if (T == DT_Q5_0 || T == DT_Q5_1) {
        const u8* b = row + (T == DT_Q5_0 ? 22 : 24) * c;
        const u8* hq = b + (T == DT_Q5_0 ? 2 : 4);
        const u8* qs = hq + 4 + (e0 & 15);
        float d = f16_at(b), m = T == DT_Q5_1 ? f16_at(b + 2) : 0.0f;
        u32 qh = u32_at(hq);
        int shift = e0 < 16 ? 0 : 4;
        for (int i = 0; i < 8; i++) {
            int q = ((qs[i] >> shift) & 0x0f) | (((qh >> (e0 + i)) & 1) << 4);
            v[i] = T == DT_Q5_0 ? d * (float)(q - 16) : d * (float)q + m;
        }
    } else if (T == DT_Q8_0) {
        const u8* b = row + 34 * c;
        float d = f16_at(b);
        for (int i = 0; i < 8; i++) v[i] = d * (float)(signed char)b[2 + e0 + i];
    } else if (T == DT_Q4_K || T == DT_Q5_K) {
        const int bytes = T == DT_Q4_K ? 144 : 176;
        const u8* b = row + bytes * (c / 8);
        int sub = c % 8, chunk = sub / 2, half = sub % 2;
        float sc, m;
        k4_scale_min(b + 4, sub, &sc, &m);
        float dl = f16_at(b) * sc, ml = f16_at(b + 2) * m;
        const u8* qs = b + (T == DT_Q4_K ? 16 : 48) + 32 * chunk + e0;
        for (int i = 0; i < 8; i++) {
            int q = (qs[i] >> (4 * half)) & 0x0f;
            if (T == DT_Q5_K) q |= ((b[16 + e0 + i] >> sub) & 1) << 4;
            v[i] = dl * (float)q - ml;
        }
    } else if (T == DT_Q6_K) {
        const u8* b = row + 210 * (c / 8);
        float d = f16_at(b + 208);
        int first = 32 * (c % 8) + e0, half = first / 128;
        for (int i = 0; i < 8; i++) {
            int w = (first + i) % 128;
            int low = (b[64 * half + w % 64] >> (4 * (w / 64))) & 0x0f;
            int high = (b[128 + 32 * half + w % 32] >> (2 * (w / 32))) & 3;
            float dl = d * (float)(signed char)b[192 + (first + i) / 16];
            v[i] = dl * (float)((low | (high << 4)) - 32);
        }
    }
}

// The 32 values of chunk `c` (elements 32c..32c+32) of a row in dtype T.
template <int T>
__device__ __forceinline__ void dequant32(const u8* row, int c, float* v) {
    for (int part = 0; part < 4; part++) dequant8<T>(row, c, part, v + 8 * part);
}

// ---- Decode products: activations in 8 bit, integer dot products ----------
//
// Fewer than 16 tokens make a product bound by reading the weights once. The
// input is quantized once per product (`quantize_q8`: per 32 values a scale
// d = max|x| / 127, the int8 values, and their sum times d), and each warp
// takes a row: lane l the chunks of 32 weights l, l + 32, ..., unpacked to
// int8 in registers and dotted with the input's int8 by dp4a, as llama.cpp's
// MMVQ does. f32, f16 and bf16 weights are dotted with the f32 input instead.

typedef signed char i8;

#define TOKENS_PER_PASS 8
// Rows per block of the one-row kernels, a warp each (MATVEC_ROWS_PER_BLOCK in mod.rs).
#define WARP_ROWS 8

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Chunk i of an input to 8 bit, one warp per chunk, lane l holding value l:
// the scale d = max|x| / 127, the int8 values, and their sum times d.
__device__ __forceinline__ void quantize_chunk(float v, size_t i, i8* q, float* scale, float* sum) {
    int lane = threadIdx.x % 32;
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
    float d = amax / 127.0f;
    int qv = amax == 0.0f ? 0 : __float2int_rn(v / d);
    q[32 * i + lane] = (i8)qv;
    float s = warp_sum((float)qv);
    if (lane == 0) {
        scale[i] = d;
        sum[i] = s * d;
    }
}

// x (len values, a multiple of 32) to 8 bit, a warp per chunk of 32.
extern "C" __global__ void quantize_q8(const float* x, int len, i8* q, float* scale, float* sum) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (32 * i >= len) return;
    quantize_chunk(x[32 * i + threadIdx.x % 32], i, q, scale, sum);
}

// 32 weights as int8 (w[j] holds weights 4j..4j+3) and how their dot with a
// chunk of the int8 input becomes a value: a0 * d * dot(first 16) +
// a1 * d * dot(last 16) + b * (the chunk's sum).
struct Chunk {
    int w[8];
    float a0, a1, b;
};

// N words (4 bytes each) from any byte address: Q4_0, Q5_0, Q8_0 and Q6_K
// blocks are not 4-byte aligned, and aligned 4-byte loads joined by funnel
// shifts take half the load instructions of 2-byte ones.
template <int N>
__device__ __forceinline__ void words_at(const u8* p, int* out) {
    const u32* base = (const u32*)((size_t)p & ~(size_t)3);
    u32 shift = 8 * (u32)((size_t)p & 3);
    u32 w[N + 1];
    for (int i = 0; i < N; i++) w[i] = base[i];
    // The word past the end only when the bytes reach into it (so never past the buffer).
    w[N] = shift ? base[N] : 0;
    for (int i = 0; i < N; i++) out[i] = (int)__funnelshift_r(w[i], w[i + 1], shift);
}

// Bits 0..3 of `bits` to bit 4 of each byte (the fifth bit of four 5-bit weights).
__device__ __forceinline__ int spread_high_bits(u32 bits) {
    return (int)(((bits & 1) << 4) | ((bits & 2) << 11) | ((bits & 4) << 18) | ((bits & 8) << 25));
}

template <int T>
__device__ __forceinline__ Chunk load_chunk(const u8* row, int c) {
    Chunk k;
    if (T == DT_Q4_0 || T == DT_Q4_1 || T == DT_Q5_0 || T == DT_Q5_1) {
        const int bytes = T == DT_Q4_0 ? 18 : T == DT_Q4_1 ? 20 : T == DT_Q5_0 ? 22 : 24;
        const bool min = T == DT_Q4_1 || T == DT_Q5_1, five = T == DT_Q5_0 || T == DT_Q5_1;
        const u8* b = row + bytes * c;
        const u8* qs = b + (min ? 4 : 2) + (five ? 4 : 0);
        int qh = 0, qv[4];
        if (five) words_at<1>(b + (min ? 4 : 2), &qh);
        words_at<4>(qs, qv);
        for (int j = 0; j < 4; j++) {
            int v = qv[j];
            k.w[j] = v & 0x0f0f0f0f;
            k.w[4 + j] = (v >> 4) & 0x0f0f0f0f;
            if (five) {
                k.w[j] |= spread_high_bits((u32)qh >> (4 * j));
                k.w[4 + j] |= spread_high_bits((u32)qh >> (16 + 4 * j));
            }
        }
        float d = f16_at(b);
        k.a0 = k.a1 = d;
        k.b = min ? f16_at(b + 2) : (five ? -16.0f : -8.0f) * d;
    } else if (T == DT_Q8_0) {
        const u8* b = row + 34 * c;
        words_at<8>(b + 2, k.w);
        k.a0 = k.a1 = f16_at(b);
        k.b = 0.0f;
    } else if (T == DT_Q4_K || T == DT_Q5_K) {
        const int bytes = T == DT_Q4_K ? 144 : 176;
        const u8* b = row + bytes * (c / 8);
        int sub = c % 8;
        const int* qs = (const int*)(b + (T == DT_Q4_K ? 16 : 48) + 32 * (sub / 2));
        const int* qh = (const int*)(b + 16);
        for (int j = 0; j < 8; j++) {
            k.w[j] = (qs[j] >> (4 * (sub % 2))) & 0x0f0f0f0f;
            if (T == DT_Q5_K) k.w[j] |= ((qh[j] >> sub) & 0x01010101) << 4;
        }
        float sc, m;
        k4_scale_min(b + 4, sub, &sc, &m);
        k.a0 = k.a1 = f16_at(b) * sc;
        k.b = -f16_at(b + 2) * m;
    } else if (T == DT_Q6_K) {
        const u8* b = row + 210 * (c / 8);
        int sub = c % 8, half = sub / 4, quarter = sub % 4;
        const u8* ql = b + 64 * half + 32 * (quarter % 2);
        const u8* qh = b + 128 + 32 * half;
        int lows[8], highs[8];
        words_at<8>(ql, lows);
        words_at<8>(qh, highs);
        for (int j = 0; j < 8; j++) {
            int low = (lows[j] >> (4 * (quarter / 2))) & 0x0f0f0f0f;
            int high = (highs[j] >> (2 * quarter)) & 0x03030303;
            k.w[j] = __vsub4(low | (high << 4), 0x20202020);
        }
        float d = f16_at(b + 208);
        k.a0 = d * (float)(signed char)b[192 + 2 * sub];
        k.a1 = d * (float)(signed char)b[192 + 2 * sub + 1];
        k.b = 0.0f;
    }
    return k;
}

// The input of a decode product: f32, and (for quantized weights) in 8 bit.
struct Input {
    const float* x;
    const int* q;  // 8 ints per chunk of 32
    const float* scale;
    const float* sum;
    int cols;
};

// Chunk c's share of the dot products, for tn (<= 8) tokens.
template <int T>
__device__ __forceinline__ void chunk_dots(const u8* row, int c, Input in, int tn, float* acc) {
    Chunk k = load_chunk<T>(row, c);
    int chunks = in.cols / 32;
    for (int t = 0; t < tn; t++) {
        size_t i = (size_t)t * chunks + c;
        const int4* xq = (const int4*)(in.q + 8 * i);
        int4 lo = xq[0], hi = xq[1];
        int first = __dp4a(k.w[0], lo.x, __dp4a(k.w[1], lo.y, __dp4a(k.w[2], lo.z, __dp4a(k.w[3], lo.w, 0))));
        int last = __dp4a(k.w[4], hi.x, __dp4a(k.w[5], hi.y, __dp4a(k.w[6], hi.z, __dp4a(k.w[7], hi.w, 0))));
        acc[t] += in.scale[i] * (k.a0 * (float)first + k.a1 * (float)last) + k.b * in.sum[i];
    }
}

// This lane's share of row . x[t] for tn (<= 8) tokens: chunks lane, lane + 32, ...
template <int T>
__device__ __forceinline__ void lane_dots(const u8* row, Input in, int tn, float* acc) {
    for (int t = 0; t < TOKENS_PER_PASS; t++) acc[t] = 0.0f;
    int chunks = in.cols / 32, lane = threadIdx.x % 32;
    if (T == DT_F32 || T == DT_F16 || T == DT_BF16) {
        for (int c = lane; c < chunks; c += 32) {
            float v[32];
            dequant32<T>(row, c, v);
            for (int t = 0; t < tn; t++) {
                const float4* xt = (const float4*)(in.x + (size_t)t * in.cols + 32 * c);
                float s = 0.0f;
                for (int i = 0; i < 8; i++) {
                    float4 x4 = xt[i];
                    s = fmaf(v[4 * i], x4.x, s);
                    s = fmaf(v[4 * i + 1], x4.y, s);
                    s = fmaf(v[4 * i + 2], x4.z, s);
                    s = fmaf(v[4 * i + 3], x4.w, s);
                }
                acc[t] += s;
            }
        }
    } else {
        for (int c = lane; c < chunks; c += 32) chunk_dots<T>(row, c, in, tn, acc);
    }
}

// lane_dots for a dtype known at run time (the same for the whole warp, so the branch does not diverge).
__device__ __forceinline__ void lane_dots_any(int dtype, const u8* row, Input in, int tn, float* acc) {
    switch (dtype) {
        case DT_F32: lane_dots<DT_F32>(row, in, tn, acc); break;
        case DT_F16: lane_dots<DT_F16>(row, in, tn, acc); break;
        case DT_BF16: lane_dots<DT_BF16>(row, in, tn, acc); break;
        case DT_Q4_0: lane_dots<DT_Q4_0>(row, in, tn, acc); break;
        case DT_Q4_1: lane_dots<DT_Q4_1>(row, in, tn, acc); break;
        case DT_Q5_0: lane_dots<DT_Q5_0>(row, in, tn, acc); break;
        case DT_Q5_1: lane_dots<DT_Q5_1>(row, in, tn, acc); break;
        case DT_Q8_0: lane_dots<DT_Q8_0>(row, in, tn, acc); break;
        case DT_Q4_K: lane_dots<DT_Q4_K>(row, in, tn, acc); break;
        case DT_Q5_K: lane_dots<DT_Q5_K>(row, in, tn, acc); break;
        default: lane_dots<DT_Q6_K>(row, in, tn, acc); break;
    }
}

#define FUSED_STORE 0
#define FUSED_ACCUMULATE 1
#define FUSED_SILU_GATE 2

// Up to three matrices over one input in one launch, a warp per row, with
// what follows the product done before the store: a bias (q/k/v), a sum into
// the output (a residual), or silu(gate) * up (the FFN, where a warp takes a
// row of both). Dtypes may differ between the matrices (Q4_K_M files mix them).
extern "C" __global__ void matvec_fused(const u8* w0, int rb0, int rows0, int dt0, float* out0, const float* bias0,
                                        const u8* w1, int rb1, int rows1, int dt1, float* out1, const float* bias1,
                                        const u8* w2, int rb2, int rows2, int dt2, float* out2, const float* bias2,
                                        int cols, const float* x, const i8* xq, const float* xscale,
                                        const float* xsum, int n, int mode) {
    float acc[TOKENS_PER_PASS], up[TOKENS_PER_PASS];
    int r = blockIdx.x * WARP_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (mode == FUSED_SILU_GATE) {
        if (r >= rows0) return;
        for (int t0 = 0; t0 < n; t0 += TOKENS_PER_PASS) {
            int tn = min(TOKENS_PER_PASS, n - t0);
            Input at = {x + (size_t)t0 * cols, (const int*)xq + (size_t)t0 * cols / 4, xscale + t0 * cols / 32,
                        xsum + t0 * cols / 32, cols};
            lane_dots_any(dt0, w0 + (size_t)r * rb0, at, tn, acc);
            lane_dots_any(dt1, w1 + (size_t)r * rb1, at, tn, up);
            for (int t = 0; t < tn; t++) {
                float g = warp_sum(acc[t]), u = warp_sum(up[t]);
                if (lane == 0) out0[(size_t)(t0 + t) * rows0 + r] = g / (1.0f + expf(-g)) * u;
            }
        }
        return;
    }
    const u8* w = w0;
    int rb = rb0, rows = rows0, dt = dt0;
    float* out = out0;
    const float* bias = bias0;
    if (r >= rows0) {
        r -= rows0, w = w1, rb = rb1, rows = rows1, dt = dt1, out = out1, bias = bias1;
        if (r >= rows1) r -= rows1, w = w2, rb = rb2, rows = rows2, dt = dt2, out = out2, bias = bias2;
    }
    if (r >= rows) return;
    for (int t0 = 0; t0 < n; t0 += TOKENS_PER_PASS) {
        int tn = min(TOKENS_PER_PASS, n - t0);
        Input at = {x + (size_t)t0 * cols, (const int*)xq + (size_t)t0 * cols / 4, xscale + t0 * cols / 32,
                    xsum + t0 * cols / 32, cols};
        lane_dots_any(dt, w + (size_t)r * rb, at, tn, acc);
        for (int t = 0; t < tn; t++) {
            float s = warp_sum(acc[t]);
            if (lane != 0) continue;
            float* o = out + (size_t)(t0 + t) * rows + r;
            if (bias) s += bias[r];
            *o = mode == FUSED_ACCUMULATE ? *o + s : s;
        }
    }
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024), on every thread.
__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < (int)(blockDim.x / 32); i++) total += scratch[i];
    return total;
}

#define TILE_ROWS 64
#define TILE_TOKENS 64

// The same product for many tokens: a block computes a 64-row × 64-token tile
// of out, stepping through the columns 32 at a time. Each step dequantizes the
// 64 weight rows' chunk once into shared memory (where all 64 tokens use it)
// and loads the 64 tokens' 32 values beside it; each of 256 threads then
// accumulates a 4 × 4 patch of the tile.
template <int T>
__device__ void matmul_tiled(const u8* w, int row_bytes, int rows, int cols, const float* x, int n, float* out) {
    __shared__ float ws[TILE_ROWS][33];
    __shared__ float xs[TILE_TOKENS][33];
    int row0 = blockIdx.x * TILE_ROWS, tok0 = blockIdx.y * TILE_TOKENS;
    int tr = threadIdx.x / 16, tt = threadIdx.x % 16;  // this thread's patch: rows 4tr.., tokens 4tt..
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int c = 0; c < cols / 32; c++) {
        if (threadIdx.x < TILE_ROWS) {
            int r = row0 + threadIdx.x;
            float v[32];
            if (r < rows) {
                dequant32<T>(w + (size_t)r * row_bytes, c, v);
            } else {
                for (int i = 0; i < 32; i++) v[i] = 0.0f;
            }
            for (int i = 0; i < 32; i++) ws[threadIdx.x][i] = v[i];
        }
        for (int k = threadIdx.x; k < TILE_TOKENS * 32; k += blockDim.x) {
            int t = k / 32, i = k % 32;
            xs[t][i] = tok0 + t < n ? x[(size_t)(tok0 + t) * cols + 32 * c + i] : 0.0f;
        }
        __syncthreads();
        for (int i = 0; i < 32; i++) {
            float a[4], b[4];
            for (int p = 0; p < 4; p++) a[p] = ws[4 * tr + p][i];
            for (int q = 0; q < 4; q++) b[q] = xs[4 * tt + q][i];
            for (int p = 0; p < 4; p++)
                for (int q = 0; q < 4; q++) acc[p][q] = fmaf(a[p], b[q], acc[p][q]);
        }
        __syncthreads();
    }
    for (int p = 0; p < 4; p++) {
        int r = row0 + 4 * tr + p;
        for (int q = 0; q < 4; q++) {
            int t = tok0 + 4 * tt + q;
            if (r < rows && t < n) out[(size_t)t * rows + r] = acc[p][q];
        }
    }
}

// f32 to bf16, rounding to nearest even (what tensor cores take; f32's range,
// so no activation overflows as it could in f16).
__device__ __forceinline__ u16 to_bf16(float f) {
    u32 b = __float_as_uint(f);
    return (u16)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

// Rows row0..row0 + n_rows of a weight matrix of dtype T to bf16, one thread per 32 values.
template <int T>
__device__ void dequant_bf16(const u8* w, int row_bytes, int cols, int row0, int n_rows, u16* out) {
    int chunks = cols / 32;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)n_rows * chunks) return;
    int r = (int)(idx / chunks), c = (int)(idx % chunks);
    float v[32];
    dequant32<T>(w + (size_t)(row0 + r) * row_bytes, c, v);
    u16* o = out + (size_t)r * cols + 32 * c;
    for (int i = 0; i < 32; i++) o[i] = to_bf16(v[i]);
}

extern "C" __global__ void f32_to_bf16(const float* x, long len, u16* out) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) out[i] = to_bf16(x[i]);
}

// Row tokens[i] of the table into row i of out (the ids were checked on the host).
template <int T>
__device__ void embed(const u8* w, int row_bytes, int cols, const u32* tokens, float* out) {
    const u8* row = w + (size_t)tokens[blockIdx.x] * row_bytes;
    for (int c = threadIdx.x; c < cols / 32; c += blockDim.x) {
        float v[32];
        dequant32<T>(row, c, v);
        for (int i = 0; i < 32; i++) out[(size_t)blockIdx.x * cols + 32 * c + i] = v[i];
    }
}

#define DTYPE_KERNELS(NAME, T)                                                                        \
    extern "C" __global__ void matmul_tiled_##NAME(const u8* w, int row_bytes, int rows, int cols,   \
                                                   const float* x, int n, float* out) {               \
        matmul_tiled<T>(w, row_bytes, rows, cols, x, n, out);                                         \
    }                                                                                                 \
    extern "C" __global__ void embed_##NAME(const u8* w, int row_bytes, int cols, const u32* tokens,  \
                                            float* out) {                                             \
        embed<T>(w, row_bytes, cols, tokens, out);                                                    \
    }                                                                                                 \
    extern "C" __global__ void dequant_bf16_##NAME(const u8* w, int row_bytes, int cols, int row0,    \
                                                   int n_rows, u16* out) {                            \
        dequant_bf16<T>(w, row_bytes, cols, row0, n_rows, out);                                       \
    }

DTYPE_KERNELS(f32, DT_F32)
DTYPE_KERNELS(f16, DT_F16)
DTYPE_KERNELS(bf16, DT_BF16)
DTYPE_KERNELS(q4_0, DT_Q4_0)
DTYPE_KERNELS(q4_1, DT_Q4_1)
DTYPE_KERNELS(q5_0, DT_Q5_0)
DTYPE_KERNELS(q5_1, DT_Q5_1)
DTYPE_KERNELS(q8_0, DT_Q8_0)
DTYPE_KERNELS(q4_k, DT_Q4_K)
DTYPE_KERNELS(q5_k, DT_Q5_K)
DTYPE_KERNELS(q6_k, DT_Q6_K)

// One block per row: out = x / sqrt(mean(x^2) + eps) * w, and given q, out
// in 8 bit as quantize_q8 makes it (width a multiple of 32, blockDim 256: a
// warp's 32 values at a step are one chunk).
extern "C" __global__ void rms_norm(const float* x, const float* w, int width, float eps, float* out, i8* q,
                                    float* qscale, float* qsum) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * width;
    float s = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += row[i] * row[i];
    float scale = rsqrtf(block_sum(s, scratch) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        size_t at = (size_t)blockIdx.x * width + i;
        float v = row[i] * scale * w[i];
        out[at] = v;
        if (q) quantize_chunk(v, at / 32, q, qscale, qsum);
    }
}

// One block per row: rotates every pair of every head of row r at positions[r],
// the `heads` heads of x and then the `heads2` heads of x2 (queries and keys in
// one pass; heads2 = 0 for one buffer). halves != 0: pairs (i, i + d/2); else (2i, 2i + 1).
// A thread takes one pair index i (its angle computed once) in every
// (blockDim / half)-th head.
extern "C" __global__ void rope(float* x, int heads, float* x2, int heads2, const u32* positions, int head_dim,
                                float base, int halves) {
    int r = blockIdx.x, half = head_dim / 2, groups = max(1, (int)blockDim.x / half);
    int i = threadIdx.x % half, group = threadIdx.x / half;
    if (group >= groups) return;
    float angle = (float)positions[r] * powf(base, -2.0f * (float)i / (float)head_dim);
    float s, c;
    sincosf(angle, &s, &c);
    int a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
    for (int h = group; h < heads + heads2; h += groups) {
        float* head = h < heads ? x + ((size_t)r * heads + h) * head_dim : x2 + ((size_t)r * heads2 + h - heads) * head_dim;
        float x0 = head[a], x1 = head[b];
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

// Row first_row + blockIdx.x of src (and of src2 when given) into row
// positions[that row] of the cache (and of cache2).
extern "C" __global__ void kv_store(float* cache, const float* src, float* cache2, const float* src2,
                                    const u32* positions, int first_row, int width) {
    int r = first_row + blockIdx.x;
    size_t to = (size_t)positions[r] * width, from = (size_t)r * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        cache[to + i] = src[from + i];
        if (cache2) cache2[to + i] = src2[from + i];
    }
}

#define ATTENTION_WARPS 4
#define MAX_HEAD_DIM 256
#define NEG_INF __int_as_float(0xff800000)
// A split of a query's positions takes at least this many (fewer, shorter
// splits cost more in merging than they win in parallel).
#define MIN_SPLIT_POSITIONS 128

// Causal attention, flash-decoding style: block (t, h, s) takes query row
// first_row + t, head h, and split s of its positions 0..positions[row]. The
// `splits` blocks per query share the positions in chunks of at least
// MIN_SPLIT_POSITIONS (how many are busy depends on the position, read here,
// so a recorded decode step stays valid as the cache fills). Each warp takes
// 32 positions at a time, a lane scoring one of them, then every lane adds
// the 32 values' share of its head_dim / 32 dimensions, with a running max and
// sum (online softmax); the block merges its warps. With several busy splits,
// each writes (max, sum, weighted values) to `partial`, and the last one to
// finish (counted in `done`, which it resets) merges them into the output.
extern "C" __global__ void attention(const float* q, const float* keys, const float* values, const u32* positions,
                                     int first_row, int heads, int kv_heads, int head_dim, int splits, float* out,
                                     float* partial, u32* done) {
    __shared__ float warp_max[ATTENTION_WARPS], warp_sum_l[ATTENTION_WARPS];
    __shared__ float warp_acc[ATTENTION_WARPS][MAX_HEAD_DIM];
    __shared__ float4 qs[MAX_HEAD_DIM / 4];
    __shared__ bool merges;
    int t = blockIdx.x, h = blockIdx.y, s = blockIdx.z, row = first_row + t;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, dims = head_dim / 32;
    int kvh = h / (heads / kv_heads), kv_dim = kv_heads * head_dim;
    int n_kv = (int)positions[row] + 1;
    int chunk = max(MIN_SPLIT_POSITIONS, (n_kv + splits - 1) / splits), busy = (n_kv + chunk - 1) / chunk;
    if (s >= busy) return;
    int begin = s * chunk, end = min(n_kv, begin + chunk);
    float scale = rsqrtf((float)head_dim), acc[MAX_HEAD_DIM / 32];
    const float* qrow = q + (size_t)row * heads * head_dim + h * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) ((float*)qs)[d] = qrow[d] * scale;
    for (int i = 0; i < dims; i++) acc[i] = 0.0f;
    __syncthreads();
    float m = NEG_INF, l = 0.0f;
    for (int tile = begin + 32 * warp; tile < end; tile += 32 * ATTENTION_WARPS) {
        int j = tile + lane;
        float score = NEG_INF;
        if (j < end) {
            const float4* k = (const float4*)(keys + (size_t)j * kv_dim + kvh * head_dim);
            score = 0.0f;
            for (int d = 0; d < head_dim / 4; d++) {
                float4 k4 = k[d], q4 = qs[d];
                score = fmaf(q4.x, k4.x, fmaf(q4.y, k4.y, fmaf(q4.z, k4.z, fmaf(q4.w, k4.w, score))));
            }
        }
        float tile_max = score;
        for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, o));
        float m_new = fmaxf(m, tile_max), correction = expf(m - m_new);
        float p = j < end ? expf(score - m_new) : 0.0f;
        l = l * correction + warp_sum(p);
        for (int i = 0; i < dims; i++) acc[i] *= correction;
        int in_tile = min(32, end - tile);
        const float* v = values + (size_t)tile * kv_dim + kvh * head_dim + lane;
#pragma unroll 8
        for (int jj = 0; jj < in_tile; jj++) {
            float pj = __shfl_sync(0xffffffff, p, jj);
            for (int i = 0; i < dims; i++) acc[i] = fmaf(pj, v[(size_t)jj * kv_dim + 32 * i], acc[i]);
        }
        m = m_new;
    }
    for (int i = 0; i < dims; i++) warp_acc[warp][lane + 32 * i] = acc[i];
    if (lane == 0) {
        warp_max[warp] = m;
        warp_sum_l[warp] = l;
    }
    __syncthreads();
    float block_m = NEG_INF, block_l = 0.0f;
    for (int w = 0; w < ATTENTION_WARPS; w++) block_m = fmaxf(block_m, warp_max[w]);
    for (int w = 0; w < ATTENTION_WARPS; w++) block_l += warp_sum_l[w] * expf(warp_max[w] - block_m);
    float* o = out + (size_t)row * heads * head_dim + h * head_dim;
    float* part = partial + ((size_t)(t * heads + h) * splits + s) * (head_dim + 2);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ATTENTION_WARPS; w++) a = fmaf(warp_acc[w][d], expf(warp_max[w] - block_m), a);
        if (busy == 1) {
            o[d] = a / block_l;
        } else {
            part[2 + d] = a;
        }
    }
    if (busy == 1) return;
    if (threadIdx.x == 0) {
        part[0] = block_m;
        part[1] = block_l;
    }
    // Publish this split, then count it; the last one merges.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        u32* count = done + t * heads + h;
        merges = atomicAdd(count, 1) == (u32)busy - 1;
        if (merges) *count = 0;
    }
    __syncthreads();
    if (!merges) return;
    __threadfence();
    const float* parts = partial + (size_t)(t * heads + h) * splits * (head_dim + 2);
    int stride = head_dim + 2;
    float total_m = NEG_INF, total_l = 0.0f;
    for (int i = 0; i < busy; i++) total_m = fmaxf(total_m, __ldcg(parts + i * stride));
    for (int i = 0; i < busy; i++) total_l += __ldcg(parts + i * stride + 1) * expf(__ldcg(parts + i * stride) - total_m);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < busy; i++) a = fmaf(__ldcg(parts + i * stride + 2 + d), expf(__ldcg(parts + i * stride) - total_m), a);
        o[d] = a / total_l;
    }
}

extern "C" __global__ void silu_mul(float* gate, const float* up, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void add(float* x, const float* y, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) x[i] += y[i];
}

// x[r][i] += bias[i] for n_rows rows of width `width`.
extern "C" __global__ void add_bias(float* x, const float* bias, int width, int n_rows) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < width * n_rows) x[i] += bias[i % width];
}

// Row rows[i] of x into row i of out.
extern "C" __global__ void gather_rows(const float* x, const u32* rows, int width, float* out) {
    const float* src = x + (size_t)rows[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)blockIdx.x * width + i] = src[i];
}
