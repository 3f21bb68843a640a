// Kernels that read one weight type (selected by the WT_* macro, see quant.cuh): matrix-vector products for
// decode, dequantization to f16/bf16 tiles for tensor-core GEMMs, and embedding lookups. Compiled once per
// weight type a model uses.
//
// A weight matrix W is [M rows, K cols], each row whole blocks of WT_BLOCK_BYTES bytes; `wt_deq32(row, u, v)`
// decodes the 32 weights 32u..32u+31 of a row. K is a multiple of 32 (checked at upload).

#define WARPS_PER_BLOCK 4

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
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

// y[c * ldy + r] (=|+=) sum_k W[r, k] * x[c * K + k] for the NC activation rows c < NC and the rows r of W.
// One warp per weight row; lane l decodes units l, l+32, ... of the row and multiplies each with the NC
// activation rows (read through the read-only cache: every warp of the grid reads the same x).
template <int NC>
__device__ __forceinline__ void matvec_impl(const u8* __restrict__ w, const float* __restrict__ x,
                                            float* __restrict__ y, int M, int K, int ldy, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= M) return;
    const int units = K >> 5;
    const u8* row = w + (size_t)r * (size_t)(K / WT_BLOCK_ELEMS) * WT_BLOCK_BYTES;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    for (int u = lane; u < units; u += 32) {
        float v[32];
        wt_deq32(row, u, v);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const float4* xp = (const float4*)(x + (size_t)c * K + (u << 5));
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float4 q = __ldg(xp + i);
                s = fmaf(v[4 * i], q.x, s);
                s = fmaf(v[4 * i + 1], q.y, s);
                s = fmaf(v[4 * i + 2], q.z, s);
                s = fmaf(v[4 * i + 3], q.w, s);
            }
            acc[c] += s;
        }
    }
#pragma unroll
    for (int c = 0; c < NC; c++) {
        float s = warp_sum(acc[c]);
        if (lane == 0) {
            float* o = y + (size_t)c * ldy + r;
            *o = accumulate ? *o + s : s;
        }
    }
}

#define MATVEC(NC)                                                                                      \
    extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * 32)                                  \
        matvec_##NC(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int M, \
                    int K, int ldy, int accumulate) {                                                   \
        matvec_impl<NC>(w, x, y, M, K, ldy, accumulate);                                                \
    }
MATVEC(1)
MATVEC(2)
MATVEC(3)
MATVEC(4)
MATVEC(5)
MATVEC(6)
MATVEC(7)
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
    wt_deq32(row, u, v);
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
    wt_deq32(row, u, v);
    float* o = out + (size_t)t * K + (u << 5);
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = scaled ? __fmul_rn(v[j], scale) : v[j];
}
