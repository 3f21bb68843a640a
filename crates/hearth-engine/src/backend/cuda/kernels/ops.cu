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

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (any blockDim.x that is a multiple of 32, up to 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // `part` may still be read by a previous call
    if (lane == 0) part[w] = v;
    __syncthreads();
    if (w == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ u16 f32_to_f16_bits(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * g for each row r (one block per row). In place when out == x:
// every thread reads only its own elements, and only after the reduction writes them.
extern "C" __global__ void rmsnorm_rows(const float* x, const float* __restrict__ g, float* out, int dim,
                                        float eps) {
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* orow = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    const float s = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = __fmul_rn(__fmul_rn(xr[i], s), g[i]);
}

// x[r] += src[r]; out[r] = rmsnorm(x[r]) * g: the residual add and the next block's input norm in one pass.
extern "C" __global__ void add_rmsnorm_rows(float* __restrict__ x, const float* __restrict__ src,
                                            const float* __restrict__ g, float* __restrict__ out, int dim,
                                            float eps) {
    float* xr = x + (size_t)blockIdx.x * dim;
    const float* sr = src + (size_t)blockIdx.x * dim;
    float* orow = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] + sr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss);
    const float s = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = __fmul_rn(__fmul_rn(xr[i], s), g[i]);
}

// After the q/k/v projections, per row t and head: add the bias, apply the per-head RMS norm, rotate (rope),
// and for KV heads store k and v (as f16) in the row's cache slot (found through its block table). Grid (n rows, n_heads + n_kv), HDIM threads
// rounded up to a warp. q is rotated in place.
extern "C" __global__ void qkv_finish(float* __restrict__ q, const float* __restrict__ k,
                                      const float* __restrict__ v, const float* __restrict__ bq,
                                      const float* __restrict__ bk, const float* __restrict__ bv,
                                      const float* __restrict__ qnorm, const float* __restrict__ knorm,
                                      const float* __restrict__ inv_freq, int rope_half, int neox,
                                      const int* __restrict__ positions, const int* __restrict__ row_seq,
                                      const int* __restrict__ table_off, const int* __restrict__ tables,
                                      int block_size, u16* __restrict__ kcache, u16* __restrict__ vcache, int n_heads, int n_kv,
                                      float eps) {
    __shared__ float buf[HDIM];
    const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    const bool is_q = h < n_heads;
    const int hh = is_q ? h : h - n_heads;
    const int width = is_q ? n_heads * HDIM : n_kv * HDIM;
    const float* src = (is_q ? (const float*)q : k) + (size_t)t * width + hh * HDIM;
    const float* bias = is_q ? bq : bk;
    const float* gain = is_q ? qnorm : knorm;
    float val = 0.0f;
    if (d < HDIM) {
        val = src[d];
        if (bias) val += bias[hh * HDIM + d];
    }
    if (gain) {
        const float ss = block_sum(d < HDIM ? val * val : 0.0f);
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
        q[(size_t)t * width + hh * HDIM + d] = val;
    } else {
        const int p = positions[t];
        const long long slot =
            (long long)tables[table_off[row_seq[t]] + p / block_size] * block_size + p % block_size;
        const size_t at = (size_t)slot * (size_t)(n_kv * HDIM) + hh * HDIM + d;
        kcache[at] = f32_to_f16_bits(val);
        float vv = v[(size_t)t * width + hh * HDIM + d];
        if (bv) vv += bv[hh * HDIM + d];
        vcache[at] = f32_to_f16_bits(vv);
    }
}

#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / 32)
#define TILE 64

// Causal attention over the paged cache, split along the keys (flash-decoding): block (t * n_kv + kv head,
// split) covers the GQA query heads of KV head `kh` for query row t and keys [split * split_len, ...) up to the
// row's position. It keeps a running max `m`, sum `l` and un-normalized output per query head (online softmax
// over tiles of TILE keys) and writes them to `part` [n, n_heads, n_splits, HDIM + 2] for attn_combine.
extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
    attn_partial(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
                 const int* __restrict__ positions, const int* __restrict__ row_seq,
                 const int* __restrict__ table_off, const int* __restrict__ tables, float* __restrict__ part,
                 int n_kv, int block_size, int window, float scale, float softcap, int split_len, int n_splits) {
    __shared__ float qs[GQA][HDIM];
    __shared__ float sc[GQA][TILE];
    __shared__ float acc[GQA][HDIM];
    __shared__ float m_s[GQA], l_s[GQA], alpha_s[GQA];
    __shared__ long long slot_s[TILE];
    const int t = blockIdx.x / n_kv, kh = blockIdx.x % n_kv, sp = blockIdx.y;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int n_heads = n_kv * GQA, kv_dim = n_kv * HDIM;
    const int pos = positions[t];
    const int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    const int begin = max(lo, sp * split_len), end = min(pos + 1, (sp + 1) * split_len);
    const int* table = tables + table_off[row_seq[t]];
    for (int i = tid; i < GQA * HDIM; i += ATTN_THREADS) {
        qs[i / HDIM][i % HDIM] = q[(size_t)t * n_heads * HDIM + (size_t)(kh * GQA) * HDIM + i];
        acc[i / HDIM][i % HDIM] = 0.0f;
    }
    if (tid < GQA) {
        m_s[tid] = NEG_INF;
        l_s[tid] = 0.0f;
    }
    __syncthreads();
    for (int tile = begin; tile < end; tile += TILE) {
        const int cnt = min(TILE, end - tile);
        for (int i = tid; i < cnt; i += ATTN_THREADS) {
            const int p = tile + i;
            slot_s[i] = (long long)table[p / block_size] * block_size + p % block_size;
        }
        __syncthreads();
        // Scores: one warp per key, each lane EPL elements of the head.
        for (int i = w; i < cnt; i += ATTN_WARPS) {
            const u16* kr = kc + (size_t)slot_s[i] * kv_dim + kh * HDIM;
            float kv[EPL];
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                const int idx = lane * EPL + e;
                kv[e] = idx < HDIM ? f16_to_f32(kr[idx]) : 0.0f;
            }
#pragma unroll
            for (int g = 0; g < GQA; g++) {
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < EPL; e++) {
                    const int idx = lane * EPL + e;
                    if (idx < HDIM) s = fmaf(kv[e], qs[g][idx], s);
                }
                s = warp_sum(s);
                if (lane == 0) {
                    s *= scale;
                    if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
                    sc[g][i] = s;
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
        // Values: each thread owns (head g, element d) pairs.
        for (int idx = tid; idx < GQA * HDIM; idx += ATTN_THREADS) {
            const int g = idx / HDIM, d = idx % HDIM;
            float a = acc[g][d] * alpha_s[g];
            for (int i = 0; i < cnt; i++)
                a = fmaf(sc[g][i], f16_to_f32(vc[(size_t)slot_s[i] * kv_dim + kh * HDIM + d]), a);
            acc[g][d] = a;
        }
        __syncthreads();
    }
    for (int idx = tid; idx < GQA * HDIM; idx += ATTN_THREADS) {
        const int g = idx / HDIM, d = idx % HDIM;
        const size_t at = (((size_t)t * n_heads + kh * GQA + g) * n_splits + sp) * (HDIM + 2);
        part[at + d] = acc[g][d];
        if (d == 0) {
            part[at + HDIM] = m_s[g];
            part[at + HDIM + 1] = l_s[g];
        }
    }
}

// out[t, h] = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M): merges the splits of attn_partial.
// One block per (row, head).
extern "C" __global__ void attn_combine(const float* __restrict__ part, float* __restrict__ out, int n_splits) {
    const float* base = part + (size_t)blockIdx.x * n_splits * (HDIM + 2);
    float M = NEG_INF;
    for (int s = 0; s < n_splits; s++) M = fmaxf(M, base[s * (HDIM + 2) + HDIM]);
    float L = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        const float m = base[s * (HDIM + 2) + HDIM];
        if (m != NEG_INF) L += base[s * (HDIM + 2) + HDIM + 1] * expf(m - M);
    }
    for (int d = threadIdx.x; d < HDIM; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_splits; s++) {
            const float m = base[s * (HDIM + 2) + HDIM];
            if (m != NEG_INF) o += base[s * (HDIM + 2) + d] * expf(m - M);
        }
        out[(size_t)blockIdx.x * HDIM + d] = o / L;
    }
}

