// Kernels that read one weight type (selected by the WT_* macro, see quant.cuh): matrix-vector products for
// decode, dequantization to f16/bf16 tiles for tensor-core GEMMs, and embedding lookups. Compiled once per
// weight type a model uses.
//
// A weight matrix W is [M rows, K cols], each row whole blocks of WT_BLOCK_BYTES bytes; `wt_deq32(row, u, v)`
// decodes the 32 weights 32u..32u+31 of a row. K is a multiple of 32 (checked at upload).

#define WARPS_PER_BLOCK 4

// ---- Matrix-vector products (decode) ---------------------------------------------------------------------
// One warp per weight row. `row_dot` leaves each lane's partial sums of row · x[c] for the NC activation rows
// c; the kernels reduce them over the warp. Activations are read through the read-only cache (every warp of
// the grid reads the same x).

// acc[c] += w[0..n) · x[c][0..n) for n floats of weights `w` at x offset `k`.
template <int NC, int N>
__device__ __forceinline__ void dot_x(const float* w, const float* __restrict__ x, int K, int k, float* acc) {
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const float* xc = x + (size_t)c * K + k;
#pragma unroll
        for (int e = 0; e < N; e += 4) {
            const float4 q = __ldg((const float4*)(xc + e));
            acc[c] = fmaf(w[e], q.x, acc[c]);
            acc[c] = fmaf(w[e + 1], q.y, acc[c]);
            acc[c] = fmaf(w[e + 2], q.z, acc[c]);
            acc[c] = fmaf(w[e + 3], q.w, acc[c]);
        }
    }
}

#if defined(WT_F32) || defined(WT_F16) || defined(WT_BF16)
#if defined(WT_F32)
#define CHUNK_ELEMS 4
#else
#define CHUNK_ELEMS 8
#endif
// The 16 bytes of a chunk as CHUNK_ELEMS floats.
__device__ __forceinline__ void chunk_to_f32(uint4 v, float* f) {
#if defined(WT_F32)
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
#else
    const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
#if defined(WT_BF16)
        f[2 * j] = __uint_as_float(w[j] << 16);
        f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
#else
        f[2 * j] = f16_to_f32((u16)(w[j] & 0xffffu));
        f[2 * j + 1] = f16_to_f32((u16)(w[j] >> 16));
#endif
    }
#endif
}

// Float rows: lane l reads the 16-byte chunks l, l + 32, ..., so each load instruction of the warp covers 512
// contiguous bytes; four chunks per lane are loaded for the next step while the current four are multiplied
// (software pipelining: eight in flight).
#define PIPE 4
template <int NC>
__device__ __forceinline__ void row_dot(const u8* __restrict__ w, int r, const float* __restrict__ x, int K,
                                        float* acc) {
    const int lane = threadIdx.x & 31;
    const int chunks = K / CHUNK_ELEMS;
    const uint4* row = (const uint4*)(w + (size_t)r * (size_t)K * (16 / CHUNK_ELEMS));
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 cur[PIPE];
#pragma unroll
    for (int j = 0; j < PIPE; j++) cur[j] = lane + 32 * j < chunks ? __ldg(row + lane + 32 * j) : zero;
    for (int ch = lane; ch < chunks; ch += 32 * PIPE) {
        uint4 nxt[PIPE];
        const int nx = ch + 32 * PIPE;
#pragma unroll
        for (int j = 0; j < PIPE; j++) nxt[j] = nx + 32 * j < chunks ? __ldg(row + nx + 32 * j) : zero;
#pragma unroll
        for (int j = 0; j < PIPE; j++) {
            if (ch + 32 * j < chunks) {
                float f[CHUNK_ELEMS];
                chunk_to_f32(cur[j], f);
                dot_x<NC, CHUNK_ELEMS>(f, x, K, (ch + 32 * j) * CHUNK_ELEMS, acc);
            }
        }
#pragma unroll
        for (int j = 0; j < PIPE; j++) cur[j] = nxt[j];
    }
}

