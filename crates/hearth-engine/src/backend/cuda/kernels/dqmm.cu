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
// 16 w .. 16 w + 15 (one A tile) against the block's activation rows rounded up to 16 (NT, a template
// argument: 2, 4, 6 or 8 8-row B tiles, no per-tile branch; rows past n are zeros), so small n keeps every
// warp busy. Sixteen warps a multiprocessor (two blocks) hide the decode's dependent operations; four warps
// of 32 rows each, with half the activation loads, measured no faster on an H200 (29% of issue slots used,
// 11% occupancy at 232 registers). K advances DQ_UK 32-weight units a step; cp.async brings step s + 1's raw
// weight bytes and activations while step s multiplies (two buffers each).
//
// The loop is bound by issuing instructions (ncu, H200, a 100-token Q4_K_M prefill: 2.7 of 4 a cycle, the
// math pipe throttled), so a step's decode does per step what it can: Q4_K's scales and mins of the step's
// four units come from one header read, Q8_0's code words sit at fixed offsets when rows are whole words,
// and steps inside the split check no unit. (Session 9, call 4, before that session's split-K change: 64
// streams +13% on Q4_K_M and +9% on Q8_0, 16 streams +38% and +34%, the first token 12.9 against 15.8 ms and
// 12.1 against 14.7 ms.) A warpgroup-MMA
// (wgmma) version of this loop was correct and slower (bench/results/cuda-h200-2026-11-28-s9/dropped).
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
//
// Q4_K is copied compactly instead: a step's four units are one half of a 144-byte block, and they need its
// 16-byte header and 64 of its 128 code bytes (bytes 16 + 64 h .., h the half), 16-byte aligned as every Q4_K
// row is (the matrix starts on 16 bytes): five chunks a row, where the whole block is nine and the other half's
// code bytes would be read twice.
#if defined(WT_Q4_K)
#define DQ_RAW_CHUNKS 5
#else
#if WT_BLOCK_ELEMS == 32
#define DQ_SPAN (DQ_UK * WT_BLOCK_BYTES)
#else
#define DQ_SPAN WT_BLOCK_BYTES
#endif
#define DQ_RAW_CHUNKS (((DQ_SPAN + 15 + 15) / 16) | 1)
#endif
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

#if defined(WT_Q8_0)
// Q8_0's A values from lane t's code words w0 (codes 4t .. 4t + 3) and w1 (16 + 4t ..) and the f16 factor d.
template <bool BF>
__device__ __forceinline__ void q8_frag(u32 w0, u32 w1, u32 d, u32* o) {
    w0 ^= 0x80808080u;
    w1 ^= 0x80808080u;
    if (!BF) {
        const u32 f = f16_pair(d);
        frag_halves(w0, 0x64806480u, f, &o[0], &o[1]);
        frag_halves(w1, 0x64806480u, f, &o[2], &o[3]);
    } else {
        const float a = f16_to_f32((u16)d);
        frag_bf16(w0, 128.0f, a, 0.0f, &o[0], &o[1]);
        frag_bf16(w1, 128.0f, a, 0.0f, &o[2], &o[3]);
    }
}
#endif

#if defined(WT_Q6_K)
// Q6_K's unit 4 j + l of the 210-byte block at b (ql[128], qh[64], 16 int8 scales, one per 16 weights, f16 d):
// frag_unit's values. In a step l is the unit's place in it, a compile-time constant, so the shifts and the
// offsets are constants. (The units of a half-block share their code words, but loading them once a step,
// dropped/q6k-step-words.patch in session 9's results, spilled registers and measured no faster.)
template <bool BF>
__device__ __forceinline__ void q6k_frag(const u8* b, int j, int l, int t, u32* o) {
    const u8* ql = b + 64 * j + 32 * (l & 1);
    const u8* qh = b + 128 + 32 * j;
    const int shl = 4 * (l >> 1), shh = 2 * l, s = 4 * j + l;
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
}
#endif

