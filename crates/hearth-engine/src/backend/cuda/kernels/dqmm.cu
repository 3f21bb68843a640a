// dqmm: products of a few dozen activation rows with quantized weights on the tensor cores. Appended to a
// weight module's source after weights.cu (the module of one weight type, WT_*), for the types with
// decode_fast.cuh's 8-bit unit decoder (HAS_Q8: Q8_0, Q4_0, Q4_K, Q6_K).
//
// y[c * M + r] = W[r] · x[c] for c < n, x in half precision ([n, K], the GEMM path's converted activations):
// the GEMM path's numbers (each weight rounded to half precision once, f32 accumulation) without its round
// trip through memory, where dequantize-then-cuBLAS writes and reads every matrix in f16 each step. The
// weights are read in their file's blocks, once per DQ_BN activation rows.
//
// Weights go from shared memory straight into mma fragments. mma.m16n8k16 gives lane (g, t) = (lane / 4,
// lane % 4) the A values of rows g and g + 8 at k = 2t, 2t + 1, 2t + 8, 2t + 9 and the B values of column g
// at the same k. A dot product does not care in which order k runs, as long as A and B agree, so the kernel
// hands lane t the four consecutive weights 4t .. 4t + 3 of each 16-weight slice in those four places, and
// the activations 4t .. 4t + 3 likewise (one 8-byte shared load). Four consecutive weights are one 32-bit
// word of codes in every block layout here, so a lane reads one word per row and slice, turns it into two
// f16x2 pairs (two weights per operation: the 0x64 byte trick, then the factor), and multiplies: no decoded
// tile in shared memory, no ldmatrix for A, no barrier between decoding and multiplying.
//
// Block: DQ_BM = 128 weight rows x DQ_BN = 64 activation rows, eight warps, warp w owning weight rows
// 16 w .. 16 w + 15 (one A tile) against all the block's activation rows (up to eight 8-row B tiles; tiles
// past n are skipped, so small n keeps every warp busy). Sixteen warps a multiprocessor (two blocks) hide
// the decode's dependent operations; four warps of 32 rows each, with half the activation loads, measured
// no faster on an H200 (29% of issue slots used, 11% occupancy at 232 registers). K advances DQ_UK
// 32-weight units a step; cp.async brings step s + 1's raw weight bytes and activations while step s
// multiplies (two buffers each).
//
// Split-K: a matrix of few row blocks (4096 rows are 32 of them) would leave most of the GPU idle with a
// long serial loop over K in each block, so blockIdx.z takes units [z split_units, (z + 1) split_units) and
// writes its partial sums to y + z n M; with more than one split the host adds them (dqmm_sum).
//
// (Earlier versions multiplied 8-bit activations on the integer tensor cores, as llama.cpp's mmq does, and
// decoded each step into a half-precision tile in shared memory for ldmatrix; the first was bound by the
// f32 scaling of every output per 32-value unit, the second by shared-memory traffic and its barriers.)
#ifdef HAS_Q8
#define DQ_BM 128
#define DQ_BN 64
#define DQ_UK 4
#define DQ_THREADS 256

// A step's weight bytes: the units [u0, u0 + DQ_UK) of a row lie in bytes [begin, end) from its start (for
// 256-weight types, within one block: DQ_UK divides 8 and steps start at multiples of it). They are copied
// as the 16-byte chunks that cover them, at most DQ_RAW_CHUNKS a row. An odd number of chunks a row puts
// the eight rows g = 0..7 a warp reads at once in eight different 4-bank groups, and the lanes t of a row
// in the four banks of its group: the fragment loads are free of bank conflicts.
#if WT_BLOCK_ELEMS == 32
#define DQ_SPAN (DQ_UK * WT_BLOCK_BYTES)
#else
#define DQ_SPAN WT_BLOCK_BYTES
#endif
#define DQ_RAW_CHUNKS (((DQ_SPAN + 15 + 15) / 16) | 1)
#define DQ_RAW_STRIDE (DQ_RAW_CHUNKS * 16)
// Activation rows of a step: DQ_UK * 64 bytes and 32 more, so that the 8-byte loads of lanes (g, t) (row g,
// bytes 8t ..) of a half warp cover all 32 banks once.
#define DQ_XSTRIDE (DQ_UK * 64 + 32)
// Shared memory (dynamic; matmul.rs's dqmm_smem_bytes gives the same total, and the kernel checks it): two
// buffers each of raw weight bytes and activations, and 16 spare bytes (a 2-byte-aligned word's load may
// read one word past a row's span).
#define DQ_RAW_BYTES (2 * DQ_BM * DQ_RAW_STRIDE)
#define DQ_SMEM (DQ_RAW_BYTES + 2 * DQ_BN * DQ_XSTRIDE + 16)
#ifdef DQ_SMEM_HOST  // the host's count (matmul.rs's dqmm_smem_bytes), passed at compile time
static_assert(DQ_SMEM == DQ_SMEM_HOST, "dqmm's shared-memory layout and matmul.rs's dqmm_smem_bytes differ");
#endif