#else
// Block rows: lane l decodes the 32-weight units l, l + 32, ... of the row (wt_deq32_fast: one load pass and
// the decode per unit); two units per step, so the second's loads are in flight while the first is used.
template <int NC>
__device__ __forceinline__ void row_dot(const u8* __restrict__ w, int r, const float* __restrict__ x, int K,
                                        float* acc) {
    const int lane = threadIdx.x & 31;
    const int units = K >> 5;
    const u8* row = w + (size_t)r * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    int u = lane;
    for (; u + 32 < units; u += 64) {
        float v0[32], v1[32];
        wt_deq32_fast(row, u, v0);
        wt_deq32_fast(row, u + 32, v1);
        dot_x<NC, 32>(v0, x, K, u << 5, acc);
        dot_x<NC, 32>(v1, x, K, (u + 32) << 5, acc);
    }
    if (u < units) {
        float v[32];
        wt_deq32_fast(row, u, v);
        dot_x<NC, 32>(v, x, K, u << 5, acc);
    }
}
#endif

#ifdef HAS_Q8
// ---- The same products against 8-bit activations (xq: [NC, K] signed bytes; xd: [NC, K / 32] of (d, d *
// sum q)): integer dot products, four weights per instruction, instead of decoding every weight to a float.
__device__ __forceinline__ int dp4a(u32 a, u32 b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

template <int NC>
__device__ __forceinline__ void row_dot_q8(const u8* __restrict__ w, int r, const signed char* __restrict__ xq,
                                           const float2* __restrict__ xd, int K, float* acc) {
    const int lane = threadIdx.x & 31;
    const int units = K >> 5;
    const u8* row = w + (size_t)r * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    for (int u = lane; u < units; u += 32) {
        u32 q[8];
        float a0, a1, b;
        unit_q8(row, u, q, &a0, &a1, &b);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const uint4* xp = (const uint4*)(xq + (size_t)c * K + ((size_t)u << 5));
            const uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
            const float2 s = __ldg(xd + (size_t)c * units + u);
            int i0 = dp4a(q[0], x0.x, 0);
            i0 = dp4a(q[1], x0.y, i0);
            i0 = dp4a(q[2], x0.z, i0);
            i0 = dp4a(q[3], x0.w, i0);
            int i1 = dp4a(q[4], x1.x, 0);
            i1 = dp4a(q[5], x1.y, i1);
            i1 = dp4a(q[6], x1.z, i1);
            i1 = dp4a(q[7], x1.w, i1);
            acc[c] += s.x * (a0 * (float)i0 + a1 * (float)i1) + b * s.y;
        }
    }
}

#endif

// The activations a product reads: f32 rows [NC, K], or (with HAS_Q8) the same rows quantized to 8 bits.
// `dot` leaves each lane's partial sums of weight row r with every activation row, as row_dot does.
struct XF32 {
    const float* __restrict__ x;
    int K;
    template <int NC>
    __device__ __forceinline__ void dot(const u8* __restrict__ w, int r, float* acc) const {
        row_dot<NC>(w, r, x, K, acc);
    }
};

#ifdef HAS_Q8
struct XQ8 {
    const signed char* __restrict__ xq;
    const float2* __restrict__ xd;
    int K;
    template <int NC>
    __device__ __forceinline__ void dot(const u8* __restrict__ w, int r, float* acc) const {
        row_dot_q8<NC>(w, r, xq, xd, K, acc);
    }
};
#endif

// Row `r` of the three matrices' rows taken in order, as (weights, output, rows of that matrix, row in it);
// false past the end.
__device__ __forceinline__ bool pick_row(int r, const u8* w0, float* y0, int m0, const u8* w1, float* y1, int m1,
                                         const u8* w2, float* y2, int m2, const u8** w, float** y, int* m,
                                         int* rr) {
    if (r < m0) {
        *w = w0, *y = y0, *m = m0, *rr = r;
        return true;
    }
    r -= m0;
    if (r < m1) {
        *w = w1, *y = y1, *m = m1, *rr = r;
        return true;
    }
    r -= m1;
    if (r < m2) {
        *w = w2, *y = y2, *m = m2, *rr = r;
        return true;
    }
    return false;
}

