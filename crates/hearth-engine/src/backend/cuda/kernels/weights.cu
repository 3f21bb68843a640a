// Kernels that read one weight type (selected by the WT_* macro, see quant.cuh): matrix-vector products for
// decode, dequantization to f16/bf16 tiles for tensor-core GEMMs, and embedding lookups. Compiled once per
// weight type a model uses.
//
// A weight matrix W is [M rows, K cols], each row whole blocks of WT_BLOCK_BYTES bytes; `wt_deq32(row, u, v)`
// decodes the 32 weights 32u..32u+31 of a row. K is a multiple of 32 (checked at upload).

// Threads of a matrix-vector block: all of them stream the block's NR weight rows together, so a row's bytes
// are spread over four warps and a matrix of few rows still keeps the whole GPU's loads in flight. (Row
// groups of one or two warps for short rows, chosen at run time, measured slower on an H200 for every type:
// the loops lose their compile-time stride.)
#define MV_THREADS 128
#define MV_WARPS (MV_THREADS / 32)
// Weight rows a block reads at once (a product's rows, or a gated MLP's gate and up rows in pairs), so NR
// times the loads are in flight per thread: MV_NR, a -D define the host sets (2 or 4).
#ifndef MV_NR
#define MV_NR 2
#endif
#define NR MV_NR
// Whether the matrix-vector kernels ask L2 for their rows before waiting for the previous kernel (-D).
#ifndef MV_PREFETCH
#define MV_PREFETCH 1
#endif
// Blocks per multiprocessor the compiler must fit (a register cap; 0: no cap), a -D define. It binds the
// one-activation-row kernels only (batch-1 decode): the wider ones keep more sums and activations in
// registers and spill under a cap that suits the first.
#ifndef MV_MIN_BLOCKS
#define MV_MIN_BLOCKS 0
#endif
#if MV_MIN_BLOCKS > 0
#define MV_BOUNDS_1 __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS)
#else
#define MV_BOUNDS_1 __launch_bounds__(MV_THREADS)
#endif
#define MV_BOUNDS_2 __launch_bounds__(MV_THREADS)
#define MV_BOUNDS_4 __launch_bounds__(MV_THREADS)
#define MV_BOUNDS_8 __launch_bounds__(MV_THREADS)
#define MV_BOUNDS(NC) MV_BOUNDS_##NC

// ---- Matrix-vector products (decode) ---------------------------------------------------------------------
// Thread t of a block takes the 16-byte chunks (or 32-weight units) t, t + T, ... (T = MV_THREADS) of each of
// its NR rows. `rows_dot` leaves each thread's partial sums of row i · x[c] for the NC activation rows c;
// `block_rows_sum` adds them over the block. Activations are read through the read-only cache (every block of
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

// Float rows: PIPE chunks of each of the NR rows are loaded before any is used (2 PIPE loads in flight per
// thread); a warp's load instruction covers 512 contiguous bytes of a row.
#define PIPE 4
template <int NC>
__device__ __forceinline__ void rows_dot(const u8* const (&w)[NR], const int (&r)[NR],
                                         const float* __restrict__ x, int K, float (&acc)[NR][NC], int t,
                                         int T) {
    const int chunks = K / CHUNK_ELEMS;
    const uint4* row[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) row[i] = (const uint4*)(w[i] + (size_t)r[i] * (size_t)K * (16 / CHUNK_ELEMS));
    uint4 v[NR][PIPE];
    auto load = [&](int ch) {
#pragma unroll
        for (int j = 0; j < PIPE; j++)
#pragma unroll
            for (int i = 0; i < NR; i++)
                if (ch + T * j < chunks) v[i][j] = __ldg(row[i] + ch + T * j);
    };
    // The first chunks are weights only: loaded before waiting for the previous kernel.
    load(t);
    PDL_PROLOGUE();
    for (int ch = t; ch < chunks; ch += T * PIPE) {
        if (ch != t) load(ch);
#pragma unroll
        for (int j = 0; j < PIPE; j++) {
            if (ch + T * j < chunks) {
#pragma unroll
                for (int i = 0; i < NR; i++) {
                    float f[CHUNK_ELEMS];
                    chunk_to_f32(v[i][j], f);
                    dot_x<NC, CHUNK_ELEMS>(f, x, K, (ch + T * j) * CHUNK_ELEMS, acc[i]);
                }
            }
        }
    }
}