// Lane t's A values of unit u0 + uu of one row (u0 a step's first unit, uu its place in the step), `rowp` the
// row's start as seen from shared memory (the step's bytes in place, see dqmm_impl): o[0], o[1] the pairs of
// weights 4t .. 4t + 3 of slice 0 (weights 0-15 of the unit), o[2], o[3] those of slice 1 (16-31), by
// decode_fast.cuh's frag_halves / frag_bf16. The same values as dq_unit_halves (the factors' products are
// exact in f32 and rounded to f16 once either way).
template <bool BF>
__device__ __forceinline__ void frag_unit(const u8* rowp, int u0, int uu, int t, u32* o) {
#if !defined(WT_Q6_K)
    const int u = u0 + uu;
#endif
#if defined(WT_Q8_0)
    const u8* blk = rowp + u * 34;  // f16 d, 32 signed codes
    q8_frag<BF>(lds_u32_2(blk + 2 + 4 * t), lds_u32_2(blk + 18 + 4 * t), ldq16<true>(blk), o);
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
    // (copied compactly: rowp is the header of the step's block, then the code bytes of its half)
    const u8* blk = rowp;
    const int s = u & 7, sh = 4 * (s & 1);
    const uint4 h = *(const uint4*)blk;
    const u8* qs = blk + 16 + 32 * ((s & 3) >> 1);
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
#else  // Q6_K: uu, the unit's place in its step, is a compile-time constant in dq_frags
    q6k_frag<BF>(rowp + (u0 >> 3) * 210, (u0 >> 2) & 1, uu, t, o);
#endif
}

// The copies of a block's raw weight bytes. Thread tid copies the 16-byte chunks i = tid + k DQ_THREADS of a
// step, chunk i being chunk i % DQ_RAW_CHUNKS of block row i / DQ_RAW_CHUNKS (rows past M repeat the last row,
// never written out; dst < 0: no chunk); the addresses are computed once.
#define DQ_WCOPIES ((DQ_BM * DQ_RAW_CHUNKS + DQ_THREADS - 1) / DQ_THREADS)
struct DqWeightCopies {
    const u8* row[DQ_WCOPIES];
    int dst[DQ_WCOPIES];
    __device__ __forceinline__ DqWeightCopies(const u8* w, int r0, int M, size_t row_bytes, int tid) {
#pragma unroll
        for (int k = 0; k < DQ_WCOPIES; k++) {
            const int i = tid + k * DQ_THREADS, rr = min(i / DQ_RAW_CHUNKS, DQ_BM - 1);
            row[k] = w + (size_t)min(r0 + rr, M - 1) * row_bytes;
            dst[k] = i < DQ_BM * DQ_RAW_CHUNKS ? rr * DQ_RAW_STRIDE + 16 * (i % DQ_RAW_CHUNKS) : -1;
        }
    }
    // Step st's bytes (units from u0 = ub + st DQ_UK) into buffer st & 1 of raw.
    __device__ __forceinline__ void copy(u8* raw, int u0, int ue, int st) const {
        u8* out = raw + (st & 1) * DQ_BM * DQ_RAW_STRIDE;
#if defined(WT_Q4_K)
        // Chunk c of a row: the header (c = 0) or code chunk c - 1 of the step's half.
        const int blk = (u0 >> 3) * 144, half = 64 * ((u0 >> 2) & 1);
#pragma unroll
        for (int k = 0; k < DQ_WCOPIES; k++) {
            // dst's chunk within the row is a multiple of 16 below 80: its byte offset in the block, plus half
            // for the code chunks
            const int c16 = dst[k] % DQ_RAW_STRIDE;
            if (dst[k] >= 0) cp_async16(out + dst[k], row[k] + (blk + c16 + (c16 ? half : 0)), 16);
        }
        (void)ue;
        return;
#endif
        int begin, end;
        dq_row_span(u0, ue, &begin, &end);
#pragma unroll
        for (int k = 0; k < DQ_WCOPIES; k++) {
            const u8* first = row[k] + begin;
            const u8* src = first - ((size_t)first & 15u) + (dst[k] % DQ_RAW_STRIDE);
            if (dst[k] >= 0 && src < row[k] + end) cp_async16(out + dst[k], src, 16);
        }
    }
};

