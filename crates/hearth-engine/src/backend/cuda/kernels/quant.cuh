// quant.cuh: decoding of every hearth weight type to f32, for the CUDA backend's kernels.
//
// The kernels are CUDA C compiled at run time by NVRTC, which here has no CUDA headers: this file includes
// nothing on the device and defines its own fixed-width types. The same text also compiles as plain C11 on
// the host (gcc), so tests/cuda_decode_host.rs can check every decoder bit for bit against hearth's scalar
// reference `tensor::quants::dequantize_row` without a GPU.
//
// Why bit-exact: every CPU kernel level already reproduces that reference exactly (it in turn reproduces
// the `gguf` Python package and mlx), so a GPU that decodes to the same f32 values leaves accumulation order
// as the only source of CPU/GPU differences. To get there each decoder performs the reference's f32
// operations in its order, every product rounded on its own: nvcc and NVRTC contract `a * b + c` into an FMA
// by default (one rounding instead of two), hence the MUL/ADD/SUB macros (`__fmul_rn` and friends are never
// contracted). The host harness compiles with -ffp-contract=off for the same reason.
//
// Interface: the includer defines exactly one weight-type macro (WT_F32, WT_F16, WT_BF16, WT_Q4_0, WT_Q4_1,
// WT_Q5_0, WT_Q5_1, WT_Q8_0, WT_Q2_K, WT_Q3_K, WT_Q4_K, WT_Q5_K, WT_Q6_K, or WT_MLX with MLX_MODE 0 affine,
// 1 mxfp4, 2 nvfp4, 3 mxfp8; MLX_BITS; MLX_GROUP; MLX_FLOAT 0 f32, 1 f16, 2 bf16 for affine scale and bias)
// and gets
//   WT_BLOCK_ELEMS, WT_BLOCK_BYTES    one block, as DType::block_elems/block_bytes (floats: 32 weights)
//   wt_deq32(row, u, out)             out[i] = weight 32*u + i of the row at `row`, i in 0..32
// A unit of 32 weights may be part of a block (K-quants: 256, MLX: 64 or 128) or span two (nvfp4: 16).
// Every loop has a fixed trip count and `out` is indexed by loop counters only, so once wt_deq32 is inlined
// into a kernel and unrolled the 32 outputs live in registers.

#ifndef HEARTH_QUANT_CUH
#define HEARTH_QUANT_CUH

// ---- Portability prelude -------------------------------------------------------------------------------

#ifdef __CUDACC_RTC__
#define HD __device__ __forceinline__
#define UNROLL _Pragma("unroll")
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char i8;
#define MUL(a, b) __fmul_rn((a), (b))
#define ADD(a, b) __fadd_rn((a), (b))
#define SUB(a, b) __fsub_rn((a), (b))
#else
#include <stdint.h>
#include <string.h>
#define HD static inline
#define UNROLL _Pragma("GCC unroll 32")
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t i8;
#define MUL(a, b) ((a) * (b))
#define ADD(a, b) ((a) + (b))
#define SUB(a, b) ((a) - (b))
#endif

HD float bits_f32(u32 b) {
#ifdef __CUDACC_RTC__
    return __uint_as_float(b);
#else
    float f;
    memcpy(&f, &b, 4);
    return f;
#endif
}

HD u32 f32_bits(float f) {
#ifdef __CUDACC_RTC__
    return __float_as_uint(f);
#else
    u32 b;
    memcpy(&b, &f, 4);
    return b;
#endif
}

// Little-endian reads assembled from bytes: blocks such as Q4_0's 18 bytes leave fields 2-byte aligned at
// best, and MLX headers can be odd-sized, so no wider load is safe.
HD u16 rd16(const u8* p) { return (u16)(p[0] | (p[1] << 8)); }

