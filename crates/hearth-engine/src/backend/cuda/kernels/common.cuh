// Device helpers both kernel modules use (weights.cu and ops.cu are separate translation units; NVRTC has no
// include path here, so the host prepends this file, after quant.cuh, to each).

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