#else
// Block rows: thread t decodes the 32-weight units t, t + T, ... of each row (wt_deq32_fast: one load
// pass and the decode per unit); the NR rows' units are decoded before they are used.
template <int NC>
__device__ __forceinline__ void rows_dot(const u8* const (&w)[NR], const int (&r)[NR],
                                         const float* __restrict__ x, int K, float (&acc)[NR][NC], int t,
                                         int T) {
    const int units = K >> 5;
    const u8* row[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) row[i] = w[i] + (size_t)r[i] * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    PDL_PROLOGUE();
    for (int u = t; u < units; u += T) {
        float v[NR][32];
#pragma unroll
        for (int i = 0; i < NR; i++) wt_deq32_fast(row[i], u, v[i]);
#pragma unroll
        for (int i = 0; i < NR; i++) dot_x<NC, 32>(v[i], x, K, u << 5, acc[i]);
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

// A unit's share of a row · activation-row product: its 8-bit codes q against the activations' 32 bytes (x0,
// x1) and their block's (d, d * sum q) `s`, with the unit's factors (see decode_fast.cuh's unit_q8).
__device__ __forceinline__ float unit_dot_q8(const u32 (&q)[8], float a0, float a1, float b, uint4 x0, uint4 x1,
                                             float2 s) {
    int i0 = dp4a(q[0], x0.x, 0);
    i0 = dp4a(q[1], x0.y, i0);
    i0 = dp4a(q[2], x0.z, i0);
    i0 = dp4a(q[3], x0.w, i0);
    int i1 = dp4a(q[4], x1.x, 0);
    i1 = dp4a(q[5], x1.y, i1);
    i1 = dp4a(q[6], x1.z, i1);
    i1 = dp4a(q[7], x1.w, i1);
    return s.x * (a0 * (float)i0 + a1 * (float)i1) + b * s.y;
}

// Units per thread and row loaded before any is used: with NR rows, UPT NR units' loads in flight per thread
// (MV_UPT, a -D define the host sets).
#ifndef MV_UPT
#define MV_UPT 1
#endif
#define UPT MV_UPT
// Whether the one-row 8-bit products decode their first weights after the wait for the previous kernel (-D,
// 0 or 1; see rows_dot_q8_late).
#ifndef MV_LATE_DECODE
#define MV_LATE_DECODE 1
#endif
// The first units' raw words loaded before the wait for the previous kernel, and decoded only after the
// activations' loads are issued, so a block's weight and activation round trips overlap: a block past the
// grid's first wave finds the wait already over, and decoding before it made its activation loads wait for
// its weights (an H200, Q4_K_M decode after 2,048 tokens: 403-404 tok/s against 384-389).
template <int NC>
__device__ __forceinline__ void rows_dot_q8_late(const u8* const (&row)[NR], const signed char* __restrict__ xq,
                                                 const float2* __restrict__ xd, int K, float (&acc)[NR][NC], int t,
                                                 int T) {
    const int units = K >> 5;
    Q8Raw raw[UPT][NR];
    auto fetch = [&](int u0) {
#pragma unroll
        for (int j = 0; j < UPT; j++)
#pragma unroll
            for (int i = 0; i < NR; i++)
                if (u0 + T * j < units) unit_q8_load(row[i], u0 + T * j, raw[j][i]);
    };
    fetch(t);
    PDL_PROLOGUE();
    for (int u0 = t; u0 < units; u0 += T * UPT) {
        if (u0 != t) fetch(u0);
#pragma unroll
        for (int j = 0; j < UPT; j++) {
            const int u = u0 + T * j;
            if (u >= units) break;
            uint4 x0[NC], x1[NC];
            float2 s[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                const uint4* xp = (const uint4*)(xq + (size_t)c * K + ((size_t)u << 5));
                x0[c] = __ldg(xp), x1[c] = __ldg(xp + 1);
                s[c] = __ldg(xd + (size_t)c * units + u);
            }
#pragma unroll
            for (int i = 0; i < NR; i++) {
                u32 q[8];
                float a0, a1, b;
                unit_q8_decode(raw[j][i], u, q, &a0, &a1, &b);
#pragma unroll
                for (int c = 0; c < NC; c++) acc[i][c] += unit_dot_q8(q, a0, a1, b, x0[c], x1[c], s[c]);
            }
        }
    }
}

// The same with the first units decoded before the wait: the wider kernels (NC > 1), where keeping the raw
// words across the wait costs registers that the late decode is not measured to repay.
template <int NC>
__device__ __forceinline__ void rows_dot_q8_early(const u8* const (&row)[NR], const signed char* __restrict__ xq,
                                                  const float2* __restrict__ xd, int K, float (&acc)[NR][NC], int t,
                                                  int T) {
    const int units = K >> 5;
    u32 q[UPT][NR][8];
    float a0[UPT][NR], a1[UPT][NR], b[UPT][NR];
    auto load = [&](int u0) {
#pragma unroll
        for (int j = 0; j < UPT; j++)
#pragma unroll
            for (int i = 0; i < NR; i++)
                if (u0 + T * j < units) unit_q8(row[i], u0 + T * j, q[j][i], &a0[j][i], &a1[j][i], &b[j][i]);
    };
    // The first units are weights only: loaded and decoded before waiting for the previous kernel.
    load(t);
    PDL_PROLOGUE();
    for (int u0 = t; u0 < units; u0 += T * UPT) {
        if (u0 != t) load(u0);
#pragma unroll
        for (int j = 0; j < UPT; j++) {
            const int u = u0 + T * j;
            if (u >= units) break;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                const uint4* xp = (const uint4*)(xq + (size_t)c * K + ((size_t)u << 5));
                const uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
                const float2 s = __ldg(xd + (size_t)c * units + u);
#pragma unroll
                for (int i = 0; i < NR; i++) acc[i][c] += unit_dot_q8(q[j][i], a0[j][i], a1[j][i], b[j][i], x0, x1, s);
            }
        }
    }
}

template <int NC>
__device__ __forceinline__ void rows_dot_q8(const u8* const (&w)[NR], const int (&r)[NR],
                                            const signed char* __restrict__ xq, const float2* __restrict__ xd,
                                            int K, float (&acc)[NR][NC], int t, int T) {
    const u8* row[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) row[i] = w[i] + (size_t)r[i] * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    if (MV_LATE_DECODE && NC == 1)
        rows_dot_q8_late<NC>(row, xq, xd, K, acc, t, T);
    else
        rows_dot_q8_early<NC>(row, xq, xd, K, acc, t, T);
}

#endif

// The activations a product reads: f32 rows [NC, K], or (with HAS_Q8) the same rows quantized to 8 bits.
// `dot` leaves each thread's partial sums of the NR weight rows with every activation row, as rows_dot does.
struct XF32 {
    const float* __restrict__ x;
    int K;
    template <int NC>
    __device__ __forceinline__ void dot(const u8* const (&w)[NR], const int (&r)[NR], float (&acc)[NR][NC], int t,
                                        int T) const {
        rows_dot<NC>(w, r, x, K, acc, t, T);
    }
};

#ifdef HAS_Q8
struct XQ8 {
    const signed char* __restrict__ xq;
    const float2* __restrict__ xd;
    int K;
    template <int NC>
    __device__ __forceinline__ void dot(const u8* const (&w)[NR], const int (&r)[NR], float (&acc)[NR][NC], int t,
                                        int T) const {
        rows_dot_q8<NC>(w, r, xq, xd, K, acc, t, T);
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

// Adds each thread's acc[i][c] over the block; thread 0 gets the totals back in acc.
template <int NC>
__device__ __forceinline__ void block_rows_sum(float (&acc)[NR][NC]) {
    __shared__ float part[MV_WARPS][NR][NC];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const float v = warp_sum(acc[i][c]);
            if (lane == 0) part[w][i][c] = v;
        }
    __syncthreads();
    if (threadIdx.x == 0) {
#pragma unroll
        for (int i = 0; i < NR; i++)
#pragma unroll
            for (int c = 0; c < NC; c++) {
                float v = 0.0f;
#pragma unroll
                for (int k = 0; k < MV_WARPS; k++) v += part[k][i][c];
                acc[i][c] = v;
            }
    }
}

// The block's products of its NR weight rows (those marked ok; the others repeat a real row) with the
// activations: the rows are asked of L2 before the wait for the previous kernel (MV_PREFETCH), and each
// thread's first weights are loaded before it too (the f32 and 8-bit `dot`s wait after their first loads, so
// a product's first DRAM round trip overlaps the kernel before it); then every thread takes part and thread
// 0 gets the sums in acc. False, after the wait, when the block has no row.
template <int NC, class X>
__device__ __forceinline__ bool block_products(const u8* const (&w)[NR], const int (&r)[NR], const bool (&ok)[NR],
                                               X xs, float (&acc)[NR][NC]) {
#if MV_PREFETCH
    const size_t row_bytes = (size_t)(xs.K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
#pragma unroll
    for (int i = 0; i < NR; i++)
        if (ok[i]) prefetch_l2(w[i] + (size_t)r[i] * row_bytes, row_bytes);
#endif
    if (!ok[0]) {
        PDL_PROLOGUE();
        return false;
    }
#pragma unroll
    for (int i = 0; i < NR; i++)
#pragma unroll
        for (int c = 0; c < NC; c++) acc[i][c] = 0.0f;
    xs.template dot<NC>(w, r, acc, threadIdx.x, MV_THREADS);
    block_rows_sum<NC>(acc);
    return true;
}

// y_j[c * M_j + r] = W_j[r] · x[c] for up to three matrices of this type sharing the activations `xs` (a
// layer's q, k and v; or one matrix with M1 = M2 = 0): one launch. Block b takes rows NR b .. NR b + NR - 1 of
// the three matrices' rows in order.
template <int NC, class X>
__device__ __forceinline__ void matvec_impl(const u8* __restrict__ w0, float* __restrict__ y0, int m0,
                                            const u8* __restrict__ w1, float* __restrict__ y1, int m1,
                                            const u8* __restrict__ w2, float* __restrict__ y2, int m2, X xs) {
    const int r0 = NR * blockIdx.x;
    const u8* w[NR];
    float* y[NR];
    int m[NR], r[NR];
    bool ok[NR];
#pragma unroll
    for (int i = 0; i < NR; i++) {
        ok[i] = pick_row(r0 + i, w0, y0, m0, w1, y1, m1, w2, y2, m2, &w[i], &y[i], &m[i], &r[i]);
        // Past the last row the block reads its first row again and writes it once.
        if (!ok[i]) w[i] = w[0], y[i] = y[0], m[i] = m[0], r[i] = r[0];
    }
    float acc[NR][NC];
    if (!block_products<NC>(w, r, ok, xs, acc)) return;
    if (threadIdx.x == 0) {
#pragma unroll
        for (int i = 0; i < NR; i++)
            if (ok[i])
#pragma unroll
                for (int c = 0; c < NC; c++) y[i][(size_t)c * m[i] + r[i]] = acc[i][c];
    }
}

// y[c * M + r] = act(Wg[r] · x[c]) * (Wu[r] · x[c]): a gated MLP's gate and up products and its activation
// (common.cuh's gate_act) in one pass. Block b takes rows NR / 2 b .. of both matrices.
template <int NC, class X>
__device__ __forceinline__ void glu_impl(const u8* __restrict__ wg, const u8* __restrict__ wu, X xs,
                                         float* __restrict__ y, int M, int act) {
    constexpr int RB = NR / 2;
    const int rb = RB * blockIdx.x;
    const u8* w[NR];
    int rr[NR];
    bool ok[NR];
#pragma unroll
    for (int j = 0; j < RB; j++) {
        w[2 * j] = wg, w[2 * j + 1] = wu;
        rr[2 * j] = rr[2 * j + 1] = min(rb + j, M - 1);  // past the last row: read it again, write nothing
        ok[2 * j] = ok[2 * j + 1] = rb + j < M;
    }
    float acc[NR][NC];
    if (!block_products<NC>(w, rr, ok, xs, acc)) return;
    if (threadIdx.x == 0) {
#pragma unroll
        for (int j = 0; j < RB; j++)
            if (rb + j < M)
#pragma unroll
                for (int c = 0; c < NC; c++)
                    y[(size_t)c * M + rb + j] = gate_act(acc[2 * j][c], act) * acc[2 * j + 1][c];
    }
}

#define MATVEC(NC)                                                                                        \
    extern "C" __global__ void MV_BOUNDS(NC)                                                    \
        matvec_##NC(const u8* __restrict__ w0, float* __restrict__ y0, int m0, const u8* __restrict__ w1,  \
                    float* __restrict__ y1, int m1, const u8* __restrict__ w2, float* __restrict__ y2, int m2, \
                    const float* __restrict__ x, int K) {                                        \
        matvec_impl<NC>(w0, y0, m0, w1, y1, m1, w2, y2, m2, XF32{x, K});                             \
    }                                                                                                     \
    extern "C" __global__ void MV_BOUNDS(NC)                                                    \
        glu_##NC(const u8* __restrict__ wg, const u8* __restrict__ wu, const float* __restrict__ x,       \
                 float* __restrict__ y, int M, int K, int act) {                                 \
        glu_impl<NC>(wg, wu, XF32{x, K}, y, M, act);                                                 \
    }

// The same kernels against 8-bit activations (xq: [NC, K] signed bytes; xd: [NC, K / 32] of (d, d * sum q)).
#define MATVEC_Q8(NC)                                                                                      \
    extern "C" __global__ void MV_BOUNDS(NC)                                                     \
        mvq8_##NC(const u8* __restrict__ w0, float* __restrict__ y0, int m0, const u8* __restrict__ w1,     \
                  float* __restrict__ y1, int m1, const u8* __restrict__ w2, float* __restrict__ y2, int m2, \
                  const signed char* __restrict__ xq, const float2* __restrict__ xd, int K) {     \
        matvec_impl<NC>(w0, y0, m0, w1, y1, m1, w2, y2, m2, XQ8{xq, xd, K});                          \
    }                                                                                                      \
    extern "C" __global__ void MV_BOUNDS(NC)                                                     \
        gluq8_##NC(const u8* __restrict__ wg, const u8* __restrict__ wu, const signed char* __restrict__ xq, \
                   const float2* __restrict__ xd, float* __restrict__ y, int M, int K, int act) { \
        glu_impl<NC>(wg, wu, XQ8{xq, xd, K}, y, M, act);                                              \
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
// tensor-core GEMM. One thread per 32-weight unit; four 16-byte stores each. The types dqmm takes decode as
// dqmm does (decode_fast.cuh's dq_unit_halves: two weights per f16x2 operation, no float-to-half
// conversions, which run at a quarter of the arithmetic rate), so the two paths give the same numbers; the
// rest through f32.
extern "C" __global__ void dequant_rows(const u8* __restrict__ w, u16* __restrict__ out, int r0, int r1, int K,
                                        int to_bf16) {
    PDL_PROLOGUE();
    const long long units = (long long)(K >> 5);
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)(r1 - r0) * units) return;
    const int r = r0 + (int)(i / units);
    const int u = (int)(i % units);
    const u8* row = w + (size_t)r * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    u32 packed[16];
#ifdef HAS_Q8
    Q8Raw raw;
    unit_q8_load(row, u, raw);
    if (to_bf16)
        dq_unit_halves<true>(raw, u, packed);
    else
        dq_unit_halves<false>(raw, u, packed);
#else
    float v[32];
    wt_deq32_fast(row, u, v);
#pragma unroll
    for (int j = 0; j < 16; j++) packed[j] = half2_bits(v[2 * j], v[2 * j + 1], to_bf16);
#endif
    uint4* dst = (uint4*)(out + (size_t)(r - r0) * K + ((size_t)u << 5));
#pragma unroll
    for (int j = 0; j < 4; j++)
        dst[j] = make_uint4(packed[4 * j], packed[4 * j + 1], packed[4 * j + 2], packed[4 * j + 3]);
}

// out[t * K + k] = W[tokens[t], k] * scale: token embeddings. One thread per 32-weight unit.
extern "C" __global__ void embed_rows(const u8* __restrict__ w, const u32* __restrict__ tokens,
                                      float* __restrict__ out, int n, int K, float scale, int scaled) {
    PDL_PROLOGUE();
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
    PDL_PROLOGUE();
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
