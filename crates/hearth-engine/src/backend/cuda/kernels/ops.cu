// The element-wise, normalization and attention kernels of a transformer layer on f32 activations, with keys
// and values cached in f16. Compiled once per model shape: HEAD_DIM (elements per head) and GQA (query heads
// per KV head) are compile-time constants (-D), so register arrays and shared tiles are sized exactly.

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GQA
#error "GQA must be defined"
#endif

#define HDIM HEAD_DIM
#define NEG_INF __int_as_float(0xff800000)
// Elements of a head each lane of a warp holds when a warp works on one key.
#define EPL ((HDIM + 31) / 32)

// Float4s of a row each thread of a norm keeps in registers between the sum of squares and the scaling:
// the host picks blockDim so that dim <= 4 NORM_V4 blockDim (16 values a thread: a 4096-wide row takes 256
// threads). Longer rows, and rows whose width is not a multiple of 4, take the scalar loop.
#define NORM_V4 4

// Four consecutive values of a row, quantized to 8 bits as quantize_q8 does: the eight lanes holding one
// 32-value block (lanes 8k .. 8k + 7 of a warp, all of them calling) meet by shuffles; lane 8k writes the
// block's (d, d * sum q). `in`: whether this lane's values are in the row (a block is all in or all out).
__device__ __forceinline__ void q8_store4(float4 o, bool in, signed char* __restrict__ xq,
                                          float2* __restrict__ xd, size_t at) {
    float amax = fmaxf(fmaxf(fabsf(o.x), fabsf(o.y)), fmaxf(fabsf(o.z), fabsf(o.w)));
#pragma unroll
    for (int k = 1; k < 8; k <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, k));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q0 = __float2int_rn(o.x * id), q1 = __float2int_rn(o.y * id);
    const int q2 = __float2int_rn(o.z * id), q3 = __float2int_rn(o.w * id);
    float sum = (float)(q0 + q1 + q2 + q3);
#pragma unroll
    for (int k = 1; k < 8; k <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, k);
    if (in) {
        *(u32*)(xq + at) =
            (u32)(q0 & 0xff) | ((u32)(q1 & 0xff) << 8) | ((u32)(q2 & 0xff) << 16) | ((u32)(q3 & 0xff) << 24);
        if ((threadIdx.x & 7) == 0) xd[at / 32] = make_float2(d, d * sum);
    }
}

// Sum over the block for every thread, with two barriers: each warp adds the warps' partials itself.
__device__ __forceinline__ float block_sum_all(float v) {
    __shared__ float part[32];
    v = warp_sum(v);
    __syncthreads();  // `part` may still be read by a previous call
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
    for (int k = 0; k < (int)(blockDim.x >> 5); k++) s += part[k];
    return s;
}

// Element i of split-K partial sums: `splits` slices `stride` floats apart, added in dqmm_sum's order.
__device__ __forceinline__ float split_sum(const float* __restrict__ p, int splits, long long stride, long long i) {
    float v = p[i];
    for (int z = 1; z < splits; z++) v += p[(size_t)z * stride + i];
    return v;
}