// y_j[c * M_j + r] = W_j[r] · x[c] for up to three matrices of this type sharing the activations `xs` (a
// layer's q, k and v; or one matrix with M1 = M2 = 0): one launch. Each warp takes two rows (of the three
// matrices' rows in order), so two rows' loads are in flight at once.
template <int NC, class X>
__device__ __forceinline__ void matvec_impl(const u8* __restrict__ w0, float* __restrict__ y0, int m0,
                                            const u8* __restrict__ w1, float* __restrict__ y1, int m1,
                                            const u8* __restrict__ w2, float* __restrict__ y2, int m2, X xs) {
    const int r0 = 2 * (blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5));
    const u8 *wa, *wb;
    float *ya, *yb;
    int ma, mb, ra, rb;
    if (!pick_row(r0, w0, y0, m0, w1, y1, m1, w2, y2, m2, &wa, &ya, &ma, &ra)) return;
    const bool two = pick_row(r0 + 1, w0, y0, m0, w1, y1, m1, w2, y2, m2, &wb, &yb, &mb, &rb);
    float a[NC], b[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) a[c] = b[c] = 0.0f;
    xs.template dot<NC>(wa, ra, a);
    if (two) xs.template dot<NC>(wb, rb, b);
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const float sa = warp_sum(a[c]);
        const float sb = warp_sum(b[c]);
        if ((threadIdx.x & 31) == 0) {
            ya[(size_t)c * ma + ra] = sa;
            if (two) yb[(size_t)c * mb + rb] = sb;
        }
    }
}

// y[c * M + r] = act(Wg[r] · x[c]) * (Wu[r] · x[c]): a gated MLP's gate and up products and its activation
// (common.cuh's gate_act) in one pass, one warp per row of both.
template <int NC, class X>
__device__ __forceinline__ void glu_impl(const u8* __restrict__ wg, const u8* __restrict__ wu, X xs,
                                         float* __restrict__ y, int M, int act) {
    const int r = blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= M) return;
    float g[NC], u[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) g[c] = u[c] = 0.0f;
    xs.template dot<NC>(wg, r, g);
    xs.template dot<NC>(wu, r, u);
#pragma unroll
    for (int c = 0; c < NC; c++) {
        const float gs = warp_sum(g[c]), us = warp_sum(u[c]);
        if ((threadIdx.x & 31) == 0) y[(size_t)c * M + r] = gate_act(gs, act) * us;
    }
}

#define MATVEC(NC)                                                                                        \
    extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)                                    \
        matvec_##NC(const u8* __restrict__ w0, float* __restrict__ y0, int m0, const u8* __restrict__ w1,  \
                    float* __restrict__ y1, int m1, const u8* __restrict__ w2, float* __restrict__ y2, int m2, \
                    const float* __restrict__ x, int K) {                                                 \
        matvec_impl<NC>(w0, y0, m0, w1, y1, m1, w2, y2, m2, XF32{x, K});                                  \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)                                    \
        glu_##NC(const u8* __restrict__ wg, const u8* __restrict__ wu, const float* __restrict__ x,       \
                 float* __restrict__ y, int M, int K, int act) {                                          \
        glu_impl<NC>(wg, wu, XF32{x, K}, y, M, act);                                                      \
    }