// Lane (g, t) of warp w reads rows 16 w + g and 16 w + g + 8 of the block (its A tile): each row's address
// within 16 bytes, which with a step's first byte places the step in its buffer.
__device__ __forceinline__ void dq_row_mis(const u8* w, int r0, int M, size_t row_bytes, int warp, int g, u32 (&mis)[2]) {
#pragma unroll
    for (int q = 0; q < 2; q++)
        mis[q] = (u32)((size_t)(w + (size_t)min(r0 + 16 * warp + g + 8 * q, M - 1) * row_bytes) & 15u);
}
// Where rows g and g + 8 of warp w's tile start for step st, as seen from shared memory (the step's bytes in
// place: a row's unit u is at rowp + its offset in the row).
__device__ __forceinline__ void dq_rows(const u8* raw, int st, int u0, int ue, const u32 (&mis)[2], int warp, int g,
                                        const u8* (&rowp)[2]) {
#if defined(WT_Q4_K)  // the compact copy: rowp is the step's header
    const u8* wq = raw + (st & 1) * DQ_BM * DQ_RAW_STRIDE;
#pragma unroll
    for (int q = 0; q < 2; q++) rowp[q] = wq + (16 * warp + g + 8 * q) * DQ_RAW_STRIDE;
    (void)u0, (void)ue, (void)mis;
    return;
#endif
    int begin, end;
    dq_row_span(u0, ue, &begin, &end);
    const u8* wb = raw + (st & 1) * DQ_BM * DQ_RAW_STRIDE;
#pragma unroll
    for (int q = 0; q < 2; q++)
        rowp[q] = wb + (16 * warp + g + 8 * q) * DQ_RAW_STRIDE + (int)((mis[q] + (u32)begin) & 15u) - begin;
}

// What a step's units share, read once a step and row: for Q4_K with f16 activations, the block's header
// (d, dmin) and the four units' 6-bit scales and mins unpacked side by side, one byte a unit (quant.cuh's
// k4_scale_min on four sub-blocks at once: units s0 .. s0 + 3, s0 = 0 or 4, of one block), where unit by unit
// the run-time sub-block index costs a dozen operations (the units' code bytes follow the header in the
// compact copy: units 2p and 2p + 1 share theirs, low and high nibbles); for Q8_0, lane t's first word of the
// step (dq_frags' ALIGNED path). Empty for Q4_0 and Q6_K (frag_unit finds a Q6_K unit from the step's start
// and its compile-time place).
struct DqStep {
#if defined(WT_Q4_K)
    u32 dd[2], sc[2], mn[2];
#elif defined(WT_Q8_0)
    const u32* a[2];  // the rows' first unit of the step, plus lane t's 4 t bytes (4-byte aligned when ALIGNED)
#endif
};
template <bool BF>
__device__ __forceinline__ void dq_step(const u8* const (&rowp)[2], int u0, DqStep& st) {
#if defined(WT_Q4_K)
    if (!BF) {
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const u8* blk = rowp[q];  // the compact copy's header
            const uint4 h = *(const uint4*)blk;
            st.dd[q] = h.x;
            if ((u0 & 4) == 0) {
                st.sc[q] = h.y & 0x3F3F3F3Fu;
                st.mn[q] = h.z & 0x3F3F3F3Fu;
            } else {
                st.sc[q] = (h.w & 0x0F0F0F0Fu) | ((h.y >> 2) & 0x30303030u);
                st.mn[q] = ((h.w >> 4) & 0x0F0F0F0Fu) | ((h.z >> 2) & 0x30303030u);
            }
        }
    }
#elif defined(WT_Q8_0)
#pragma unroll
    for (int q = 0; q < 2; q++) st.a[q] = (const u32*)(rowp[q] + u0 * 34 + 4 * (threadIdx.x & 3));
#endif
}