HD u32 rd32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// IEEE half to f32, exact for every input. The device uses the hardware conversion; the host mirrors the
// Rust reference's `f16_to_f32` (subnormals as man * 2^-24, NaN payloads kept). The hardware may not keep
// a NaN's payload; weights and scales are finite in practice, and tests compare NaNs as equal.
HD float f16_to_f32(u16 h) {
#ifdef __CUDACC_RTC__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    u32 sign = (u32)(h & 0x8000u) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 man = h & 0x3ffu;
    if (exp == 0) return bits_f32(sign | f32_bits((float)man * (1.0f / 16777216.0f)));
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
#endif
}

// bf16 is the top half of an f32: a shift, exact for every input.
HD float bf16_to_f32(u16 b) { return bits_f32((u32)b << 16); }

// ---- Weight type selection -----------------------------------------------------------------------------

#if (defined(WT_F32) + defined(WT_F16) + defined(WT_BF16) + defined(WT_Q4_0) + defined(WT_Q4_1) +           \
     defined(WT_Q5_0) + defined(WT_Q5_1) + defined(WT_Q8_0) + defined(WT_Q2_K) + defined(WT_Q3_K) +        \
     defined(WT_Q4_K) + defined(WT_Q5_K) + defined(WT_Q6_K) + defined(WT_MLX)) != 1
#error "quant.cuh: define exactly one WT_* weight type"
#endif

// ---- Plain floats: a "block" of 32 weights, so every type decodes in units of one block or more --------

#if defined(WT_F32)
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 128
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* p = row + u * WT_BLOCK_BYTES;
    UNROLL for (int i = 0; i < 32; i++) out[i] = bits_f32(rd32(p + 4 * i));
}

#elif defined(WT_F16)
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 64
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* p = row + u * WT_BLOCK_BYTES;
    UNROLL for (int i = 0; i < 32; i++) out[i] = f16_to_f32(rd16(p + 2 * i));
}

#elif defined(WT_BF16)
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 64
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* p = row + u * WT_BLOCK_BYTES;
    UNROLL for (int i = 0; i < 32; i++) out[i] = bf16_to_f32(rd16(p + 2 * i));
}

// ---- GGML's 32-weight blocks: weight i (0..16) is the low nibble of qs[i], weight i + 16 its high nibble -

#elif defined(WT_Q4_0)
// Q4_0: [d: f16][qs: 16 bytes] 32 weights; w = d * (q - 8)
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 18
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float d = f16_to_f32(rd16(b));
    UNROLL for (int i = 0; i < 16; i++) {
        u32 q = b[2 + i];
        out[i] = MUL(d, (float)((int)(q & 15u) - 8));
        out[i + 16] = MUL(d, (float)((int)(q >> 4) - 8));
    }
}

#elif defined(WT_Q4_1)
// Q4_1: [d: f16][m: f16][qs: 16 bytes] 32 weights; w = d * q + m
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 20
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float d = f16_to_f32(rd16(b));
    float m = f16_to_f32(rd16(b + 2));
    UNROLL for (int i = 0; i < 16; i++) {
        u32 q = b[4 + i];
        out[i] = ADD(MUL(d, (float)(q & 15u)), m);
        out[i + 16] = ADD(MUL(d, (float)(q >> 4)), m);
    }
}

#elif defined(WT_Q5_0)
// Q5_0: [d: f16][qh: u32, bit i = weight i's bit 4][qs: 16 bytes] 32 weights; w = d * (q - 16)
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 22
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float d = f16_to_f32(rd16(b));
    u32 qh = rd32(b + 2);
    UNROLL for (int i = 0; i < 16; i++) {
        u32 q = b[6 + i];
        u32 lo = (q & 15u) | (((qh >> i) & 1u) << 4);
        u32 hi = (q >> 4) | (((qh >> (i + 16)) & 1u) << 4);
        out[i] = MUL(d, (float)((int)lo - 16));
        out[i + 16] = MUL(d, (float)((int)hi - 16));
    }
}