__device__ __forceinline__ void dq_row_span(int u0, int ue, int* begin, int* end) {
    const int last = min(u0 + DQ_UK, ue) - 1;  // the step's last unit inside the split
#if WT_BLOCK_ELEMS == 32
    *begin = u0 * WT_BLOCK_BYTES;
    *end = (last + 1) * WT_BLOCK_BYTES;
#else
    *begin = (u0 >> 3) * WT_BLOCK_BYTES;
    *end = ((last >> 3) + 1) * WT_BLOCK_BYTES;
#endif
}

// The 32-bit word at p in shared memory, p 2-byte aligned (two aligned loads and a funnel shift). The aligned
// address is p less an offset, not p masked, so the compiler still sees a shared-memory pointer.
__device__ __forceinline__ u32 lds_u32_2(const u8* p) {
    const u32 mis = (u32)(size_t)p & 2u;
    const u32* a = (const u32*)(p - mis);
    return __funnelshift_r(a[0], a[1], mis * 8u);
}

// f16 pair (v, v) from f16 bits v; an exact small integer pair (a, b), 0 <= a, b < 1024, as f16x2.
__device__ __forceinline__ u32 f16_pair(u32 bits) { return __byte_perm(bits, 0u, 0x1010); }
__device__ __forceinline__ u32 f16_ints(u32 a, u32 b) { return hsub2((a | (b << 16)) | 0x64006400u, 0x64006400u); }

