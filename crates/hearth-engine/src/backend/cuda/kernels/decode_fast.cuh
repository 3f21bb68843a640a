// Device-only decoders for the weight types decode speed depends on most (f32/f16/bf16, Q8_0, Q4_0, Q4_K,
// Q6_K): the same values as quant.cuh's wt_deq32, bit for bit, read with the widest loads each block's
// alignment allows and converted without the integer-to-float unit.
//
// - Loads: 16 bytes at a time where a block keeps 16-byte alignment (floats, Q4_K), else 16-bit loads (Q8_0's
//   34-byte and Q6_K's 210-byte blocks leave fields 2-byte aligned), instead of quant.cuh's byte loads.
// - Small integers become floats by the exponent trick: the bits 0x4B000000 | q are the float 2^23 + q, so
//   one byte permute (which also picks the byte) and one subtraction give q exactly; the converter unit runs
//   at a quarter of the FMA rate on recent GPUs and would bound the kernel.
// Everything else (the factor products, their order) is quant.cuh's, so the results are identical; the GPU
// tests compare the two decoders on random blocks.

__device__ __forceinline__ uint4 ld16(const u8* p) { return __ldg((const uint4*)p); }
__device__ __forceinline__ u32 ld2(const u8* p) { return __ldg((const unsigned short*)p); }
// 4 N bytes at p (2-byte aligned) as N little-endian words, from N + 1 aligned 4-byte loads and funnel
// shifts: half the load instructions of 16-bit loads, which bound the Q6_K and Q8_0 kernels (ncu on an H200:
// the Q6_K down product at 34% of DRAM bandwidth, its warps waiting on 32 loads a unit). The last word may
// lie up to 4 bytes past the field, which the host's padding after every matrix keeps in bounds.
template <int N>
__device__ __forceinline__ void ldw_2(const u8* p, u32* w) {
    const u32* a = (const u32*)((size_t)p & ~(size_t)3);
    const u32 sh = ((u32)(size_t)p & 2u) * 8u;
    u32 v[N + 1];
#pragma unroll
    for (int i = 0; i <= N; i++) v[i] = __ldg(a + i);
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = __funnelshift_r(v[i], v[i + 1], sh);
}
// Byte k of w, an unsigned value below 2^23 by construction, plus 2^23, as a float's bits.
__device__ __forceinline__ float magic_byte(u32 w, int k) {
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7650 | k));
}
#define MAGIC 8388608.0f

// Byte i (0..12) of the scales held in three words, for a run-time i without a local array.
__device__ __forceinline__ u32 scale_byte(u32 y, u32 z, u32 w, int i) {
    const u32 word = i < 4 ? y : (i < 8 ? z : w);
    return (word >> (8 * (i & 3))) & 0xffu;
}

// Q4_K's 6-bit scale and min of sub-block s from the header word quad (d, dmin | scales[12]): quant.cuh's
// k4_scale_min on bytes held in registers.
__device__ __forceinline__ void q4k_scale_min(uint4 h, int s, u32* sc, u32* m) {
    if (s < 4) {
        *sc = scale_byte(h.y, h.z, h.w, s) & 63u;
        *m = scale_byte(h.y, h.z, h.w, s + 4) & 63u;
    } else {
        const u32 hi = scale_byte(h.y, h.z, h.w, s + 4);
        *sc = (hi & 15u) | ((scale_byte(h.y, h.z, h.w, s - 4) >> 6) << 4);
        *m = (hi >> 4) | ((scale_byte(h.y, h.z, h.w, s) >> 6) << 4);
    }
}

#if defined(WT_F32)
__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    const float4* p = (const float4*)(row + u * 128);
    UNROLL for (int i = 0; i < 8; i++) {
        float4 v = __ldg(p + i);
        out[4 * i] = v.x;
        out[4 * i + 1] = v.y;
        out[4 * i + 2] = v.z;
        out[4 * i + 3] = v.w;
    }
}