#elif defined(WT_Q5_1)
// Q5_1: [d: f16][m: f16][qh: u32][qs: 16 bytes] 32 weights; w = d * q + m
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 24
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float d = f16_to_f32(rd16(b));
    float m = f16_to_f32(rd16(b + 2));
    u32 qh = rd32(b + 4);
    UNROLL for (int i = 0; i < 16; i++) {
        u32 q = b[8 + i];
        u32 lo = (q & 15u) | (((qh >> i) & 1u) << 4);
        u32 hi = (q >> 4) | (((qh >> (i + 16)) & 1u) << 4);
        out[i] = ADD(MUL(d, (float)lo), m);
        out[i + 16] = ADD(MUL(d, (float)hi), m);
    }
}

#elif defined(WT_Q8_0)
// Q8_0: [d: f16][qs: 32 x i8] 32 weights; w = q * d
#define WT_BLOCK_ELEMS 32
#define WT_BLOCK_BYTES 34
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float d = f16_to_f32(rd16(b));
    UNROLL for (int i = 0; i < 32; i++) out[i] = MUL((float)(i8)b[2 + i], d);
}

// ---- GGML's K-quants: super-blocks of 256 weights, decoded one 32-weight sub-block `s` (= u % 8) at a time.
// The per-sub-block factors d * scale and dmin * min are rounded first, then w = factor * q - min_factor.
// 2-bit fields (Q2_K, Q3_K low bits): weight 128*j + 32*l + i is bits 2l..2l+2 of qs[32*j + i], so
// sub-block s reads qs[32*(s/4) + i] shifted by 2*(s%4).

#elif defined(WT_Q2_K)
// Q2_K: [scales: 16 bytes, lo nibble scale / hi nibble min per 16 weights][qs: 64 bytes][d: f16][dmin: f16]
// 256 weights; w = (d * scale) * q - (dmin * min)
#define WT_BLOCK_ELEMS 256
#define WT_BLOCK_BYTES 84
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + (u >> 3) * WT_BLOCK_BYTES;
    int s = u & 7;
    const u8* qs = b + 16 + 32 * (s >> 2);
    int sh = 2 * (s & 3);
    float d = f16_to_f32(rd16(b + 80));
    float dmin = f16_to_f32(rd16(b + 82));
    UNROLL for (int h = 0; h < 2; h++) {
        u32 sc = b[2 * s + h];
        float dl = MUL(d, (float)(sc & 15u));
        float ml = MUL(dmin, (float)(sc >> 4));
        UNROLL for (int k = 0; k < 16; k++) {
            u32 q = (qs[16 * h + k] >> sh) & 3u;
            out[16 * h + k] = SUB(MUL(dl, (float)q), ml);
        }
    }
}

#elif defined(WT_Q3_K)
// Q3_K: [hmask: 32 bytes][qs: 64 bytes, low 2 bits][scales: 12 bytes, 16 x 6 bits][d: f16] 256 weights;
// bit s of hmask[i] is weight 32*s + i's high bit (0 means q -= 4); scale k's low 4 bits are nibble k/8 of
// byte k%8, its top 2 bits are bits 2*(k/4).. of byte 8 + k%4, and it is signed by -32.
// w = (d * scale) * q
#define WT_BLOCK_ELEMS 256
#define WT_BLOCK_BYTES 110
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + (u >> 3) * WT_BLOCK_BYTES;
    int s = u & 7;
    const u8* qs = b + 32 + 32 * (s >> 2);
    const u8* sb = b + 96;
    int sh = 2 * (s & 3);
    float d = f16_to_f32(rd16(b + 108));
    UNROLL for (int h = 0; h < 2; h++) {
        int k = 2 * s + h;
        u32 lo = (sb[k & 7] >> (4 * (k >> 3))) & 15u;
        u32 hi = (sb[8 + (k & 3)] >> (2 * (k >> 2))) & 3u;
        float dl = MUL(d, (float)((int)(lo | (hi << 4)) - 32));
        UNROLL for (int j = 0; j < 16; j++) {
            int i = 16 * h + j;
            int q = (int)((qs[i] >> sh) & 3u) - (((b[i] >> s) & 1u) ? 0 : 4);
            out[i] = MUL(dl, (float)q);
        }
    }
}

