// Decode attention over the paged f16 cache: one query row (a decode step's token, or any row of a sequence
// with few rows this step) against its keys, split along them (flash-decoding). Two kernels share the code:
// attn_decode on the CUDA cores (every GPU and head shape) and attn_decode_mma, whose scores and weighted sum
// run on the tensor cores (sm_80+, heads of a multiple of 16 up to 128 wide, GQA groups of at most 4); the
// host picks the second where it is compiled in (gpu.attn_kernel). Both write the same per-split records and
// merge them the same way.
// Threads of an attention block (a -D define the host sets: 128, or 256 on request for heads of a multiple of
// 64). The kernel is bound by each warp's chain of dependent steps (ncu on an H200: 0.4 eligible warps per
// scheduler, 10 cycles per issued instruction), not by the issue rate.
#ifndef ATTN_THREADS
#define ATTN_THREADS 128
#endif
#define ATTN_WARPS (ATTN_THREADS / 32)
// Keys per tile: 64 (32 for heads over 128 wide), so a tile's keys and values take 16 KiB of shared memory each.
// (32-key tiles for 128-wide heads, which halve each thread's chain per tile and split a short key range more
// finely, measured slower on an H200: Q8_0 decode 351 against 360 tok/s, Q4_K_M 376 against 383.)
#define TILE (HDIM <= 128 ? 64 : 32)
// Threads per key when scoring, and the elements of the head each takes.
#define TPK (ATTN_THREADS / TILE)
#define EPT (HDIM / TPK)
static_assert(HDIM % 8 == 0 && TPK >= 1 && TPK <= 32 && EPT % 8 == 0,
              "a key's threads each take whole 8-element chunks of the head");
// Shared rows of keys/values: padded by 16 bytes so rows read together fall in different banks.
#define KV_STRIDE (HDIM + 8)
// Values: each thread owns DPT consecutive elements of the head for every query head of the group, over
// the keys i with i % KSPLIT == its key group; the KSPLIT partial sums are added at the end. Four elements
// each, so a tile's keys are shared among several key groups and each thread's chain of dependent updates
// is a fraction of the tile (the threads beyond HDIM / DPT * KSPLIT, if any, idle).
#define DPT (HDIM / 4 <= ATTN_THREADS ? 4 : (HDIM + ATTN_THREADS - 1) / ATTN_THREADS)
#define KSPLIT (ATTN_THREADS / ((HDIM + DPT - 1) / DPT) > 0 ? ATTN_THREADS / ((HDIM + DPT - 1) / DPT) : 1)
#define KV_TILE_BYTES (2 * TILE * KV_STRIDE * 2)
#define RED_BYTES (KSPLIT * GQA * HDIM * 4)
#define KV_SMEM_BYTES (KV_TILE_BYTES > RED_BYTES ? KV_TILE_BYTES : RED_BYTES)

// Per split, the partial result: HDIM accumulated outputs, then the running max `m` and sum `l` (padded to a
// multiple of four floats so every record starts 16-byte aligned).
#define PART_STRIDE (HDIM + 4)
// The most splits a row's keys are cut into (the host never asks for more).
#define MAX_SPLITS 64


// 16-byte chunks of a tile each thread copies.
#define KV_CHUNK_ITERS ((TILE * (HDIM / 8) + ATTN_THREADS - 1) / ATTN_THREADS)

// Keys k_lo <= key < k_hi of the tile at position `tile` (of `cnt` keys; rows from cnt on are zero-filled)
// from the paged cache into shared memory, asynchronously. Every chunk's block-table lookup is made before
// any copy is issued, so the lookups are in flight together rather than one after another.
__device__ __forceinline__ void load_kv_tile(u16 (*ks)[KV_STRIDE], u16 (*vs)[KV_STRIDE], const u16* __restrict__ kc,
                                             const u16* __restrict__ vc, const int* __restrict__ table, int tile,
                                             int cnt, int k_lo, int k_hi, int block_size, int kv_dim, int kh) {
    size_t at[KV_CHUNK_ITERS];
#pragma unroll
    for (int it = 0; it < KV_CHUNK_ITERS; it++) {
        const int key = (threadIdx.x + it * ATTN_THREADS) / (HDIM / 8);
        const int p = tile + min(key, cnt - 1);
        at[it] = ((size_t)table[p / block_size] * block_size + p % block_size) * kv_dim + kh * HDIM;
    }
#pragma unroll
    for (int it = 0; it < KV_CHUNK_ITERS; it++) {
        const int i = threadIdx.x + it * ATTN_THREADS;
        const int key = i / (HDIM / 8), ch = i % (HDIM / 8);
        if (key < TILE && key >= k_lo && key < k_hi) {
            const int bytes = key < cnt ? 16 : 0;
            cp_async16(&ks[key][ch * 8], (const uint4*)(kc + at[it]) + ch, bytes);
            cp_async16(&vs[key][ch * 8], (const uint4*)(vc + at[it]) + ch, bytes);
        }
    }
}

