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