#elif defined(WT_Q4_K) || defined(WT_Q5_K)
// Scale and min (6 bits each) of sub-block s from the 12 packed bytes: sub-blocks 0..4 take the low 6 bits
// of sb[s] (scale) and sb[s+4] (min); 4..8 take their low 4 bits from sb[s+4] (scale: low nibble, min: high
// nibble) and their top 2 bits from the top bits of sb[s-4] (scale) and sb[s] (min).
HD void k4_scale_min(const u8* sb, int s, u32* sc, u32* m) {
    if (s < 4) {
        *sc = sb[s] & 63u;
        *m = sb[s + 4] & 63u;
    } else {
        *sc = (sb[s + 4] & 15u) | ((u32)(sb[s - 4] >> 6) << 4);
        *m = (u32)(sb[s + 4] >> 4) | ((u32)(sb[s] >> 6) << 4);
    }
}

#if defined(WT_Q4_K)
// Q4_K: [d: f16][dmin: f16][scales: 12 bytes][qs: 128 bytes] 256 weights; sub-block s is the low (s even) or
// high (s odd) nibbles of qs[32*(s/2) ..]; w = (d * scale) * q - (dmin * min)
#define WT_BLOCK_ELEMS 256
#define WT_BLOCK_BYTES 144
#else
// Q5_K: [d: f16][dmin: f16][scales: 12 bytes][qh: 32 bytes, bit s of qh[i] is bit 4 of weight 32*s + i]
// [qs: 128 bytes as Q4_K] 256 weights; w = (d * scale) * q - (dmin * min)
#define WT_BLOCK_ELEMS 256
#define WT_BLOCK_BYTES 176
#endif

HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + (u >> 3) * WT_BLOCK_BYTES;
    int s = u & 7;
    float d = f16_to_f32(rd16(b));
    float dmin = f16_to_f32(rd16(b + 2));
    u32 sc, m;
    k4_scale_min(b + 4, s, &sc, &m);
    float dl = MUL(d, (float)sc);
    float ml = MUL(dmin, (float)m);
    int sh = 4 * (s & 1);
#if defined(WT_Q4_K)
    const u8* qs = b + 16 + 32 * (s >> 1);
    UNROLL for (int i = 0; i < 32; i++) out[i] = SUB(MUL(dl, (float)((qs[i] >> sh) & 15u)), ml);
#else
    const u8* qh = b + 16;
    const u8* qs = b + 48 + 32 * (s >> 1);
    UNROLL for (int i = 0; i < 32; i++) {
        u32 q = ((qs[i] >> sh) & 15u) | (((u32)(qh[i] >> s) & 1u) << 4);
        out[i] = SUB(MUL(dl, (float)q), ml);
    }
#endif
}

#elif defined(WT_Q6_K)
// Q6_K: [ql: 128 bytes, low 4 bits][qh: 64 bytes, high 2 bits][scales: 16 x i8][d: f16] 256 weights; in half
// j, weight 128*j + 32*l + i has low bits (ql[64*j + 32*(l%2) + i] >> 4*(l/2)) & 15 and high bits
// (qh[32*j + i] >> 2*l) & 3; w = (d * scale) * (q - 32)
#define WT_BLOCK_ELEMS 256
#define WT_BLOCK_BYTES 210
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + (u >> 3) * WT_BLOCK_BYTES;
    int s = u & 7;
    int j = s >> 2, l = s & 3;
    const u8* ql = b + 64 * j + 32 * (l & 1);
    const u8* qh = b + 128 + 32 * j;
    int shl = 4 * (l >> 1), shh = 2 * l;
    float d = f16_to_f32(rd16(b + 208));
    UNROLL for (int h = 0; h < 2; h++) {
        float dl = MUL(d, (float)(i8)b[192 + 2 * s + h]);
        UNROLL for (int k = 0; k < 16; k++) {
            int i = 16 * h + k;
            u32 q = ((ql[i] >> shl) & 15u) | (((u32)(qh[i] >> shh) & 3u) << 4);
            out[i] = MUL(dl, (float)((int)q - 32));
        }
    }
}