// ---- The tensor-core path (attn_decode_mma) -------------------------------------------------------------
// Warp w takes keys 16 w .. 16 w + 15 of every 64-key tile, copies them into its own rows of the shared tile
// itself and keeps its own online softmax (running max m, sum l, un-normalized output) over them, so the tile
// loop has no block barrier; the four warps' results are merged once, at the end, as splits are. Per tile a
// warp computes Sᵀ = K Qᵀ (16 keys x 8 columns) and Oᵀ += Vᵀ Pᵀ (the head's dims x 8 columns) with
// mma.m16n8k16, keys and dims as the A rows (from the shared tile by ldmatrix, Vᵀ transposed by it) and the
// query heads as the 8 B columns: column h < 4 holds head h's operand rounded to f16, column 4 + h what that
// rounding left off (f16x2_remainder). Tensor-core products of f16 values are exact and their sums f32, so the
// two columns add up to the scores and outputs of the f32 query and weights, as the CUDA-core kernel computes
// them; the spare columns cost nothing, since a GQA group of 4 fills half of the 8. The weights Pᵀ go from
// the scores' accumulators to B fragments through 256 bytes of shared memory per warp (a transpose).
#if __CUDA_ARCH__ >= 800 && HDIM % 16 == 0 && HDIM <= 128 && GQA <= 4 && ATTN_THREADS == 128
#define ATTN_MMA_OK 1
#else
#define ATTN_MMA_OK 0
#endif
#define WKEYS 16  // keys of a tile per warp: TILE = 64 = ATTN_WARPS * WKEYS on this path
// Rows of the warps' merged outputs, padded so that the lanes of one store fall in different banks.
#define RED_STRIDE (HDIM + 4)

// Keys kw + [k_lo - kw, k_hi - kw) of the warp's 16 from the tile at position `tile` (of `cnt` keys; rows from
// cnt on are zero-filled), by the warp alone: lane j < 16 looks up key kw + j's cache slot (one block-table
// read a key, not one a 16-byte chunk), and the lanes copying its chunks take it by shuffle.
__device__ __forceinline__ void load_kv_warp(u16 (*ks)[KV_STRIDE], u16 (*vs)[KV_STRIDE], const u16* __restrict__ kc,
                                             const u16* __restrict__ vc, const int* __restrict__ table, int tile,
                                             int cnt, int kw, int k_lo, int k_hi, int block_size, int kv_dim,
                                             int kh, int lane) {
    const int pj = tile + min(kw + (lane & (WKEYS - 1)), cnt - 1);
    const int slot = table[pj / block_size] * block_size + pj % block_size;
    constexpr int cpk = HDIM / 8;  // 16-byte chunks a key
#pragma unroll
    for (int it = 0; it < (WKEYS * cpk + 31) / 32; it++) {
        const int i = lane + 32 * it;
        const int j = i / cpk, ch = i % cpk;
        const int sj = __shfl_sync(0xffffffffu, slot, j & (WKEYS - 1));
        const int key = kw + j;
        if (i < WKEYS * cpk && key >= k_lo && key < k_hi) {
            const size_t at = (size_t)sj * kv_dim + kh * HDIM + ch * 8;
            const int bytes = key < cnt ? 16 : 0;
            cp_async16(&ks[key][ch * 8], kc + at, bytes);
            cp_async16(&vs[key][ch * 8], vc + at, bytes);
        }
    }
}

