// Device helpers both kernel modules use (weights.cu, and ops.cu with attn_decode.cu and flash.cu, are separate
// translation units; NVRTC has no include path here, so the host prepends this file, after quant.cuh, to each).

// 16 bytes from global to shared memory without passing through registers (sm_80+); `bytes` below 16
// zero-fills the rest, so 0 writes zeros. The copies a thread issued complete at cp_async_wait_all.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
#else  // never launched there (the host checks the compute capability)
__device__ __forceinline__ void cp_async16(void*, const void*, int) { __trap(); }
__device__ __forceinline__ void cp_async_wait_all() {}
#endif

// Tensor-core helpers (sm_80+; flash.cu and weights.cu's dqmm). Fragment layouts (PTX ISA, mma.m16n8k16
// with .row.col): lane = 4g + c. A (16x16, row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..),
// a3 = (g+8, 2c+8..). B (16x8, "col"): b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g). C (16x8): c0,c1 = (g,
// 2c..2c+1), c2,c3 = (g+8, 2c..). ldmatrix hands lane l the pair (row l/4, cols 2(l%4)..) of each 8x8 matrix
// (.trans: the transposed pair), matrix i's row addresses coming from lanes 8i..8i+7.
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// Two 8x8 matrices, transposed (addresses from lanes 0..15).
__device__ __forceinline__ void ldsm_x2_t(u32 addr, u32& r0, u32& r1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r0), "=r"(r1) : "r"(addr));
}

// Not volatile: an mma's outputs depend on its register inputs only, so the compiler may schedule it like
// arithmetic and move shared-memory loads across it (dqmm's decoder loads between its mmas).
__device__ __forceinline__ void mma16816(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The same with bf16 operands (same fragment layouts).
__device__ __forceinline__ void mma16816_bf16(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two floats as an f16x2 (or bf16x2) word (lo in the low half).
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// What pack_f16x2(lo, hi) rounded off, as another f16x2 word: the two words add up to (lo, hi) within about
// 2^-22 relative, so an f32 operand split in two takes part in f16 tensor-core products (exact, with f32 sums)
// at nearly f32 precision.
__device__ __forceinline__ u32 f16x2_remainder(float lo, float hi, u32 packed) {
    float rl, rh;
    asm("{.reg .f16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h;\n}"
        : "=f"(rl), "=f"(rh)
        : "r"(packed));
    return pack_f16x2(lo - rl, hi - rh);
}

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
// Activations for a tensor-core GEMM, in the half format it takes: f16 (to_bf16 0) or bf16 (1), rounded to
// nearest; one value, or a pair as one word (lo in the low half).
__device__ __forceinline__ u16 f32_to_half_bits(float f, int to_bf16) {
    return to_bf16 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
}
__device__ __forceinline__ u32 half2_bits(float lo, float hi, int to_bf16) {
    return to_bf16 ? pack_bf16x2(lo, hi) : pack_f16x2(lo, hi);
}

// A gated MLP's activation of the gate value x: SiLU (act 0) or GELU with the tanh approximation (act 1),
// written as x / (1 + exp(-2z)) (the same value as 0.5 x (1 + tanh z), as the CPU computes it).
__device__ __forceinline__ float gate_act(float x, int act) {
    if (act == 0) return x / (1.0f + expf(-x));
    const float z = 0.7978845608f * (x + 0.044715f * x * x * x);  // sqrt(2 / pi) (x + 0.044715 x^3)
    return x / (1.0f + expf(-2.0f * z));
}

// Programmatic dependent launch (sm_90 and later; the host launches every kernel with it there): a kernel may
// be started while the one before it in the stream is still finishing. So every kernel begins with
// PDL_PROLOGUE, before it reads or writes anything an earlier kernel touches: it waits until the previous
// kernel has completed and its writes are visible (so completion is transitive down the stream, every kernel
// must wait, even one that returns early), then lets the next kernel launch. A kernel started early thus only
// overlaps its launch and what it does before the wait (the matrix-vector kernels prefetch their weight rows
// into L2) with the previous kernel's last blocks. Without the launch attribute the wait returns at once.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_PROLOGUE()                                            \
    do {                                                          \
        asm volatile("griddepcontrol.wait;" ::: "memory");        \
        asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); \
    } while (0)
#else
#define PDL_PROLOGUE() \
    do {               \
    } while (0)
#endif

// Asks L2 to fetch [p, p + bytes) (the block's threads share the 128-byte lines): weight rows a kernel will
// stream, requested before PDL_PROLOGUE so the fetch overlaps the previous kernel's end.
__device__ __forceinline__ void prefetch_l2(const void* p, size_t bytes) {
    const char* c = (const char*)p;
    for (size_t off = (size_t)threadIdx.x * 128; off < bytes; off += (size_t)blockDim.x * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}