// ---- MLX groups as hearth repacks them (tensor/mlx_blocks.rs): one group per block --------------------
// affine: [scale: float][bias: float][codes: GROUP * BITS / 8 bytes]; w = scale * q + bias
// mxfp4:  [scale: E8M0 byte][codes: 16 bytes, E2M1, code 2i low nibble]; w = e2m1(q) * 2^(scale - 127)
// nvfp4:  [scale: E4M3 byte][codes: 8 bytes, E2M1]; w = e2m1(q) * e4m3(scale); groups of 16
// mxfp8:  [scale: E8M0 byte][codes: 32 bytes, E4M3]; w = e4m3(q) * 2^(scale - 127)
// Codes are a little-endian bitstream (code i at bit i * BITS), so 3-, 5- and 6-bit codes cross bytes; 32
// codes are always 4 * BITS whole bytes. The fp modes' products are exact in f32 (or overflow alike).

#elif defined(WT_MLX)
#if !defined(MLX_MODE) || MLX_MODE < 0 || MLX_MODE > 3
#error "quant.cuh: WT_MLX needs MLX_MODE 0 (affine), 1 (mxfp4), 2 (nvfp4) or 3 (mxfp8)"
#endif
#if MLX_MODE != 0
#ifndef MLX_BITS
#define MLX_BITS (MLX_MODE == 3 ? 8 : 4)
#endif
#ifndef MLX_GROUP
#define MLX_GROUP (MLX_MODE == 2 ? 16 : 32)
#endif
#if MLX_BITS != (MLX_MODE == 3 ? 8 : 4) || MLX_GROUP != (MLX_MODE == 2 ? 16 : 32)
#error "quant.cuh: mxfp4 is 4 bits in groups of 32, nvfp4 4 bits in groups of 16, mxfp8 8 bits in groups of 32"
#endif
#define MLX_HEADER 1
#else
#if !defined(MLX_BITS) || MLX_BITS < 1 || MLX_BITS > 8
#error "quant.cuh: MLX affine needs MLX_BITS in 1..8"
#endif
#if !defined(MLX_GROUP) || (MLX_GROUP != 32 && MLX_GROUP != 64 && MLX_GROUP != 128)
#error "quant.cuh: MLX affine needs MLX_GROUP 32, 64 or 128"
#endif
#ifndef MLX_FLOAT
#define MLX_FLOAT 0
#endif
#if MLX_FLOAT == 0
#define MLX_FLOAT_BYTES 4
#elif MLX_FLOAT == 1 || MLX_FLOAT == 2
#define MLX_FLOAT_BYTES 2
#else
#error "quant.cuh: MLX_FLOAT must be 0 (f32), 1 (f16) or 2 (bf16)"
#endif
#define MLX_HEADER (2 * MLX_FLOAT_BYTES)
#endif

#define WT_BLOCK_ELEMS MLX_GROUP
#define WT_BLOCK_BYTES (MLX_HEADER + MLX_GROUP * MLX_BITS / 8)

// The value of an E8M0 scale byte, 2^(b - 127): the byte is the f32 exponent field, except 0 (2^-127, an
// f32 subnormal); 255 gives +inf, as the reference's powi does.
HD float e8m0_to_f32(u32 b) { return bits_f32(b ? b << 23 : 0x00400000u); }