// Lane t's A values of unit u0 + uu (or zeros past the split's end ue) for both of its rows. FULL: the step
// lies inside the split, so no unit is checked. ALIGNED (Q8_0, with FULL): every row is a whole number of
// 4-byte words (and the matrix starts on one), so a step's first unit is 4-byte aligned in shared memory
// (rows start at their global address's offset within 16 bytes, and a step at a multiple of 4 units, 136
// bytes): the odd units' code words are aligned and the even units' two bytes off, all at fixed offsets from
// the step's start, where unit by unit the alignment is found at run time.
template <bool BF, bool FULL, bool ALIGNED>
__device__ __forceinline__ void dq_frags(const DqStep& st, const u8* const (&rowp)[2], int u0, int uu, int ue, int t,
                                         u32 (&a)[2][4]) {
#pragma unroll
    for (int q = 0; q < 2; q++) {
        if (!FULL && u0 + uu >= ue) {
#pragma unroll
            for (int e = 0; e < 4; e++) a[q][e] = 0u;
            continue;
        }
#if defined(WT_Q8_0)
        if (ALIGNED) {
            const u32* w = st.a[q];  // lane t's word 0; unit uu's codes start at byte 34 uu + 2
            const int c = (34 * uu + 2) >> 2;  // the word holding unit uu's first code byte
            u32 w0, w1;
            if (uu & 1) {  // 34 uu + 2 = 4 c: aligned
                w0 = w[c];
                w1 = w[c + 4];
            } else {  // 4 c + 2: the upper half of word c and the lower half of word c + 1
                w0 = __byte_perm(w[c], w[c + 1], 0x5432);
                w1 = __byte_perm(w[c + 4], w[c + 5], 0x5432);
            }
            q8_frag<BF>(w0, w1, ldq16<true>(rowp[q] + (u0 + uu) * 34), a[q]);
            continue;
        }
#endif
#if defined(WT_Q4_K)
        if (!BF) {  // frag_unit's Q4_K values from the step's shared header
            const u8* qs = rowp[q] + 16 + 32 * (uu >> 1);  // the compact copy's code bytes
            const int sh = 4 * (uu & 1);
            const u32 w0 = (*(const u32*)(qs + 4 * t) >> sh) & 0x0F0F0F0Fu;
            const u32 w1 = (*(const u32*)(qs + 16 + 4 * t) >> sh) & 0x0F0F0F0Fu;
            // (scale, min) of unit uu as exact f16 integers, times (d, dmin)
            const u32 sm = (__byte_perm(st.sc[q], st.mn[q], uu | ((4 + uu) << 8) | (uu << 4) | ((4 + uu) << 12)) &
                            0x00FF00FFu) |
                           0x64006400u;
            const u32 dm = hmul2(st.dd[q], hsub2(sm, 0x64006400u));
            const u32 f = __byte_perm(dm, 0u, 0x1010), off = __byte_perm(dm, 0u, 0x3232) ^ 0x80008000u;
            frag_halves_off(w0, f, off, &a[q][0], &a[q][1]);
            frag_halves_off(w1, f, off, &a[q][2], &a[q][3]);
            continue;
        }
#endif
        frag_unit<BF>(rowp[q], u0, uu, t, a[q]);
    }
}

// Output: lane (g, t) of warp w holds rows 16 w + g (e = 0, 1) and + 8 (e = 2, 3), activation rows 8 j + 2 t
// + (e & 1) of the block's, as mma's C fragments.
__device__ __forceinline__ void dq_store(float* __restrict__ y, const float (&acc)[DQ_BN / 8][4], int M, int n, int r0,
                                         int c0, int warp, int g, int t) {
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

__device__ __forceinline__ void dq_check_smem() {
    u32 given;  // the host's count (matmul.rs's dqmm_smem_bytes) must cover this layout
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(given));
    if (given < DQ_SMEM) __trap();
}