// Keys [begin, end) of one (row, KV head, split) for the block's query heads qs (f32, unscaled); writes the
// split's record (acc, m, l per query head) to part. `pre`: keys of the first tile the warps already copied.
__device__ __forceinline__ void attn_tiles_mma(const float (*qs)[HDIM], u16 (*ks)[KV_STRIDE], u16 (*vs)[KV_STRIDE],
                                               unsigned char* kv_smem, const u16* __restrict__ kc,
                                               const u16* __restrict__ vc, const int* __restrict__ table, int begin,
                                               int end, int pre, float scale, float softcap, int block_size,
                                               int kv_dim, int kh, float* __restrict__ part, size_t rec0,
                                               int n_splits, int sp) {
#if ATTN_MMA_OK
    static_assert(TILE == ATTN_WARPS * WKEYS, "a tile is every warp's keys");
    static_assert(ATTN_WARPS * GQA * RED_STRIDE * 4 <= KV_SMEM_BYTES, "the warps' outputs fit over the tile");
    __shared__ __align__(16) u16 pt[ATTN_WARPS][WKEYS][8];  // each warp's Pᵀ: [key][column], f16
    __shared__ float wm[ATTN_WARPS][GQA], wl[ATTN_WARPS][GQA];
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane >> 2, c = lane & 3;    // the lane's fragment row and column pair
    const int mi = lane >> 3, r8 = lane & 7;  // the lane's ldmatrix matrix and row
    const int kw = WKEYS * w;                 // this warp's first key in each tile
    // The lane's heads: columns 2c, 2c + 1 are heads hc, hc + 1 (c < 2: the f16 part; c >= 2: the remainder).
    const int hc = 2 * (c & 1);
    // Qᵀ as B fragments (k = dims, n = column g): b0 = dims 16 kk + 2c, + 1 and b1 = 8 further, of head g & 3,
    // scaled; columns g >= 4 take the remainders of columns g - 4.
    u32 qb[HDIM / 16][2];
#pragma unroll
    for (int kk = 0; kk < HDIM / 16; kk++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int h = g & 3, d = kk * 16 + 8 * half + 2 * c;
            const float x0 = h < GQA ? qs[h][d] * scale : 0.0f, x1 = h < GQA ? qs[h][d + 1] * scale : 0.0f;
            const u32 hi = pack_f16x2(x0, x1);
            qb[kk][half] = g < 4 ? hi : f16x2_remainder(x0, x1, hi);
        }
    // o[mt]: Oᵀ's fragment of dims 16 mt .. 16 mt + 15: element e is (dim 16 mt + g + 8 (e >> 1), column
    // 2c + (e & 1)).
    float o[HDIM / 16][4];
#pragma unroll
    for (int i = 0; i < HDIM / 16; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    // Running max and sum of heads hc, hc + 1 (the sum over the keys of the lane's rows, columns c < 2 only).
    float m_r[2] = {NEG_INF, NEG_INF}, l_r[2] = {0.0f, 0.0f};
    for (int tile = begin; tile < end; tile += TILE) {
        const int cnt = min(TILE, end - tile);
        if (kw >= cnt) break;  // only the last tile is short; this warp has no keys in it
        __syncwarp();          // the warp's reads of its rows of the previous tile are done
        load_kv_warp(ks, vs, kc, vc, table, tile, cnt, kw, tile == begin ? max(kw, pre) : kw, kw + WKEYS, block_size,
                     kv_dim, kh, lane);
        cp_async_wait_all();
        __syncwarp();
        // Sᵀ = K Qᵀ, the even and odd slices in two accumulators (two chains of half the length).
        float sa[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kk = 0; kk < HDIM / 16; kk++) {
            u32 a0, a1, a2, a3;
            ldsm_x4(smem_addr(&ks[kw + (mi & 1) * 8 + r8][kk * 16 + (mi >> 1) * 8]), a0, a1, a2, a3);
            mma16816(kk & 1 ? sb : sa, a0, a1, a2, a3, qb[kk][0], qb[kk][1]);
        }
        // s[e]: key kw + g + 8 (e >> 1), head hc + (e & 1): both columns of the head added (lanes c, c ^ 2).
        float s[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float v = sa[e] + sb[e];
            v += __shfl_xor_sync(0xffffffffu, v, 2);
            if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
            s[e] = kw + g + 8 * (e >> 1) < cnt ? v : NEG_INF;
        }
        // Each head's maximum over the 16 keys (rows g over lanes 4 apart), then the online-softmax update.
        float alpha[2];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float mx = fmaxf(s[hh], s[hh + 2]);
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
            const float m_new = fmaxf(m_r[hh], mx);
            alpha[hh] = m_new == NEG_INF ? 1.0f : expf(m_r[hh] - m_new);
            m_r[hh] = m_new;
            l_r[hh] *= alpha[hh];
        }
#pragma unroll
        for (int i = 0; i < HDIM / 16; i++) {
            o[i][0] *= alpha[0];
            o[i][1] *= alpha[1];
            o[i][2] *= alpha[0];
            o[i][3] *= alpha[1];
        }
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            p[e] = m_r[e & 1] == NEG_INF ? 0.0f : expf(s[e] - m_r[e & 1]);
            if (c < 2) l_r[e & 1] += p[e];
        }
        // Pᵀ rows g and g + 8, columns 2c, 2c + 1: the weights in f16 (c < 2) or their remainders (c >= 2).
        {
            const u32 h0 = pack_f16x2(p[0], p[1]), h1 = pack_f16x2(p[2], p[3]);
            *(u32*)&pt[w][g][2 * c] = c < 2 ? h0 : f16x2_remainder(p[0], p[1], h0);
            *(u32*)&pt[w][g + 8][2 * c] = c < 2 ? h1 : f16x2_remainder(p[2], p[3], h1);
        }
        __syncwarp();
        u32 pb0, pb1;
        ldsm_x2_t(smem_addr(&pt[w][lane & 15][0]), pb0, pb1);
        // Oᵀ += Vᵀ Pᵀ, 16 dims an mma.
#pragma unroll
        for (int mt = 0; mt < HDIM / 16; mt++) {
            u32 a0, a1, a2, a3;
            ldsm_x4_t(smem_addr(&vs[kw + (mi >> 1) * 8 + r8][mt * 16 + (mi & 1) * 8]), a0, a1, a2, a3);
            mma16816(o[mt], a0, a1, a2, a3, pb0, pb1);
        }
    }
    // Sums over all 16 keys (rows g), and each head's two columns added (lanes c < 2 keep the result).
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        l_r[hh] += __shfl_xor_sync(0xffffffffu, l_r[hh], 4);
        l_r[hh] += __shfl_xor_sync(0xffffffffu, l_r[hh], 8);
        l_r[hh] += __shfl_xor_sync(0xffffffffu, l_r[hh], 16);
    }