// Lane t's A values of unit u of one row, `rowp` the row's start as seen from shared memory (the step's
// bytes in place, see dqmm_impl): o[0], o[1] the pairs of weights 4t .. 4t + 3 of slice 0 (weights 0-15 of
// the unit), o[2], o[3] those of slice 1 (16-31), by decode_fast.cuh's frag_halves / frag_bf16. The same
// values as dq_unit_halves (the factors' products are exact in f32 and rounded to f16 once either way).
template <bool BF>
__device__ __forceinline__ void frag_unit(const u8* rowp, int u, int t, u32* o) {
#if defined(WT_Q8_0)
    const u8* blk = rowp + u * 34;  // f16 d, 32 signed codes
    const u32 w0 = lds_u32_2(blk + 2 + 4 * t) ^ 0x80808080u, w1 = lds_u32_2(blk + 18 + 4 * t) ^ 0x80808080u;
    const u32 d = ldq16<true>(blk);
    if (!BF) {
        const u32 f = f16_pair(d);
        frag_halves(w0, 0x64806480u, f, &o[0], &o[1]);
        frag_halves(w1, 0x64806480u, f, &o[2], &o[3]);
    } else {
        const float a = f16_to_f32((u16)d);
        frag_bf16(w0, 128.0f, a, 0.0f, &o[0], &o[1]);
        frag_bf16(w1, 128.0f, a, 0.0f, &o[2], &o[3]);
    }
#elif defined(WT_Q4_0)
    const u8* blk = rowp + u * 18;  // f16 d, 16 bytes: weight j in byte j's low nibble, j + 16 in its high one
    const u32 w = lds_u32_2(blk + 2 + 4 * t);
    const u32 w0 = w & 0x0F0F0F0Fu, w1 = (w >> 4) & 0x0F0F0F0Fu;
    const u32 d = ldq16<true>(blk);
    if (!BF) {
        const u32 f = f16_pair(d);
        frag_halves(w0, 0x64086408u, f, &o[0], &o[1]);  // code - 8
        frag_halves(w1, 0x64086408u, f, &o[2], &o[3]);
    } else {
        const float a = f16_to_f32((u16)d);
        frag_bf16(w0, 0.0f, a, -8.0f * a, &o[0], &o[1]);
        frag_bf16(w1, 0.0f, a, -8.0f * a, &o[2], &o[3]);
    }
#elif defined(WT_Q4_K)
    // 144-byte blocks of 8 units: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, then 128 bytes where
    // unit s's weights are the low (s even) or high nibbles of bytes 32 (s / 2) ..
    const u8* blk = rowp + (u >> 3) * 144;
    const int s = u & 7, sh = 4 * (s & 1);
    const uint4 h = *(const uint4*)blk;
    const u8* qs = blk + 16 + 32 * (s >> 1);
    const u32 w0 = (*(const u32*)(qs + 4 * t) >> sh) & 0x0F0F0F0Fu;
    const u32 w1 = (*(const u32*)(qs + 16 + 4 * t) >> sh) & 0x0F0F0F0Fu;
    u32 sc, m;
    q4k_scale_min(h, s, &sc, &m);
    if (!BF) {
        const u32 dm = hmul2(h.x, f16_ints(sc, m));  // (d sc, dmin m)
        const u32 f = __byte_perm(dm, 0u, 0x1010), off = __byte_perm(dm, 0u, 0x3232) ^ 0x80008000u;
        frag_halves_off(w0, f, off, &o[0], &o[1]);
        frag_halves_off(w1, f, off, &o[2], &o[3]);
    } else {
        const float a = MUL(f16_to_f32((u16)(h.x & 0xffffu)), (float)sc);
        const float b = -MUL(f16_to_f32((u16)(h.x >> 16)), (float)m);
        frag_bf16(w0, 0.0f, a, b, &o[0], &o[1]);
        frag_bf16(w1, 0.0f, a, b, &o[2], &o[3]);
    }
#else  // Q6_K: 210-byte blocks: ql[128], qh[64], 16 int8 scales (one per 16 weights), f16 d (see q6k_unit)
    const u8* b = rowp + (u >> 3) * 210;
    const int s = u & 7, j = s >> 2, l = s & 3;
    const u8* ql = b + 64 * j + 32 * (l & 1);
    const u8* qh = b + 128 + 32 * j;
    const int shl = 4 * (l >> 1), shh = 2 * l;
    u32 w[2];
#pragma unroll
    for (int i = 0; i < 2; i++)
        w[i] = ((lds_u32_2(ql + 16 * i + 4 * t) >> shl) & 0x0F0F0F0Fu) |
               (((lds_u32_2(qh + 16 * i + 4 * t) >> shh) & 0x03030303u) << 4);  // 6-bit codes, q - 32 the value
    const u32 d = ldq16<true>(b + 208), scw = ldq16<true>(b + 192 + 2 * s);
    if (!BF) {
        // The two slices' factors d * scale in f16 (int8 scales exact as f16: byte + 128 by the 0x64 trick).
        const u32 sc = hsub2(__byte_perm(scw ^ 0x8080u, 0x64646464u, 0x4140), 0x64806480u);
        const u32 f = hmul2(f16_pair(d), sc);
        frag_halves(w[0], 0x64206420u, __byte_perm(f, 0u, 0x1010), &o[0], &o[1]);  // code - 32
        frag_halves(w[1], 0x64206420u, __byte_perm(f, 0u, 0x3232), &o[2], &o[3]);
    } else {
        const float df = f16_to_f32((u16)d);
        frag_bf16(w[0], 32.0f, MUL(df, (float)(i8)(scw & 0xffu)), 0.0f, &o[0], &o[1]);
        frag_bf16(w[1], 32.0f, MUL(df, (float)(i8)(scw >> 8)), 0.0f, &o[2], &o[3]);
    }
#endif
}