// The same kernels against 8-bit activations (xq: [NC, K] signed bytes; xd: [NC, K / 32] of (d, d * sum q)).
#define MATVEC_Q8(NC)                                                                                      \
    extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)                                     \
        mvq8_##NC(const u8* __restrict__ w0, float* __restrict__ y0, int m0, const u8* __restrict__ w1,     \
                  float* __restrict__ y1, int m1, const u8* __restrict__ w2, float* __restrict__ y2, int m2, \
                  const signed char* __restrict__ xq, const float2* __restrict__ xd, int K) {              \
        matvec_impl<NC>(w0, y0, m0, w1, y1, m1, w2, y2, m2, XQ8{xq, xd, K});                               \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)                                     \
        gluq8_##NC(const u8* __restrict__ wg, const u8* __restrict__ wu, const signed char* __restrict__ xq, \
                   const float2* __restrict__ xd, float* __restrict__ y, int M, int K, int act) {         \
        glu_impl<NC>(wg, wu, XQ8{xq, xd, K}, y, M, act);                                                   \
    }

#ifdef HAS_Q8
MATVEC_Q8(1)
MATVEC_Q8(2)
MATVEC_Q8(4)
MATVEC_Q8(8)
#endif

// Activation-row counts compiled (the host splits other counts into these: 7 = 4 + 2 + 1); fewer variants
// keep the run-time compile of a weight module short.
MATVEC(1)
MATVEC(2)
MATVEC(4)
MATVEC(8)

// out[(r - r0) * K + k] = W[r, k] as f16 (to_bf16 = 0) or bf16 (1), for rows r0 <= r < r1: a slab of W for a
// tensor-core GEMM. One thread per 32-weight unit; four 16-byte stores each.
extern "C" __global__ void dequant_rows(const u8* __restrict__ w, u16* __restrict__ out, int r0, int r1, int K,
                                        int to_bf16) {
    const long long units = (long long)(K >> 5);
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)(r1 - r0) * units) return;
    const int r = r0 + (int)(i / units);
    const int u = (int)(i % units);
    const u8* row = w + (size_t)r * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    float v[32];
    wt_deq32_fast(row, u, v);
    u32 packed[16];
#pragma unroll
    for (int j = 0; j < 16; j++) {
        u32 lo = to_bf16 ? f32_to_bf16_bits(v[2 * j]) : f32_to_f16_bits(v[2 * j]);
        u32 hi = to_bf16 ? f32_to_bf16_bits(v[2 * j + 1]) : f32_to_f16_bits(v[2 * j + 1]);
        packed[j] = lo | (hi << 16);
    }
    uint4* dst = (uint4*)(out + (size_t)(r - r0) * K + ((size_t)u << 5));
#pragma unroll
    for (int j = 0; j < 4; j++)
        dst[j] = make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2], packed[4 * j + 3]);
}

// out[t * K + k] = W[tokens[t], k] * scale: token embeddings. One thread per 32-weight unit.
extern "C" __global__ void embed_rows(const u8* __restrict__ w, const u32* __restrict__ tokens,
                                      float* __restrict__ out, int n, int K, float scale, int scaled) {
    const int units = K >> 5;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * units) return;
    const int t = i / units, u = i % units;
    const u8* row = w + (size_t)tokens[t] * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    float v[32];
    wt_deq32_fast(row, u, v);
    float* o = out + (size_t)t * K + (u << 5);
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = scaled ? __fmul_rn(v[j], scale) : v[j];
}

// mismatches += number of weights where wt_deq32_fast differs from wt_deq32 (bits; NaNs equal), over `units`
// 32-weight units of one row: the fast decoders checked against the reference ones on the GPU itself.
extern "C" __global__ void deq_compare(const u8* __restrict__ row, int units, unsigned int* mismatches) {
    const int u = blockIdx.x * blockDim.x + threadIdx.x;
    if (u >= units) return;
    float a[32], b[32];
    wt_deq32(row, u, a);
    wt_deq32_fast(row, u, b);
    unsigned int bad = 0;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        const bool same = __float_as_uint(a[i]) == __float_as_uint(b[i]) || (a[i] != a[i] && b[i] != b[i]);
        bad += same ? 0u : 1u;
    }
    if (bad) atomicAdd(mismatches, bad);
}