#pragma unroll
    for (int i = 0; i < HDIM / 16; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[i][e] += __shfl_xor_sync(0xffffffffu, o[i][e], 2);
    // Merge the warps: acc = sum_w o_w e^(m_w - M), l = sum_w l_w e^(m_w - M), M = max_w m_w.
    float* red = (float*)kv_smem;  // [ATTN_WARPS][GQA][RED_STRIDE], over the tile
    __syncthreads();               // every warp is done with the tile
    if (c < 2) {
#pragma unroll
        for (int i = 0; i < HDIM / 16; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int h = hc + (e & 1);
                if (h < GQA) red[(w * GQA + h) * RED_STRIDE + 16 * i + g + 8 * (e >> 1)] = o[i][e];
            }
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
            if (g == 0 && hc + hh < GQA) {
                wm[w][hc + hh] = m_r[hh];
                wl[w][hc + hh] = l_r[hh];
            }
    }
    __syncthreads();
    for (int idx = tid; idx < GQA * HDIM; idx += ATTN_THREADS) {
        const int h = idx / HDIM, d = idx % HDIM;
        float m = NEG_INF;
#pragma unroll
        for (int v = 0; v < ATTN_WARPS; v++) m = fmaxf(m, wm[v][h]);
        float acc = 0.0f, l = 0.0f;
#pragma unroll
        for (int v = 0; v < ATTN_WARPS; v++) {
            const float f = wm[v][h] == NEG_INF ? 0.0f : expf(wm[v][h] - m);
            acc = fmaf(red[(v * GQA + h) * RED_STRIDE + d], f, acc);
            l = fmaf(wl[v][h], f, l);
        }
        const size_t at = (rec0 + (size_t)h * n_splits + sp) * PART_STRIDE;
        part[at + d] = acc;
        if (d == 0) {
            part[at + HDIM] = m;
            part[at + HDIM + 1] = l;
        }
    }
#else
    __trap();  // the host launches attn_decode_mma only where this path is compiled in
#endif
}

