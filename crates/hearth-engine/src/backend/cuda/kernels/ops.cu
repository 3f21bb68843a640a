// The element-wise and normalization kernels of a transformer layer on f32 activations, with keys and values
// cached in f16 (decode attention follows in attn_decode.cu, prefill attention in flash.cu: one module).
// Compiled once per model shape: HEAD_DIM (elements per head) and GQA (query heads per KV head) are
// compile-time constants (-D), so register arrays and shared tiles are sized exactly.

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