template <bool BF>
__device__ __forceinline__ void dqmm_impl(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y,
                                          int M, int K, int n, int split_units) {
    extern __shared__ __align__(16) u8 dq_smem[];
    {
        u32 given;  // the host's count (matmul.rs's dqmm_smem_bytes) must cover this layout
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(given));
        if (given < DQ_SMEM) __trap();
    }
    u8* raw = dq_smem;            // [2][DQ_BM][DQ_RAW_STRIDE]: raw weight bytes
    u8* xs = raw + DQ_RAW_BYTES;  // [2][DQ_BN][DQ_XSTRIDE]: activations
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * DQ_BM, c0 = blockIdx.y * DQ_BN;
    const int units = K >> 5;
    const int ub = blockIdx.z * split_units, ue = min(units, ub + split_units);
    const int steps = (ue - ub + DQ_UK - 1) / DQ_UK;
    const size_t row_bytes = (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    y += (size_t)blockIdx.z * n * M;
    const int tiles = min(DQ_BN / 8, (n - c0 + 7) / 8);  // 8-row activation tiles holding rows below n
    float acc[DQ_BN / 8][4];
#pragma unroll
    for (int j = 0; j < DQ_BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;

    // The copies' addresses, computed once: thread tid copies the 16-byte chunks i = tid + k DQ_THREADS of a
    // step, weight chunk i being chunk i % DQ_RAW_CHUNKS of block row i / DQ_RAW_CHUNKS (rows past M repeat
    // the last row, never written out; wdst < 0: no chunk) and activation chunk i being chunk tid % 16 (of
    // the step's 16) of activation row i / 16 (rows past n are zeros).
#define DQ_WCOPIES ((DQ_BM * DQ_RAW_CHUNKS + DQ_THREADS - 1) / DQ_THREADS)
#define DQ_XCOPIES (DQ_BN * DQ_UK * 4 / DQ_THREADS)
    const u8* wrow[DQ_WCOPIES];
    int wdst[DQ_WCOPIES];
#pragma unroll
    for (int k = 0; k < DQ_WCOPIES; k++) {
        const int i = tid + k * DQ_THREADS, rr = min(i / DQ_RAW_CHUNKS, DQ_BM - 1);
        wrow[k] = w + (size_t)min(r0 + rr, M - 1) * row_bytes;
        wdst[k] = i < DQ_BM * DQ_RAW_CHUNKS ? rr * DQ_RAW_STRIDE + 16 * (i % DQ_RAW_CHUNKS) : -1;
    }
    const int xch = tid % 16, xrow0 = tid / 16;  // DQ_UK * 4 = 16 chunks a row; rows xrow0 + 16 k
    const u16* xsrc = x + (size_t)(c0 + xrow0) * K + 8 * xch;
    auto copy_weights = [&](int st) {
        int begin, end;
        dq_row_span(ub + st * DQ_UK, ue, &begin, &end);
        u8* dst = raw + (st & 1) * DQ_BM * DQ_RAW_STRIDE;
#pragma unroll
        for (int k = 0; k < DQ_WCOPIES; k++) {
            const u8* first = wrow[k] + begin;
            const u8* src = first - ((size_t)first & 15u) + (wdst[k] % DQ_RAW_STRIDE);
            if (wdst[k] >= 0 && src < wrow[k] + end) cp_async16(dst + wdst[k], src, 16);
        }
    };
    auto copy_acts = [&](int st) {
        const int u0 = ub + st * DQ_UK;
        const bool unit_ok = u0 + xch / 4 < ue;
        u8* dst = xs + (st & 1) * DQ_BN * DQ_XSTRIDE + xrow0 * DQ_XSTRIDE + 16 * xch;
#pragma unroll
        for (int k = 0; k < DQ_XCOPIES; k++) {
            const bool ok = unit_ok && c0 + xrow0 + 16 * k < n;
            cp_async16(dst + 16 * k * DQ_XSTRIDE, ok ? xsrc + (size_t)16 * k * K + ((size_t)u0 << 5) : x, ok ? 16 : 0);
        }
    };

    // Lane (g, t) of warp w reads rows 16 w + g and 16 w + g + 8 of the block (its A tile). Each row's address
    // within 16 bytes, which with a step's first byte places the step in its buffer.
    u32 row_mis[2];
#pragma unroll
    for (int q = 0; q < 2; q++)
        row_mis[q] = (u32)((size_t)(w + (size_t)min(r0 + 16 * warp + g + 8 * q, M - 1) * row_bytes) & 15u);

    copy_weights(0);  // independent of the previous kernel: before the wait
    PDL_PROLOGUE();
    copy_acts(0);
    for (int st = 0; st < steps; st++) {
        cp_async_wait_all();
        __syncthreads();  // step st is in; every warp is done with step st - 1's buffers
        if (st + 1 < steps) {
            copy_weights(st + 1);
            copy_acts(st + 1);
        }
        const int u0 = ub + st * DQ_UK;
        int begin, end;
        dq_row_span(u0, ue, &begin, &end);
        const u8* wb = raw + (st & 1) * DQ_BM * DQ_RAW_STRIDE;
        const u8* xb = xs + (st & 1) * DQ_BN * DQ_XSTRIDE + g * DQ_XSTRIDE + 8 * t;
        const u8* rowp[2];
#pragma unroll
        for (int q = 0; q < 2; q++)
            rowp[q] = wb + (16 * warp + g + 8 * q) * DQ_RAW_STRIDE + (int)((row_mis[q] + (u32)begin) & 15u) - begin;
#pragma unroll
        for (int uu = 0; uu < DQ_UK; uu++) {
            const int u = u0 + uu;
            u32 a[2][4];  // [row g, g + 8][slice 0 lo, hi, slice 1 lo, hi]
#pragma unroll
            for (int q = 0; q < 2; q++) {
                if (u < ue) {
                    frag_unit<BF>(rowp[q], u, t, a[q]);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; e++) a[q][e] = 0u;
                }
            }
#pragma unroll
            for (int sl = 0; sl < 2; sl++) {
#pragma unroll
                for (int j = 0; j < DQ_BN / 8; j++) {
                    if (j >= tiles) continue;
                    const uint2 b = *(const uint2*)(xb + j * 8 * DQ_XSTRIDE + uu * 64 + sl * 32);
                    if (BF)
                        mma16816_bf16(acc[j], a[0][2 * sl], a[1][2 * sl], a[0][2 * sl + 1], a[1][2 * sl + 1], b.x, b.y);
                    else
                        mma16816(acc[j], a[0][2 * sl], a[1][2 * sl], a[0][2 * sl + 1], a[1][2 * sl + 1], b.x, b.y);
                }
            }
        }
    }
    const int ra = r0 + 16 * warp + g;
#pragma unroll
    for (int j = 0; j < DQ_BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int c = c0 + 8 * j + 2 * t + e;
            if (c >= n) continue;
            if (ra < M) y[(size_t)c * M + ra] = acc[j][e];
            if (ra + 8 < M) y[(size_t)c * M + ra + 8] = acc[j][2 + e];
        }
}