// One step's MMAs: lane (g, t)'s weights of the DQ_UK units against the NT activation rows (xb: the step's
// activations at row g, bytes 8 t).
template <bool BF, int NT, bool FULL, bool ALIGNED>
__device__ __forceinline__ void dq_mma_step(float (&acc)[DQ_BN / 8][4], const DqStep& sd, const u8* const (&rowp)[2],
                                            const u8* xb, int u0, int ue, int t) {
#pragma unroll
    for (int uu = 0; uu < DQ_UK; uu++) {
        u32 a[2][4];  // [row g, g + 8][slice 0 lo, hi, slice 1 lo, hi]
        dq_frags<BF, FULL, ALIGNED>(sd, rowp, u0, uu, ue, t, a);
#pragma unroll
        for (int sl = 0; sl < 2; sl++) {
#pragma unroll
            for (int j = 0; j < NT / 8; j++) {
                const uint2 b = *(const uint2*)(xb + j * 8 * DQ_XSTRIDE + uu * 64 + sl * 32);
                if (BF)
                    mma16816_bf16(acc[j], a[0][2 * sl], a[1][2 * sl], a[0][2 * sl + 1], a[1][2 * sl + 1], b.x, b.y);
                else
                    mma16816(acc[j], a[0][2 * sl], a[1][2 * sl], a[0][2 * sl + 1], a[1][2 * sl + 1], b.x, b.y);
            }
        }
    }
}

