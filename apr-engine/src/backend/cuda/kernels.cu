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

#define TOKENS_PER_PASS 8
// A block of ROW_THREADS threads takes one row; four threads share each chunk
// of 32 weights, 8 weights each, so the block's loads of a row are contiguous.
#define ROW_THREADS 128
#define SLICES 4

// This thread's share of row . x[t] for tn (<= 8) tokens.
template <int T>
__device__ __forceinline__ void thread_dots(const u8* row, int cols, const float* x, int tn, float* acc) {
    for (int t = 0; t < TOKENS_PER_PASS; t++) acc[t] = 0.0f;
    int part = threadIdx.x % SLICES;
    for (int c = threadIdx.x / SLICES; c < cols / 32; c += ROW_THREADS / SLICES) {
        float v[8];
        dequant8<T>(row, c, part, v);
        for (int t = 0; t < tn; t++) {
            const float* xt = x + (size_t)t * cols + 32 * c + 8 * part;
            float s = 0.0f;
            for (int i = 0; i < 8; i++) s = fmaf(v[i], xt[i], s);
            acc[t] += s;
        }
    }
}

// thread_dots for a dtype known at run time (the same for the whole block, so the branch does not diverge).
__device__ __forceinline__ void thread_dots_any(int dtype, const u8* row, int cols, const float* x, int tn, float* acc) {
    switch (dtype) {
        case DT_F32: thread_dots<DT_F32>(row, cols, x, tn, acc); break;
        case DT_F16: thread_dots<DT_F16>(row, cols, x, tn, acc); break;
        case DT_BF16: thread_dots<DT_BF16>(row, cols, x, tn, acc); break;
        case DT_Q4_0: thread_dots<DT_Q4_0>(row, cols, x, tn, acc); break;
        case DT_Q4_1: thread_dots<DT_Q4_1>(row, cols, x, tn, acc); break;
        case DT_Q5_0: thread_dots<DT_Q5_0>(row, cols, x, tn, acc); break;
        case DT_Q5_1: thread_dots<DT_Q5_1>(row, cols, x, tn, acc); break;
        case DT_Q8_0: thread_dots<DT_Q8_0>(row, cols, x, tn, acc); break;
        case DT_Q4_K: thread_dots<DT_Q4_K>(row, cols, x, tn, acc); break;
        case DT_Q5_K: thread_dots<DT_Q5_K>(row, cols, x, tn, acc); break;
        default: thread_dots<DT_Q6_K>(row, cols, x, tn, acc); break;
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

// out[t * rows + r] = W[r] . x[t] for n tokens: one block per row.
template <int T>
__device__ void matvec(const u8* w, int row_bytes, int rows, int cols, const float* x, int n, float* out) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    const u8* row = w + (size_t)r * row_bytes;
    for (int t0 = 0; t0 < n; t0 += TOKENS_PER_PASS) {
        int tn = min(TOKENS_PER_PASS, n - t0);
        float acc[TOKENS_PER_PASS];
        thread_dots<T>(row, cols, x + (size_t)t0 * cols, tn, acc);
        for (int t = 0; t < tn; t++) {
            float s = block_sum(acc[t], scratch);
            if (threadIdx.x == 0) out[(size_t)(t0 + t) * rows + r] = s;
        }
    }
}

#define FUSED_STORE 0
#define FUSED_ACCUMULATE 1
#define FUSED_SILU_GATE 2

// Up to three matrices over one input in one launch, one block per row, with
// what follows the product done before the store: a bias (q/k/v), a sum into
// the output (a residual), or silu(gate) * up (the FFN, where a block takes a
// row of both). Dtypes may differ between the matrices (Q4_K_M files mix them).
// Sums in the same order as matvec, so fused and plain results are equal.
extern "C" __global__ void matvec_fused(const u8* w0, int rb0, int rows0, int dt0, float* out0, const float* bias0,
                                        const u8* w1, int rb1, int rows1, int dt1, float* out1, const float* bias1,
                                        const u8* w2, int rb2, int rows2, int dt2, float* out2, const float* bias2,
                                        int cols, const float* x, int n, int mode) {
    __shared__ float scratch[32];
    float acc[TOKENS_PER_PASS], up[TOKENS_PER_PASS];
    int r = blockIdx.x;
    if (mode == FUSED_SILU_GATE) {
        for (int t0 = 0; t0 < n; t0 += TOKENS_PER_PASS) {
            int tn = min(TOKENS_PER_PASS, n - t0);
            const float* xs = x + (size_t)t0 * cols;
            thread_dots_any(dt0, w0 + (size_t)r * rb0, cols, xs, tn, acc);
            thread_dots_any(dt1, w1 + (size_t)r * rb1, cols, xs, tn, up);
            for (int t = 0; t < tn; t++) {
                float g = block_sum(acc[t], scratch), u = block_sum(up[t], scratch);
                if (threadIdx.x == 0) out0[(size_t)(t0 + t) * rows0 + r] = g / (1.0f + expf(-g)) * u;
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
    for (int t0 = 0; t0 < n; t0 += TOKENS_PER_PASS) {
        int tn = min(TOKENS_PER_PASS, n - t0);
        thread_dots_any(dt, w + (size_t)r * rb, cols, x + (size_t)t0 * cols, tn, acc);
        for (int t = 0; t < tn; t++) {
            float s = block_sum(acc[t], scratch);
            if (threadIdx.x != 0) continue;
            float* o = out + (size_t)(t0 + t) * rows + r;
            if (bias) s += bias[r];
            *o = mode == FUSED_ACCUMULATE ? *o + s : s;
        }
    }
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
    extern "C" __global__ void matvec_##NAME(const u8* w, int row_bytes, int rows, int cols,         \
                                             const float* x, int n, float* out) {                     \
        matvec<T>(w, row_bytes, rows, cols, x, n, out);                                               \
    }                                                                                                 \
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

// One block per row: out = x / sqrt(mean(x^2) + eps) * w.
extern "C" __global__ void rms_norm(const float* x, const float* w, int width, float eps, float* out) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * width;
    float s = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += row[i] * row[i];
    float scale = rsqrtf(block_sum(s, scratch) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)blockIdx.x * width + i] = row[i] * scale * w[i];
}

// One block per row: rotates every pair of every head of row r at positions[r],
// the `heads` heads of x and then the `heads2` heads of x2 (queries and keys in
// one pass; heads2 = 0 for one buffer). halves != 0: pairs (i, i + d/2); else (2i, 2i + 1).
extern "C" __global__ void rope(float* x, int heads, float* x2, int heads2, const u32* positions, int head_dim,
                                float base, int halves) {
    int r = blockIdx.x, half = head_dim / 2;
    float pos = (float)positions[r];
    for (int k = threadIdx.x; k < (heads + heads2) * half; k += blockDim.x) {
        int h = k / half, i = k % half;
        float* head = h < heads ? x + ((size_t)r * heads + h) * head_dim : x2 + ((size_t)r * heads2 + h - heads) * head_dim;
        float angle = pos * powf(base, -2.0f * (float)i / (float)head_dim);
        float s, c;
        sincosf(angle, &s, &c);
        int a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
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

#define ATTENTION_THREADS 128
#define MAX_HEAD_DIM 256
#define NEG_INF __int_as_float(0xff800000)

__device__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    __syncthreads();
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float m = scratch[0];
    for (int i = 1; i < (int)(blockDim.x / 32); i++) m = fmaxf(m, scratch[i]);
    return m;
}

// Causal attention, flash-decoding style: block (t, h, s) takes query row
// first_row + t, head h, and split s of its cached positions 0..positions[row]
// (the positions cut into `splits` equal chunks), and walks them in tiles of
// 128 with a running max and sum (online softmax), so no buffer grows with the
// context. One split writes the output; several write (max, sum, weighted
// values) to `partial` for attention_combine.
extern "C" __global__ void attention(const float* q, const float* keys, const float* values, const u32* positions,
                                     int first_row, int heads, int kv_heads, int head_dim, int splits, float* out,
                                     float* partial) {
    __shared__ float qs[MAX_HEAD_DIM];
    __shared__ float p[ATTENTION_THREADS];
    __shared__ float scratch[32];
    int t = blockIdx.x, h = blockIdx.y, s = blockIdx.z, row = first_row + t;
    int kvh = h / (heads / kv_heads), kv_dim = kv_heads * head_dim;
    int n_kv = (int)positions[row] + 1, chunk = (n_kv + splits - 1) / splits;
    int begin = s * chunk, end = min(n_kv, begin + chunk);
    float scale = rsqrtf((float)head_dim);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = q[(size_t)row * heads * head_dim + h * head_dim + d] * scale;
    __syncthreads();
    float m = NEG_INF, l = 0.0f, acc[MAX_HEAD_DIM / ATTENTION_THREADS];
    for (int i = 0; i < MAX_HEAD_DIM / ATTENTION_THREADS; i++) acc[i] = 0.0f;
    for (int tile = begin; tile < end; tile += ATTENTION_THREADS) {
        int j = tile + threadIdx.x;
        float score = NEG_INF;
        if (j < end) {
            const float* k = keys + (size_t)j * kv_dim + kvh * head_dim;
            score = 0.0f;
            for (int d = 0; d < head_dim; d++) score = fmaf(qs[d], k[d], score);
        }
        float m_new = fmaxf(m, block_max(score, scratch));
        float e = j < end ? expf(score - m_new) : 0.0f;
        p[threadIdx.x] = e;
        float correction = expf(m - m_new);
        l = l * correction + block_sum(e, scratch);
        __syncthreads();
        int in_tile = min(ATTENTION_THREADS, end - tile);
        for (int i = 0, d = threadIdx.x; d < head_dim; i++, d += blockDim.x) {
            float a = acc[i] * correction;
            const float* v = values + (size_t)tile * kv_dim + kvh * head_dim + d;
            for (int jj = 0; jj < in_tile; jj++) a = fmaf(p[jj], v[(size_t)jj * kv_dim], a);
            acc[i] = a;
        }
        m = m_new;
        __syncthreads();
    }
    if (splits == 1) {
        float* o = out + (size_t)row * heads * head_dim + h * head_dim;
        for (int i = 0, d = threadIdx.x; d < head_dim; i++, d += blockDim.x) o[d] = acc[i] / l;
        return;
    }
    float* part = partial + ((size_t)(t * heads + h) * splits + s) * (head_dim + 2);
    if (threadIdx.x == 0) {
        part[0] = m;
        part[1] = l;
    }
    for (int i = 0, d = threadIdx.x; d < head_dim; i++, d += blockDim.x) part[2 + d] = acc[i];
}

// Merges the splits of attention: block (t, h) rescales each split's sum and
// weighted values to the largest max among them.
extern "C" __global__ void attention_combine(const float* partial, int first_row, int heads, int head_dim, int splits,
                                             float* out) {
    int t = blockIdx.x, h = blockIdx.y, stride = head_dim + 2;
    const float* parts = partial + (size_t)(t * heads + h) * splits * stride;
    float m = NEG_INF;
    for (int s = 0; s < splits; s++) m = fmaxf(m, parts[s * stride]);
    float l = 0.0f;
    for (int s = 0; s < splits; s++) l += parts[s * stride + 1] * expf(parts[s * stride] - m);
    float* o = out + (size_t)(first_row + t) * heads * head_dim + h * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < splits; s++) a = fmaf(parts[s * stride + 2 + d], expf(parts[s * stride] - m), a);
        o[d] = a / l;
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