// Grid (ceil(M / DQ_BM), ceil(n / DQ_BN), splits), DQ_THREADS threads, DQ_SMEM bytes of dynamic shared memory;
// split z writes y + z n M.
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm_f16(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y, int M, int K, int n, int split_units) {
    dqmm_impl<false>(w, x, y, M, K, n, split_units);
}
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm_bf16(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y, int M, int K, int n, int split_units) {
    dqmm_impl<true>(w, x, y, M, K, n, split_units);
}

// y[i] = sum over the splits z of part[z count + i] (count a multiple of 4): dqmm's split-K partial sums, in a
// fixed order. Four floats a thread and four splits' loads in flight before their sums, which keep their
// order: the sum's time is the loads', not a chain of one load after another. (Adding them in dqmm's last
// block of a tile instead measured slower on an H200: that block's loads wait one after another at the end.)
__device__ __forceinline__ void dqmm_sum_at(const float4* __restrict__ part, float4* __restrict__ y, int count4,
                                            int splits, int i) {
    if (i >= count4) return;
    float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int z = 0;
    for (; z + 4 <= splits; z += 4) {
        float4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++) v[k] = part[(size_t)(z + k) * count4 + i];
#pragma unroll
        for (int k = 0; k < 4; k++) s.x += v[k].x, s.y += v[k].y, s.z += v[k].z, s.w += v[k].w;
    }
    for (; z < splits; z++) {
        const float4 v = part[(size_t)z * count4 + i];
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
    }
    y[i] = s;
}
extern "C" __global__ void dqmm_sum(const float4* __restrict__ part, float4* __restrict__ y, int count4, int splits) {
    PDL_PROLOGUE();
    dqmm_sum_at(part, y, count4, splits, blockIdx.x * blockDim.x + threadIdx.x);
}

// The sums of up to three products with the same input (a layer's q, k and v; gate and up), in one launch:
// product j's partial sums at part_j, blocks [b_j, b_{j+1}) of 256 threads (b_0 = 0, b_3 = gridDim.x; a product
// with no blocks has count 0). One launch a group instead of one a product.
extern "C" __global__ void dqmm_sum3(const float4* __restrict__ p0, float4* __restrict__ y0, int c0, int s0,
                                     const float4* __restrict__ p1, float4* __restrict__ y1, int c1, int s1,
                                     const float4* __restrict__ p2, float4* __restrict__ y2, int c2, int s2, int b1,
                                     int b2) {
    PDL_PROLOGUE();
    const int b = blockIdx.x, i = threadIdx.x;
    if (b < b1)
        dqmm_sum_at(p0, y0, c0, s0, b * blockDim.x + i);
    else if (b < b2)
        dqmm_sum_at(p1, y1, c1, s1, (b - b1) * blockDim.x + i);
    else
        dqmm_sum_at(p2, y2, c2, s2, (b - b2) * blockDim.x + i);
}
#endif