#elif defined(WT_BF16) || defined(WT_F16)
__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    const u8* p = row + u * 64;
    UNROLL for (int i = 0; i < 4; i++) {
        uint4 v = ld16(p + 16 * i);
        u32 w[4] = {v.x, v.y, v.z, v.w};
        UNROLL for (int j = 0; j < 4; j++) {
#if defined(WT_BF16)
            out[8 * i + 2 * j] = __uint_as_float(w[j] << 16);
            out[8 * i + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
#else
            out[8 * i + 2 * j] = f16_to_f32((u16)(w[j] & 0xffffu));
            out[8 * i + 2 * j + 1] = f16_to_f32((u16)(w[j] >> 16));
#endif
        }
    }
}

#elif defined(WT_Q8_0)
__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    const u8* b = row + u * 34;
    const float d = f16_to_f32((u16)ld2(b));
    u32 qw[8];
    ldw_2<8>(b + 2, qw);
    UNROLL for (int i = 0; i < 8; i++) {
        // Signed bytes s become s + 128 (flip the top bit), so 2^23 + s + 128 is exact; subtract both.
        const u32 w = qw[i] ^ 0x80808080u;
        UNROLL for (int k = 0; k < 4; k++) out[4 * i + k] = MUL(magic_byte(w, k) - (MAGIC + 128.0f), d);
    }
}

#elif defined(WT_Q4_0)
__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    const u8* b = row + u * 18;
    const float d = f16_to_f32((u16)ld2(b));
    u32 qw[4];
    ldw_2<4>(b + 2, qw);
    UNROLL for (int i = 0; i < 4; i++) {
        const u32 w = qw[i];
        const u32 lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
        UNROLL for (int k = 0; k < 4; k++) {
            out[4 * i + k] = MUL(d, magic_byte(lo, k) - (MAGIC + 8.0f));
            out[16 + 4 * i + k] = MUL(d, magic_byte(hi, k) - (MAGIC + 8.0f));
        }
    }
}

#elif defined(WT_Q4_K)
__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    const u8* b = row + (u >> 3) * 144;
    const int s = u & 7;
    const uint4 h = ld16(b);  // d, dmin, scales[12]
    const float d = f16_to_f32((u16)(h.x & 0xffffu));
    const float dmin = f16_to_f32((u16)(h.x >> 16));
    u32 sc, m;
    q4k_scale_min(h, s, &sc, &m);
    const float dl = MUL(d, (float)sc);
    const float ml = MUL(dmin, (float)m);
    const int sh = 4 * (s & 1);
    const u8* qs = b + 16 + 32 * (s >> 1);
    UNROLL for (int i = 0; i < 2; i++) {
        const uint4 v = ld16(qs + 16 * i);
        const u32 w[4] = {v.x, v.y, v.z, v.w};
        UNROLL for (int j = 0; j < 4; j++) {
            const u32 q = (w[j] >> sh) & 0x0F0F0F0Fu;
            UNROLL for (int k = 0; k < 4; k++)
                out[16 * i + 4 * j + k] = SUB(MUL(dl, magic_byte(q, k) - MAGIC), ml);
        }
    }
}

#elif defined(WT_Q6_K)
// Unit u of a Q6_K row (32 weights: sub-blocks 2s and 2s + 1 of block u >> 3, s = u & 7): its 6-bit codes
// as eight words of four bytes (weights 4i .. 4i + 3 in q[i]), the block's factor d and the two 16-weight
// scales (the low and high bytes of scw). Both decoders below read a unit through it.
__device__ __forceinline__ void q6k_unit(const u8* row, int u, u32* q, float* d, u32* scw) {
    const u8* b = row + (u >> 3) * 210;
    const int s = u & 7;
    const int j = s >> 2, l = s & 3;
    const u8* ql = b + 64 * j + 32 * (l & 1);
    const u8* qh = b + 128 + 32 * j;
    const int shl = 4 * (l >> 1), shh = 2 * l;
    *d = f16_to_f32((u16)ld2(b + 208));
    *scw = ld2(b + 192 + 2 * s);
    u32 lw[8], hw[8];
    ldw_2<8>(ql, lw);
    ldw_2<8>(qh, hw);
    UNROLL for (int i = 0; i < 8; i++) q[i] = ((lw[i] >> shl) & 0x0F0F0F0Fu) | (((hw[i] >> shh) & 0x03030303u) << 4);
}