// gate[i] = silu(gate[i]) * up[i] (act 0) or gelu_tanh(gate[i]) * up[i] (act 1).
extern "C" __global__ void act_mul(float* __restrict__ gate, const float* __restrict__ up, long long n, int act) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = gate[i];
    float y;
    if (act == 0) {
        y = x / (1.0f + expf(-x));
    } else {
        const float c = 0.7978845608f;  // sqrt(2 / pi)
        const float z = c * (x + 0.044715f * x * x * x);
        y = x / (1.0f + expf(-2.0f * z));
    }
    gate[i] = y * up[i];
}

// out[i] = x[i] as f16 (to_bf16 = 0) or bf16 (1): activations for a tensor-core GEMM.
extern "C" __global__ void to_half(const float* __restrict__ x, u16* __restrict__ out, long long n, int to_bf16) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = to_bf16 ? f32_to_bf16_bits(x[i]) : f32_to_f16_bits(x[i]);
}

// out[i] = src[rows[i]]: the rows whose logits are wanted.
extern "C" __global__ void gather_rows(const float* __restrict__ src, const int* __restrict__ rows,
                                       float* __restrict__ out, int dim) {
    const float* s = src + (size_t)rows[blockIdx.x] * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = s[i];
}

// x[i] = cap * tanh(x[i] / cap): final-logit soft-capping.
extern "C" __global__ void softcap_inplace(float* __restrict__ x, long long n, float cap) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

// x[i] *= s.
extern "C" __global__ void scale_inplace(float* __restrict__ x, long long n, float s) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fmul_rn(x[i], s);
}
