// deq_probe: the smallest kernel around wt_deq32, for scripts/nvrtc_check.py to compile quant.cuh (prepended
// to this text, as the Rust side prepends headers) under NVRTC for every weight type, and to show in its PTX
// that the 32 decoded values stay in registers. Thread t decodes unit t of a single row into out[32t ..].

extern "C" __global__ void deq_probe(const u8* w, float* out, int units) {
    int u = blockIdx.x * blockDim.x + threadIdx.x;
    if (u >= units) return;
    float v[32];
    wt_deq32(w, u, v);
    UNROLL for (int i = 0; i < 32; i++) out[32 * u + i] = v[i];
}