__device__ __forceinline__ void wt_deq32_fast(const u8* row, int u, float* out) {
    u32 qw[8], scw;
    float d;
    q6k_unit(row, u, qw, &d, &scw);
    UNROLL for (int h = 0; h < 2; h++) {
        const float dl = MUL(d, (float)(i8)((scw >> (8 * h)) & 0xffu));
        UNROLL for (int i = 0; i < 4; i++) {
            const u32 q = qw[4 * h + i];  // 6-bit codes, one per byte
            UNROLL for (int k = 0; k < 4; k++)
                out[16 * h + 4 * i + k] = MUL(dl, magic_byte(q, k) - (MAGIC + 32.0f));
        }
    }
}

#else
#define wt_deq32_fast wt_deq32
#endif

// ---- Integer dot products against 8-bit activations (decode with quantized activations) -----------------
// Activations are quantized per 32-value block as the CPU's q8 path does (backend/cpu/qdot): q = round(x / d),
// d = max|x| / 127, and the block keeps (d, d * sum(q)). For the types below a 32-weight unit is given as 8
// words of 4 signed bytes (q8), two factors a0 (words 0-3) and a1 (words 4-7) and an offset factor b, so that
// unit · x = xd * (a0 * dp4a(q8[0..4], x8[0..4]) + a1 * dp4a(q8[4..8], x8[4..8])) + b * xs.
#if defined(WT_Q8_0) || defined(WT_Q4_0) || defined(WT_Q4_K) || defined(WT_Q6_K)
#define HAS_Q8 1
// A unit in two steps: unit_q8_load reads the aligned words the unit's fields lie in, unit_q8_decode turns them
// into unit_q8's values. SH: the row lies in shared memory (weights.cu's dqmm copies each step's raw bytes
// there first), else in global memory, read through the read-only cache. Aligned addresses are formed from
// the pointer itself, so the compiler keeps the shared address space.
template <bool SH>
__device__ __forceinline__ u32 ldq32(const u8* p) {
    if (SH) return *(const u32*)p;
    return __ldg((const u32*)p);
}
template <bool SH>
__device__ __forceinline__ uint4 ldq128(const u8* p) {
    if (SH) return *(const uint4*)p;
    return __ldg((const uint4*)p);
}
template <bool SH>
__device__ __forceinline__ u32 ldq16(const u8* p) {
    if (SH) return *(const unsigned short*)p;
    return __ldg((const unsigned short*)p);
}
#if defined(WT_Q8_0) || defined(WT_Q4_0)
// The 34- or 18-byte block from the 4-byte word at or below it: d in the first two bytes, then the codes.
#define Q8_RAW_WORDS (WT_BLOCK_BYTES == 34 ? 9 : 5)
struct Q8Raw {
    u32 v[Q8_RAW_WORDS];
    u32 sh;  // 0 or 16: the block's offset in bits from the first word
};
template <bool SH = false>
__device__ __forceinline__ void unit_q8_load(const u8* row, int u, Q8Raw& r) {
    const u8* blk = row + u * WT_BLOCK_BYTES;
    const u8* a = blk - ((size_t)blk & 3u);
    r.sh = ((u32)(size_t)blk & 2u) * 8u;
#pragma unroll
    for (int i = 0; i < Q8_RAW_WORDS; i++) r.v[i] = ldq32<SH>(a + 4 * i);
}
#elif defined(WT_Q4_K)
struct Q8Raw {
    uint4 h, v0, v1;  // d, dmin, scales[12]; the unit's 32 code bytes
};
template <bool SH = false>
__device__ __forceinline__ void unit_q8_load(const u8* row, int u, Q8Raw& r) {
    const u8* blk = row + (u >> 3) * 144;
    const u8* qs = blk + 16 + 32 * ((u & 7) >> 1);
    r.h = ldq128<SH>(blk);
    r.v0 = ldq128<SH>(qs);
    r.v1 = ldq128<SH>(qs + 16);
}
#else  // Q6_K: see q6k_unit
struct Q8Raw {
    u32 lw[9], hw[9];  // aligned words holding the low and high bits' 32 bytes
    u32 sh, d, scw;
};
template <bool SH = false>
__device__ __forceinline__ void unit_q8_load(const u8* row, int u, Q8Raw& r) {
    const u8* b = row + (u >> 3) * 210;
    const int s = u & 7, j = s >> 2, l = s & 3;
    const u32 mis = (u32)(size_t)b & 3u;  // ql and qh lie a multiple of 32 bytes from b
    const u8* ql = b + 64 * j + 32 * (l & 1) - mis;
    const u8* qh = b + 128 + 32 * j - mis;
    r.sh = (mis & 2u) * 8u;
#pragma unroll
    for (int i = 0; i < 9; i++) r.lw[i] = ldq32<SH>(ql + 4 * i), r.hw[i] = ldq32<SH>(qh + 4 * i);
    r.d = ldq16<SH>(b + 208);
    r.scw = ldq16<SH>(b + 192 + 2 * s);
}
#endif