// Causal attention over the paged cache for one query row, split along the keys (flash-decoding): block
// (t * n_kv + kv head, split) covers the GQA query heads of KV head `kh` for query row t and keys
// [split * split_len, ...) up to the row's position (split_len: the step's longest key range over n_splits,
// in whole tiles). Each tile's keys and values are copied to shared memory asynchronously, every copy of the
// tile in flight at once; then scores, an online-softmax update (running max `m`, sum `l`, un-normalized
// output per query head) and the values' weighted sum read them from there. The split's (acc, m, l) go to
// `part` [n, n_heads, n_splits, PART_STRIDE]; the last split of a (row, KV head) to finish (counted in
// `done`, which it resets for the next step) merges them into `out`. Rows that flash_prefill handles are
// skipped. A decode step's kernel is a chain of dependent loads, so what does not depend on the kernels
// before it in the step is started before waiting for them (PDL): the step layout (written by the host
// before the step) is read, and the first tile's keys cached by earlier steps (below the row's sequence's
// `first_pos`) are on their way to shared memory.
#define ATTN_DECODE_PARAMS                                                                                    \
    const float *__restrict__ q, const u16 *__restrict__ kc, const u16 *__restrict__ vc,                      \
        const int *__restrict__ positions, const int *__restrict__ row_seq, const int *__restrict__ table_off, \
        const int *__restrict__ tables, float *__restrict__ part, float *__restrict__ out, int *__restrict__ done, \
        int n_kv, int block_size, int window, float scale, float softcap, const int *__restrict__ max_len,      \
        int n_splits, const int *__restrict__ flash_rows, const int *__restrict__ first_pos,                   \
        signed char *__restrict__ xq, float2 *__restrict__ xd, u16 *__restrict__ xh, int xh_bf16
#define ATTN_DECODE_ARGS                                                                                      \
    q, kc, vc, positions, row_seq, table_off, tables, part, out, done, n_kv, block_size, window, scale, softcap, \
        max_len, n_splits, flash_rows, first_pos, xq, xd, xh, xh_bf16