// With `add` null: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * g for each row r (one block per row), in place
// when out == x (every thread reads only its own elements, and only after the reduction writes them). With
// `add`: first x[r] += add[r] (written back), the residual add and the next block's input norm in one pass.
// With xq (the host passes it only for rows of a multiple of 32 that fit the registers), the output row is
// also quantized to 8 bits; with xh, also written in half precision (f16, or bf16 when xh_bf16), for the
// tensor-core products that read it next (no to_half launch). A decode step runs 2 of these a layer with one
// row each, so the kernel is a latency chain: the gains are loaded before the wait for the previous kernel, every other load of the row is
// in flight at once, and the 8-bit blocks of a thread's four float4s are independent shuffle chains.
//
// `add` may be split-K partial sums (add_splits of them, add_stride floats apart, as dqmm writes them): they are
// added in dqmm_sum's order, so the result is the same as summing them first, one launch fewer.
extern "C" __global__ void rmsnorm_rows(float* x, const float* __restrict__ add, int add_splits,
                                        long long add_stride, const float* __restrict__ g, float* out, int dim,
                                        float eps, signed char* __restrict__ xq, float2* __restrict__ xd,
                                        u16* __restrict__ xh, int xh_bf16) {
    const int nt = blockDim.x, tid = threadIdx.x;
    float* xr = x + (size_t)blockIdx.x * dim;
    const float* ar = add ? add + (size_t)blockIdx.x * dim : nullptr;
    float* orow = out + (size_t)blockIdx.x * dim;
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if ((dim & 3) == 0 && dim <= 4 * NORM_V4 * nt) {
        float4 gv[NORM_V4], v[NORM_V4];
#pragma unroll
        for (int j = 0; j < NORM_V4; j++) {
            const int i = 4 * (j * nt + tid);
            gv[j] = i < dim ? __ldg((const float4*)(g + i)) : zero;
        }
        PDL_PROLOGUE();
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < NORM_V4; j++) {
            const int i = 4 * (j * nt + tid);
            v[j] = zero;
            if (i < dim) {
                v[j] = *(const float4*)(xr + i);
                if (ar) {
                    float4 a = *(const float4*)(ar + i);
                    for (int z = 1; z < add_splits; z++) {
                        const float4 b = *(const float4*)(ar + (size_t)z * add_stride + i);
                        a = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
                    }
                    v[j] = make_float4(v[j].x + a.x, v[j].y + a.y, v[j].z + a.z, v[j].w + a.w);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < NORM_V4; j++) {
            const int i = 4 * (j * nt + tid);
            if (ar && i < dim) *(float4*)(xr + i) = v[j];
            ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
        }
        const float s = 1.0f / sqrtf(block_sum_all(ss) / (float)dim + eps);
#pragma unroll
        for (int j = 0; j < NORM_V4; j++) {
            const int i = 4 * (j * nt + tid);
            const float4 o =
                make_float4(__fmul_rn(__fmul_rn(v[j].x, s), gv[j].x), __fmul_rn(__fmul_rn(v[j].y, s), gv[j].y),
                            __fmul_rn(__fmul_rn(v[j].z, s), gv[j].z), __fmul_rn(__fmul_rn(v[j].w, s), gv[j].w));
            if (i < dim) *(float4*)(orow + i) = o;
            if (xh && i < dim)
                *(uint2*)(xh + (size_t)blockIdx.x * dim + i) =
                    make_uint2(half2_bits(o.x, o.y, xh_bf16), half2_bits(o.z, o.w, xh_bf16));
            if (xq && 4 * j * nt < dim) q8_store4(o, i < dim, xq, xd, (size_t)blockIdx.x * dim + i);
        }
        return;
    }
    PDL_PROLOGUE();
    float ss = 0.0f;
    for (int i = tid; i < dim; i += nt) {
        const float w = ar ? xr[i] + split_sum(ar, add_splits, add_stride, i) : xr[i];
        if (ar) xr[i] = w;
        ss += w * w;
    }
    const float s = 1.0f / sqrtf(block_sum_all(ss) / (float)dim + eps);
    for (int i = tid; i < dim; i += nt) {
        const float o = __fmul_rn(__fmul_rn(xr[i], s), g[i]);
        orow[i] = o;
        if (xh) xh[(size_t)blockIdx.x * dim + i] = f32_to_half_bits(o, xh_bf16);
    }
}

// After the q/k/v projections, per row t and head: add the bias, apply the per-head RMS norm, rotate (rope),
// and for KV heads store k and v (as f16) in the row's cache slot (found through its block table). Grid (n rows, n_heads + n_kv), HDIM threads
// rounded up to a warp. The rotated q goes to q. The projections are read from qp, kp and vp: the products'
// outputs (qp = q: rotated in place; qs = ks = vs = 1), or their split-K partial sums (qs slices qst floats
// apart, and so on), added here in dqmm_sum's order instead of by a launch of their own.
extern "C" __global__ void qkv_finish(float* __restrict__ q, const float* __restrict__ qp, int qs, long long qst,
                                      const float* __restrict__ k, int ks, long long kst,
                                      const float* __restrict__ v, int vs, long long vst, const float* __restrict__ bq,
                                      const float* __restrict__ bk, const float* __restrict__ bv,
                                      const float* __restrict__ qnorm, const float* __restrict__ knorm,
                                      const float* __restrict__ inv_freq, int rope_half, int neox,
                                      const int* __restrict__ positions, const int* __restrict__ row_seq,
                                      const int* __restrict__ table_off, const int* __restrict__ tables,
                                      int block_size, u16* __restrict__ kcache, u16* __restrict__ vcache, int n_heads, int n_kv,
                                      float eps) {
    PDL_PROLOGUE();
    __shared__ float buf[HDIM];
    const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    const bool is_q = h < n_heads;
    const int hh = is_q ? h : h - n_heads;
    const int width = is_q ? n_heads * HDIM : n_kv * HDIM;
    const long long el = (long long)t * width + hh * HDIM + d;  // this thread's element of q (k, v)
    const float* bias = is_q ? bq : bk;
    const float* gain = is_q ? qnorm : knorm;
    float val = 0.0f;
    if (d < HDIM) {
        val = is_q ? split_sum(qp, qs, qst, el) : split_sum(k, ks, kst, el);
        if (bias) val += bias[hh * HDIM + d];
    }
    if (gain) {
        const float ss = block_sum_all(d < HDIM ? val * val : 0.0f);
        const float s = 1.0f / sqrtf(ss / (float)HDIM + eps);
        if (d < HDIM) val = __fmul_rn(__fmul_rn(val, s), gain[d]);
    }
    if (d < HDIM) buf[d] = val;
    __syncthreads();
    if (d < HDIM && d < 2 * rope_half) {
        const int i = neox ? (d < rope_half ? d : d - rope_half) : d >> 1;
        const bool first = neox ? d < rope_half : (d & 1) == 0;
        const float a = neox ? buf[i] : buf[2 * i];
        const float b = neox ? buf[i + rope_half] : buf[2 * i + 1];
        float sn, cs;
        sincosf(__fmul_rn((float)positions[t], inv_freq[i]), &sn, &cs);
        val = first ? __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn))
                    : __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    }
    if (d >= HDIM) return;
    if (is_q) {
        q[el] = val;
    } else {
        const int p = positions[t];
        const long long slot =
            (long long)tables[table_off[row_seq[t]] + p / block_size] * block_size + p % block_size;
        const size_t at = (size_t)slot * (size_t)(n_kv * HDIM) + hh * HDIM + d;
        kcache[at] = f32_to_f16_bits(val);
        float vv = split_sum(v, vs, vst, el);
        if (bv) vv += bv[hh * HDIM + d];
        vcache[at] = f32_to_f16_bits(vv);
    }
}

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
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attn_decode(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
                const int* __restrict__ positions, const int* __restrict__ row_seq,
                const int* __restrict__ table_off, const int* __restrict__ tables, float* __restrict__ part,
                float* __restrict__ out, int* __restrict__ done, int n_kv, int block_size, int window,
                float scale, float softcap, const int* __restrict__ max_len, int n_splits,
                const int* __restrict__ flash_rows, const int* __restrict__ first_pos,
                signed char* __restrict__ xq, float2* __restrict__ xd, u16* __restrict__ xh, int xh_bf16) {
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
    if (pre > 0) load_kv_tile(ks, vs, kc, vc, table, begin, min(TILE, end - begin), 0, pre, block_size, kv_dim, kh);
    PDL_PROLOGUE();
    if (flash) return;
    for (int i = tid; i < GQA * HDIM; i += ATTN_THREADS)
        qs[i / HDIM][i % HDIM] = q[(size_t)t * n_heads * HDIM + (size_t)(kh * GQA) * HDIM + i];
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
    const size_t rec0 = ((size_t)t * n_heads + kh * GQA) * n_splits;  // head g's split s: (rec0 + g n_splits + s)
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

// gate[i] = silu(gate[i]) * up[i] (act 0) or gelu_tanh(gate[i]) * up[i] (act 1).
extern "C" __global__ void act_mul(float* __restrict__ gate, const float* __restrict__ up, long long n, int act) {
    PDL_PROLOGUE();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    gate[i] = gate_act(gate[i], act) * up[i];
}

// out[i] = act(gate[i]) * up[i] as f16 (to_bf16 = 0) or bf16 (1): act_mul and to_half in one pass, when the
// result only feeds a tensor-core GEMM (the f32 product is never written). gate and up may be dqmm's split-K
// partial sums (gs and us slices, gstride and ustride floats apart; 1 and any stride for plain rows): they are
// added here, where the products' own sum launch would have written them out and read them back.
extern "C" __global__ void act_mul_half(const float* __restrict__ gate, int gs, long long gstride,
                                        const float* __restrict__ up, int us, long long ustride,
                                        u16* __restrict__ out, long long n, int act, int to_bf16) {
    PDL_PROLOGUE();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = gate_act(split_sum(gate, gs, gstride, i), act) * split_sum(up, us, ustride, i);
    out[i] = f32_to_half_bits(v, to_bf16);
}

// out[i] = x[i] as f16 (to_bf16 = 0) or bf16 (1): activations for a tensor-core GEMM.
extern "C" __global__ void to_half(const float* __restrict__ x, u16* __restrict__ out, long long n, int to_bf16) {
    PDL_PROLOGUE();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = f32_to_half_bits(x[i], to_bf16);
}

// out[i] = src[rows[i]]: the rows whose logits are wanted.
extern "C" __global__ void gather_rows(const float* __restrict__ src, const int* __restrict__ rows,
                                       float* __restrict__ out, int dim) {
    PDL_PROLOGUE();
    const float* s = src + (size_t)rows[blockIdx.x] * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = s[i];
}

// x[i] = cap * tanh(x[i] / cap): final-logit soft-capping.
extern "C" __global__ void softcap_inplace(float* __restrict__ x, long long n, float cap) {
    PDL_PROLOGUE();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

// x[i] *= s.
extern "C" __global__ void scale_inplace(float* __restrict__ x, long long n, float s) {
    PDL_PROLOGUE();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fmul_rn(x[i], s);
}

// Quantizes activations for the integer matvec kernels, per 32-value block as the CPU's q8 path does:
// d = max|x| / 127, q = round-half-even(x / d) (0 for an all-zero block); xd gets (d, d * sum(q)). One warp
// per block, one value per lane.
extern "C" __global__ void quantize_q8(const float* __restrict__ x, signed char* __restrict__ xq,
                                       float2* __restrict__ xd, int n_blocks) {
    PDL_PROLOGUE();
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= n_blocks) return;
    const int lane = threadIdx.x & 31;
    const float v = x[(size_t)b * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = __float2int_rn(v * id);
    xq[(size_t)b * 32 + lane] = (signed char)q;
    const float sum = warp_sum((float)q);
    if (lane == 0) xd[b] = make_float2(d, d * sum);
}

// ---- Greedy tokens on the device ---------------------------------------------------------------------------
// A step of many streams sampled greedily needs one id a row, not the rows of logits (64 rows of a 128k
// vocabulary are 33 MB a step to copy and scan on the CPU). These two give sample::argmax_biased's choice.

// Row r of logits ([rows, vocab]) += its biases: pairs k in [starts[r], starts[r + 1]) add vals[k] to entry
// ids[k], in order (ids past the vocabulary ignored), as the CPU sampler adds them. One thread a row.
extern "C" __global__ void logit_bias_rows(float* __restrict__ logits, int rows, int vocab,
                                           const unsigned* __restrict__ starts, const unsigned* __restrict__ ids,
                                           const float* __restrict__ vals) {
    PDL_PROLOGUE();
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    for (unsigned k = starts[r]; k < starts[r + 1]; k++)
        if (ids[k] < (unsigned)vocab) logits[(size_t)r * vocab + ids[k]] += vals[k];
}

// out[r] = the first index of row r's largest value (NaN never the largest; 0 when every value is NaN), as
// sample::argmax picks. One block a row; (value, index) pairs reduce with "larger value, else smaller index".
#define ARGMAX_THREADS 512
__device__ __forceinline__ void argmax_take(float& v, unsigned& i, float ov, unsigned oi) {
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_rows(const float* __restrict__ logits, int vocab, unsigned* __restrict__ out) {
    PDL_PROLOGUE();
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float v = NEG_INF;
    unsigned i = 0xffffffffu;  // none yet
    for (int k = threadIdx.x; k < vocab; k += ARGMAX_THREADS) argmax_take(v, i, row[k], (unsigned)k);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const unsigned oi = __shfl_xor_sync(0xffffffffu, i, o);
        argmax_take(v, i, ov, oi);
    }
    __shared__ float sv[ARGMAX_THREADS / 32];
    __shared__ unsigned si[ARGMAX_THREADS / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = v, si[warp] = i;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; w++) argmax_take(v, i, sv[w], si[w]);
        out[blockIdx.x] = i == 0xffffffffu ? 0u : i;
    }
}