__device__ __forceinline__ void unit_q8_decode(const Q8Raw& r, int u, u32* q8, float* a0, float* a1, float* b) {
#if defined(WT_Q8_0) || defined(WT_Q4_0)
    const float d = f16_to_f32((u16)(__funnelshift_rc(r.v[0], r.v[1], r.sh) & 0xffffu));
#if defined(WT_Q8_0)
#pragma unroll
    for (int i = 0; i < 8; i++) q8[i] = __funnelshift_rc(r.v[i], r.v[i + 1], 16u + r.sh);
    *b = 0.0f;
#else
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const u32 w = __funnelshift_rc(r.v[i], r.v[i + 1], 16u + r.sh);
        q8[i] = w & 0x0F0F0F0Fu;             // weights 4i..4i+3: low nibbles
        q8[4 + i] = (w >> 4) & 0x0F0F0F0Fu;  // weights 16+4i..: high nibbles
    }
    *b = -8.0f * d;
#endif
    *a0 = *a1 = d;
#elif defined(WT_Q4_K)
    const int s = u & 7;
    const float d = f16_to_f32((u16)(r.h.x & 0xffffu));
    const float dmin = f16_to_f32((u16)(r.h.x >> 16));
    u32 sc, m;
    q4k_scale_min(r.h, s, &sc, &m);
    const int sh = 4 * (s & 1);
    const u32 w[8] = {r.v0.x, r.v0.y, r.v0.z, r.v0.w, r.v1.x, r.v1.y, r.v1.z, r.v1.w};
#pragma unroll
    for (int i = 0; i < 8; i++) q8[i] = (w[i] >> sh) & 0x0F0F0F0Fu;
    *a0 = *a1 = MUL(d, (float)sc);
    *b = -MUL(dmin, (float)m);
#else  // Q6_K
    const int l = (u & 7) & 3;
    const int shl = 4 * (l >> 1), shh = 2 * l;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const u32 lo = __funnelshift_r(r.lw[i], r.lw[i + 1], r.sh), hi = __funnelshift_r(r.hw[i], r.hw[i + 1], r.sh);
        q8[i] = __vsub4(((lo >> shl) & 0x0F0F0F0Fu) | (((hi >> shh) & 0x03030303u) << 4), 0x20202020u);  // q - 32
    }
    const float d = f16_to_f32((u16)r.d);
    *a0 = MUL(d, (float)(i8)(r.scw & 0xffu));
    *a1 = MUL(d, (float)(i8)(r.scw >> 8));
    *b = 0.0f;
#endif
}

__device__ __forceinline__ void unit_q8(const u8* row, int u, u32* q8, float* a0, float* a1, float* b) {
    Q8Raw r;
    unit_q8_load(row, u, r);
    unit_q8_decode(r, u, q8, a0, a1, b);
}