template <bool MMA>
__device__ __forceinline__ void attn_decode_impl(ATTN_DECODE_PARAMS) {
    __shared__ __align__(16) float qs[GQA][HDIM];
    // The tile's keys and values; after the last tile, the key groups' partial outputs.
    __shared__ __align__(16) unsigned char kv_smem[KV_SMEM_BYTES];
    u16(*ks)[KV_STRIDE] = (u16(*)[KV_STRIDE])kv_smem;
    u16(*vs)[KV_STRIDE] = (u16(*)[KV_STRIDE])(kv_smem + TILE * KV_STRIDE * 2);
    float(*red)[GQA][HDIM] = (float(*)[GQA][HDIM])kv_smem;
    __shared__ float sc[GQA][TILE];
    __shared__ float m_s[GQA], l_s[GQA], alpha_s[GQA];
    __shared__ int is_last;
    const int t = blockIdx.x / n_kv, kh = blockIdx.x % n_kv, sp = blockIdx.y;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int n_heads = n_kv * GQA, kv_dim = n_kv * HDIM;
    const bool flash = flash_rows[t] != 0;  // this row's attention runs in flash_prefill
    const int pos = positions[t];
    const int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    // Splits of whole tiles, sized from the step's longest key range (read here, so a recorded step stays
    // valid as sequences grow).
    const int split_len = ((*max_len + n_splits - 1) / n_splits + TILE - 1) / TILE * TILE;
    const int begin = max(lo, sp * split_len), end = min(pos + 1, (sp + 1) * split_len);
    const int* table = tables + table_off[row_seq[t]];
    // Keys of the first tile loaded before the wait: those below first_pos.
    const int pre = flash || begin >= end ? 0 : min(min(TILE, end - begin), max(0, first_pos[t] - begin));
    if (MMA) {
        if (pre > WKEYS * w)
            load_kv_warp(ks, vs, kc, vc, table, begin, min(TILE, end - begin), WKEYS * w, WKEYS * w,
                         min(pre, WKEYS * (w + 1)), block_size, kv_dim, kh, lane);
    } else if (pre > 0) {
        load_kv_tile(ks, vs, kc, vc, table, begin, min(TILE, end - begin), 0, pre, block_size, kv_dim, kh);
    }
    PDL_PROLOGUE();
    if (flash) return;
    for (int i = tid; i < GQA * HDIM; i += ATTN_THREADS)
        qs[i / HDIM][i % HDIM] = q[(size_t)t * n_heads * HDIM + (size_t)(kh * GQA) * HDIM + i];
    const size_t rec0 = ((size_t)t * n_heads + kh * GQA) * n_splits;  // head g's split s: (rec0 + g n_splits + s)
    if constexpr (MMA) {
        __syncthreads();  // qs
        attn_tiles_mma(qs, ks, vs, kv_smem, kc, vc, table, begin, end, pre, scale, softcap, block_size, kv_dim, kh,
                       part, rec0, n_splits, sp);
    } else {
        if (tid < GQA) {
            m_s[tid] = NEG_INF;
            l_s[tid] = 0.0f;
        }
        // This thread's value elements d0 .. d0 + DPT and key group.
        const int dgroups = (HDIM + DPT - 1) / DPT;
        const int d0 = (tid % dgroups) * DPT, kg = tid / dgroups;
        const bool pv_active = kg < KSPLIT && d0 < HDIM;
        float acc[GQA][DPT];
    #pragma unroll
        for (int g = 0; g < GQA; g++)
    #pragma unroll
            for (int e = 0; e < DPT; e++) acc[g][e] = 0.0f;
        for (int tile = begin; tile < end; tile += TILE) {
            const int cnt = min(TILE, end - tile);
            __syncthreads();  // the previous tile's keys and values are no longer read
            // Keys and values of the tile into shared memory, all in flight (the first tile's early keys already
            // are).
            load_kv_tile(ks, vs, kc, vc, table, tile, cnt, tile == begin ? pre : 0, TILE, block_size, kv_dim, kh);
            cp_async_wait_all();
            __syncthreads();
            // Scores: key i = tid / TPK; each of its TPK threads takes EPT elements; their sums meet by shuffles.
            {
                const int i = tid / TPK, part_i = tid % TPK;
                float s[GQA];
    #pragma unroll
                for (int g = 0; g < GQA; g++) s[g] = 0.0f;
                if (i < cnt) {
                    // The TPK threads of a key start their elements at different chunks, so their reads of the
                    // same query row (EPT floats apart, the same banks for EPT a multiple of 32) do not collide.
    #pragma unroll
                    for (int c = 0; c < EPT / 8; c++) {
                        const int e0 = part_i * EPT + 8 * ((c + part_i) % (EPT / 8));
                        const uint4 raw = *(const uint4*)&ks[i][e0];
                        const u32 wd[4] = {raw.x, raw.y, raw.z, raw.w};
                        float kf[8];
    #pragma unroll
                        for (int j = 0; j < 4; j++) {
                            kf[2 * j] = f16_to_f32((u16)(wd[j] & 0xffffu));
                            kf[2 * j + 1] = f16_to_f32((u16)(wd[j] >> 16));
                        }
    #pragma unroll
                        for (int g = 0; g < GQA; g++) {
                            const float4 qa = *(const float4*)&qs[g][e0];
                            const float4 qb = *(const float4*)&qs[g][e0 + 4];
                            s[g] = fmaf(kf[0], qa.x, s[g]);
                            s[g] = fmaf(kf[1], qa.y, s[g]);
                            s[g] = fmaf(kf[2], qa.z, s[g]);
                            s[g] = fmaf(kf[3], qa.w, s[g]);
                            s[g] = fmaf(kf[4], qb.x, s[g]);
                            s[g] = fmaf(kf[5], qb.y, s[g]);
                            s[g] = fmaf(kf[6], qb.z, s[g]);
                            s[g] = fmaf(kf[7], qb.w, s[g]);
                        }
                    }
                }
    #pragma unroll
                for (int g = 0; g < GQA; g++) {
                    float v = s[g];
    #pragma unroll
                    for (int o = 1; o < TPK; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                    if (part_i == 0 && i < cnt) {
                        v *= scale;
                        if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
                        sc[g][i] = v;
                    }
                }
            }
            __syncthreads();
            // Online softmax: one warp per query head.
            for (int g = w; g < GQA; g += ATTN_WARPS) {
                float mx = NEG_INF;
                for (int i = lane; i < cnt; i += 32) mx = fmaxf(mx, sc[g][i]);
                mx = warp_max(mx);
                const float m_old = m_s[g];
                const float m_new = fmaxf(m_old, mx);
                float sum = 0.0f;
                for (int i = lane; i < cnt; i += 32) {
                    const float e = expf(sc[g][i] - m_new);
                    sc[g][i] = e;
                    sum += e;
                }
                sum = warp_sum(sum);
                __syncwarp();
                if (lane == 0) {
                    const float alpha = m_old == NEG_INF ? 0.0f : expf(m_old - m_new);
                    l_s[g] = l_s[g] * alpha + sum;
                    m_s[g] = m_new;
                    alpha_s[g] = alpha;
                }
            }
            __syncthreads();
            // Values: this thread's elements of every query head, over its group's keys of the tile.
            if (pv_active) {
    #pragma unroll
                for (int g = 0; g < GQA; g++)
    #pragma unroll
                    for (int e = 0; e < DPT; e++) acc[g][e] *= alpha_s[g];
                for (int i = kg; i < cnt; i += KSPLIT) {
                    float vf[DPT];
    #if DPT == 4
                    // Four values in one 8-byte load (d0 + 3 < HDIM: HDIM is a multiple of 4).
                    const uint2 raw = *(const uint2*)&vs[i][d0];
                    vf[0] = f16_to_f32((u16)(raw.x & 0xffffu));
                    vf[1] = f16_to_f32((u16)(raw.x >> 16));
                    vf[2] = f16_to_f32((u16)(raw.y & 0xffffu));
                    vf[3] = f16_to_f32((u16)(raw.y >> 16));
    #else
    #pragma unroll
                    for (int e = 0; e < DPT; e++) vf[e] = d0 + e < HDIM ? f16_to_f32(vs[i][d0 + e]) : 0.0f;
    #endif
    #pragma unroll
                    for (int g = 0; g < GQA; g++) {
                        const float p = sc[g][i];
    #pragma unroll
                        for (int e = 0; e < DPT; e++) acc[g][e] = fmaf(p, vf[e], acc[g][e]);
                    }
                }
            }
        }
        __syncthreads();
        // Add the key groups' partial outputs, then write (acc, m, l) for each query head.
        if (pv_active) {
    #pragma unroll
            for (int g = 0; g < GQA; g++)
    #pragma unroll
                for (int e = 0; e < DPT; e++)
                    if (d0 + e < HDIM) red[kg][g][d0 + e] = acc[g][e];
        }
        __syncthreads();
        for (int idx = tid; idx < GQA * HDIM; idx += ATTN_THREADS) {
            const int g = idx / HDIM, d = idx % HDIM;
            float o = 0.0f;
    #pragma unroll
            for (int k = 0; k < KSPLIT; k++) o += red[k][g][d];
            const size_t at = (rec0 + (size_t)g * n_splits + sp) * PART_STRIDE;
            part[at + d] = o;
            if (d == 0) {
                part[at + HDIM] = m_s[g];
                part[at + HDIM + 1] = l_s[g];
            }
        }
    }  // the CUDA-core path
    // The last split to finish merges: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M) over the splits
    // that saw keys.
    // One thread fences and counts for the block: the barrier orders every thread's records before its
    // fence, which is cumulative (a fence in every thread cost each of them the full wait).
    __syncthreads();
    if (tid == 0) {
        __threadfence();
        int* c = done + blockIdx.x;
        is_last = atomicAdd(c, 1) == n_splits - 1;
        if (is_last) {
            *c = 0;
            __threadfence();
        }
    }
    __syncthreads();
    if (!is_last) return;
    // The other splits' records are read through L2 (__ldcg), never a stale L1 line.
    __shared__ float wsh[GQA][MAX_SPLITS];
    __shared__ float inv_l[GQA];
    const int s_lo = lo / split_len, s_hi = min(n_splits, pos / split_len + 1);
    const int ns = s_hi - s_lo;
    for (int g = w; g < GQA; g += ATTN_WARPS) {
        const float* rec = part + (rec0 + (size_t)g * n_splits + s_lo) * PART_STRIDE;
        // Each lane's splits' (m, l), loaded once.
        float mv[MAX_SPLITS / 32], lv[MAX_SPLITS / 32];
        float mx = NEG_INF;
#pragma unroll
        for (int j = 0; j < MAX_SPLITS / 32; j++) {
            const int i = lane + 32 * j;
            mv[j] = NEG_INF;
            lv[j] = 0.0f;
            if (i < ns) {
                const float2 ml = __ldcg((const float2*)(rec + (size_t)i * PART_STRIDE + HDIM));
                mv[j] = ml.x;
                lv[j] = ml.y;
            }
            mx = fmaxf(mx, mv[j]);
        }
        mx = warp_max(mx);
        float l = 0.0f;
#pragma unroll
        for (int j = 0; j < MAX_SPLITS / 32; j++) {
            const int i = lane + 32 * j;
            if (i < ns) {
                const float wv = mv[j] == NEG_INF ? 0.0f : expf(mv[j] - mx);
                wsh[g][i] = wv;
                l += lv[j] * wv;
            }
        }
        l = warp_sum(l);
        if (lane == 0) inv_l[g] = 1.0f / l;
    }
    __syncthreads();
    for (int idx = tid; idx < GQA * (HDIM / 4); idx += ATTN_THREADS) {
        const int g = idx / (HDIM / 4), d = 4 * (idx % (HDIM / 4));
        const float* rec = part + (rec0 + (size_t)g * n_splits + s_lo) * PART_STRIDE + d;
        float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 16
        for (int i = 0; i < ns; i++) {
            const float4 a = __ldcg((const float4*)(rec + (size_t)i * PART_STRIDE));
            const float wv = wsh[g][i];
            o.x = fmaf(a.x, wv, o.x);
            o.y = fmaf(a.y, wv, o.y);
            o.z = fmaf(a.z, wv, o.z);
            o.w = fmaf(a.w, wv, o.w);
        }
        const float il = inv_l[g];
        o = make_float4(o.x * il, o.y * il, o.z * il, o.w * il);
        const size_t at = ((size_t)t * n_heads + kh * GQA + g) * HDIM + d;
        *(float4*)(out + at) = o;
        // With xq, the row also goes out in 8 bits for the output projection, as quantize_q8 writes it: the
        // eight threads of a 32-value block meet by shuffles (the host passes xq only when every warp's
        // threads are all in the loop: GQA HDIM / 4 a multiple of 32).
        if (xq) q8_store4(o, true, xq, xd, at);
        // With xh, in half precision too, for the output projection's GEMM path (steps of many rows).
        if (xh) *(uint2*)(xh + at) = make_uint2(half2_bits(o.x, o.y, xh_bf16), half2_bits(o.z, o.w, xh_bf16));
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attn_decode(ATTN_DECODE_PARAMS) {
    attn_decode_impl<false>(ATTN_DECODE_ARGS);
}

// The tensor-core path where it is compiled in (ATTN_MMA_OK), else the same as attn_decode.
#ifndef ATTN_MMA_MIN_BLOCKS
#define ATTN_MMA_MIN_BLOCKS 4
#endif
extern "C" __global__ void __launch_bounds__(ATTN_THREADS, ATTN_MMA_MIN_BLOCKS) attn_decode_mma(ATTN_DECODE_PARAMS) {
    attn_decode_impl<ATTN_MMA_OK>(ATTN_DECODE_ARGS);
}