// The value of an E4M3 byte (OCP "fn": no infinities, 0x7F/0xFF are NaN, max 448), built from bits; equal
// to the reference's sign * mag for every byte (-0 included; both NaNs become the positive quiet NaN).
HD float e4m3_to_f32(u32 b) {
    u32 e = (b >> 3) & 15u, m = b & 7u;
    if (e == 15u && m == 7u) return bits_f32(0x7fc00000u);
    u32 mag = e ? ((e + 120u) << 23) | (m << 20) : f32_bits(MUL((float)m, 0.001953125f));
    return bits_f32(((b & 0x80u) << 24) | mag);
}

// E2M1 code -> value in mlx's table order: 0, 0.5, 1, 1.5, 2, 3, 4, 6, then the same negated (code 8 is
// -0). Computed rather than looked up, so no table sits in memory: codes 2..7 are the f32 bits
// (code << 22) + (126 << 23), code 1 is 0.5.
HD float e2m1_to_f32(u32 c) {
    u32 m = c & 7u;
    u32 mag = m >= 2u ? (m << 22) + (126u << 23) : (m ? 0x3f000000u : 0u);
    return bits_f32(((c & 8u) << 28) | mag);
}

#if MLX_MODE == 0
// Affine scale (i = 0) or bias (i = 1) of the block at b.
HD float mlx_float(const u8* b, int i) {
#if MLX_FLOAT == 0
    return bits_f32(rd32(b + 4 * i));
#elif MLX_FLOAT == 1
    return f16_to_f32(rd16(b + 2 * i));
#else
    return bf16_to_f32(rd16(b + 2 * i));
#endif
}

// Eight codes are MLX_BITS whole bytes: gathered into one word, then shifted out.
#if MLX_BITS <= 4
typedef u32 mlx_word;
#else
typedef u64 mlx_word;
#endif

HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + (u / (MLX_GROUP / 32)) * WT_BLOCK_BYTES;
    const u8* c = b + MLX_HEADER + (u % (MLX_GROUP / 32)) * (4 * MLX_BITS);
    float s = mlx_float(b, 0), bias = mlx_float(b, 1);
    UNROLL for (int k = 0; k < 4; k++) {
        mlx_word v = 0;
        UNROLL for (int j = 0; j < MLX_BITS; j++) v |= (mlx_word)c[MLX_BITS * k + j] << (8 * j);
        UNROLL for (int t = 0; t < 8; t++) {
            u32 q = (u32)(v >> (MLX_BITS * t)) & ((1u << MLX_BITS) - 1u);
            out[8 * k + t] = ADD(MUL(s, (float)q), bias);
        }
    }
}

#elif MLX_MODE == 1
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float s = e8m0_to_f32(b[0]);
    UNROLL for (int i = 0; i < 16; i++) {
        u32 c = b[1 + i];
        out[2 * i] = MUL(e2m1_to_f32(c & 15u), s);
        out[2 * i + 1] = MUL(e2m1_to_f32(c >> 4), s);
    }
}

#elif MLX_MODE == 2
HD void wt_deq32(const u8* row, int u, float* out) {
    UNROLL for (int h = 0; h < 2; h++) {
        const u8* b = row + (2 * u + h) * WT_BLOCK_BYTES;
        float s = e4m3_to_f32(b[0]);
        UNROLL for (int i = 0; i < 8; i++) {
            u32 c = b[1 + i];
            out[16 * h + 2 * i] = MUL(e2m1_to_f32(c & 15u), s);
            out[16 * h + 2 * i + 1] = MUL(e2m1_to_f32(c >> 4), s);
        }
    }
}

#else
HD void wt_deq32(const u8* row, int u, float* out) {
    const u8* b = row + u * WT_BLOCK_BYTES;
    float s = e8m0_to_f32(b[0]);
    UNROLL for (int i = 0; i < 32; i++) out[i] = MUL(e4m3_to_f32(b[1 + i]), s);
}
#endif

#endif // weight types

#endif // HEARTH_QUANT_CUH