// f16x2 arithmetic (PTX; NVRTC here has no cuda_fp16.h).
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
    u32 r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Four codes (the bytes of w, consecutive weights) as two f16x2 pairs: ((byte - bias) * f) or, with an
// offset, ((byte - bias) * f + o). The bytes 0x64 c are the f16 1024 + c for a byte c below 1024, so one
// byte permute makes a pair and one subtraction (`sub`: 1024 + bias in both halves) leaves the code exactly.
__device__ __forceinline__ void frag_halves(u32 w, u32 sub, u32 f, u32* lo, u32* hi) {
    *lo = hmul2(hsub2(__byte_perm(w, 0x64646464u, 0x4140), sub), f);
    *hi = hmul2(hsub2(__byte_perm(w, 0x64646464u, 0x4342), sub), f);
}
__device__ __forceinline__ void frag_halves_off(u32 w, u32 f, u32 o, u32* lo, u32* hi) {
    *lo = hfma2(hsub2(__byte_perm(w, 0x64646464u, 0x4140), 0x64006400u), f, o);
    *hi = hfma2(hsub2(__byte_perm(w, 0x64646464u, 0x4342), 0x64006400u), f, o);
}
// The same in bf16 (7 mantissa bits cannot hold 1024 + c): each weight a * (byte - bias) + b in f32, rounded
// once.
__device__ __forceinline__ void frag_bf16(u32 w, float bias, float a, float b, u32* lo, u32* hi) {
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = fmaf(a, magic_byte(w, k) - (MAGIC + bias), b);
    *lo = pack_bf16x2(v[0], v[1]);
    *hi = pack_bf16x2(v[2], v[3]);
}

// Unit u's 32 weights, decoded from its raw words, as 16 half-precision pairs in k order (weights.cu's
// dequant_rows; dqmm.cu's frag_unit reads the same values a lane's share at a time).
//
// f16: two codes at a time (frag_halves: the bias is 128 for signed codes flipped to c + 128, 8 for Q4_0's
// offset); one multiply by the factor (Q8_0's and Q4_0's d: the f32 path's single rounding) or fused
// multiply-add with the offset (Q4_K), in f16, gives the weight. The K-quants' factors (d times a sub-block
// scale) are rounded to f16 first: at most one more f16 step on a weight. bf16: frag_bf16.
template <bool BF>
__device__ __forceinline__ void dq_unit_halves(const Q8Raw& r, int u, u32* h) {
    u32 q[8];
    float a0, a1, b;
    unit_q8_decode(r, u, q, &a0, &a1, &b);
#if defined(WT_Q8_0) || defined(WT_Q6_K)
    const u32 flip = 0x80808080u;  // signed codes: s + 128 is the byte the tricks read
    const float bias = 128.0f;
    const u32 sub = 0x64806480u;  // 1152
#elif defined(WT_Q4_0)
    const u32 flip = 0u;
    const float bias = 0.0f;
    const u32 sub = 0x64086408u;  // 1032: the code less Q4_0's offset 8 (b = -8 d is folded in)
#else  // Q4_K: unsigned codes and an offset (frag_halves_off subtracts 1024)
    const u32 flip = 0u;
    const float bias = 0.0f;
#endif
    if (!BF) {
        const u32 f0 = pack_f16x2(a0, a0), f1 = pack_f16x2(a1, a1);
#if defined(WT_Q4_K)
        const u32 bh = pack_f16x2(b, b);
#endif
#pragma unroll
        for (int i = 0; i < 8; i++) {
#if defined(WT_Q4_K)
            frag_halves_off(q[i] ^ flip, i < 4 ? f0 : f1, bh, &h[2 * i], &h[2 * i + 1]);
#else
            frag_halves(q[i] ^ flip, sub, i < 4 ? f0 : f1, &h[2 * i], &h[2 * i + 1]);
#endif
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) frag_bf16(q[i] ^ flip, bias, i < 4 ? a0 : a1, b, &h[2 * i], &h[2 * i + 1]);
    }
}
#endif