// The mma.sync loop. NT: activation rows the MMAs cover, a multiple of 16 (rows from n on are zeros, their
// outputs not written): the tile count a template argument, so the MMAs of a unit carry no per-tile branch.
template <bool BF, int NT>
__device__ __forceinline__ void dqmm_impl(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y,
                                          int M, int K, int n, int split_units, int bx) {
    extern __shared__ __align__(16) u8 dq_smem[];
    dq_check_smem();
    u8* raw = dq_smem;            // [2][DQ_BM][DQ_RAW_STRIDE]: raw weight bytes
    u8* xs = raw + DQ_RAW_BYTES;  // [2][DQ_BN][DQ_XSTRIDE]: activations
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int r0 = bx * DQ_BM, c0 = blockIdx.y * DQ_BN;
    const int units = K >> 5;
    const int ub = blockIdx.z * split_units, ue = min(units, ub + split_units);
    const int steps = (ue - ub + DQ_UK - 1) / DQ_UK;
    const size_t row_bytes = (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    y += (size_t)blockIdx.z * n * M;
    float acc[DQ_BN / 8][4];
#pragma unroll
    for (int j = 0; j < DQ_BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;

    const DqWeightCopies wc(w, r0, M, row_bytes, tid);
    // Activation chunk i = tid + k DQ_THREADS of a step is chunk tid % 16 (of the step's 16) of activation row
    // i / 16 (rows past n are zeros).
#define DQ_XCOPIES (DQ_BN * DQ_UK * 4 / DQ_THREADS)
    const int xch = tid % 16, xrow0 = tid / 16;  // DQ_UK * 4 = 16 chunks a row; rows xrow0 + 16 k
    const u16* xsrc = x + (size_t)(c0 + xrow0) * K + 8 * xch;
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
    u32 row_mis[2];
    dq_row_mis(w, r0, M, row_bytes, warp, g, row_mis);
#if defined(WT_Q8_0)
    const bool words = row_bytes % 4 == 0 && ((size_t)w & 3) == 0;  // every row whole 4-byte words
#endif

    wc.copy(raw, ub, ue, 0);  // independent of the previous kernel: before the wait
    PDL_PROLOGUE();
    copy_acts(0);
    for (int st = 0; st < steps; st++) {
        cp_async_wait_all();
        __syncthreads();  // step st is in; every warp is done with step st - 1's buffers
        if (st + 1 < steps) {
            wc.copy(raw, ub + (st + 1) * DQ_UK, ue, st + 1);
            copy_acts(st + 1);
        }
        const int u0 = ub + st * DQ_UK;
        const u8* xb = xs + (st & 1) * DQ_BN * DQ_XSTRIDE + g * DQ_XSTRIDE + 8 * t;
        const u8* rowp[2];
        dq_rows(raw, st, u0, ue, row_mis, warp, g, rowp);
        DqStep sd;
        dq_step<BF>(rowp, u0, sd);
#if defined(WT_Q8_0)
        if (u0 + DQ_UK <= ue && words)  // see dq_frags' ALIGNED
            dq_mma_step<BF, NT, true, true>(acc, sd, rowp, xb, u0, ue, t);
        else if (u0 + DQ_UK <= ue)
#else
        if (u0 + DQ_UK <= ue)
#endif
            dq_mma_step<BF, NT, true, false>(acc, sd, rowp, xb, u0, ue, t);
        else  // the split's last step, partly past its end
            dq_mma_step<BF, NT, false, false>(acc, sd, rowp, xb, u0, ue, t);
    }
    dq_store(y, acc, M, n, r0, c0, warp, g, t);
}

// The block's activation rows rounded up to a multiple of 16, the loop's width; bx: the block's row tile.
template <bool BF>
__device__ __forceinline__ void dqmm_rows(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y,
                                          int M, int K, int n, int split_units, int bx) {
    const int rows = min(DQ_BN, n - (int)blockIdx.y * DQ_BN);
    if (rows > 48)
        dqmm_impl<BF, 64>(w, x, y, M, K, n, split_units, bx);
    else if (rows > 32)
        dqmm_impl<BF, 48>(w, x, y, M, K, n, split_units, bx);
    else if (rows > 16)
        dqmm_impl<BF, 32>(w, x, y, M, K, n, split_units, bx);
    else
        dqmm_impl<BF, 16>(w, x, y, M, K, n, split_units, bx);
}

// Grid (ceil(M / DQ_BM), ceil(n / DQ_BN), splits), DQ_THREADS threads, DQ_SMEM bytes of dynamic shared memory;
// split z writes y + z n M.
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm_f16(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y, int M, int K, int n, int split_units) {
    dqmm_rows<false>(w, x, y, M, K, n, split_units, blockIdx.x);
}
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm_bf16(const u8* __restrict__ w, const u16* __restrict__ x, float* __restrict__ y, int M, int K, int n, int split_units) {
    dqmm_rows<true>(w, x, y, M, K, n, split_units, blockIdx.x);
}

// Two products of one input in one launch (a layer's gate and up; q and k when they share a type): the first
// ceil(M0 / DQ_BM) row tiles are W0's, the rest W1's, with the same splits; each writes its own y (split z at
// y + z n M). One launch's ramp and tail a pair instead of two, and one split plan over both.
template <bool BF>
__device__ __forceinline__ void dqmm_pair(const u8* __restrict__ w0, float* __restrict__ y0, int M0,
                                          const u8* __restrict__ w1, float* __restrict__ y1, int M1,
                                          const u16* __restrict__ x, int K, int n, int split_units) {
    const int tiles0 = (M0 + DQ_BM - 1) / DQ_BM;
    const bool second = (int)blockIdx.x >= tiles0;
    dqmm_rows<BF>(second ? w1 : w0, x, second ? y1 : y0, second ? M1 : M0, K, n, split_units,
                  second ? blockIdx.x - tiles0 : blockIdx.x);
}
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm2_f16(const u8* __restrict__ w0, float* __restrict__ y0, int M0, const u8* __restrict__ w1,
              float* __restrict__ y1, int M1, const u16* __restrict__ x, int K, int n, int split_units) {
    dqmm_pair<false>(w0, y0, M0, w1, y1, M1, x, K, n, split_units);
}
extern "C" __global__ void __launch_bounds__(DQ_THREADS, 2)
    dqmm2_bf16(const u8* __restrict__ w0, float* __restrict__ y0, int M0, const u8* __restrict__ w1,
               float* __restrict__ y1, int M1, const u16* __restrict__ x, int K, int n, int split_units) {
    dqmm_pair<true>(w0, y0, M0, w1, y1, M1, x, K, n, split_units);
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
