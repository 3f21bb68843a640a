// Prefill attention on the tensor cores (flash-attention style), for sequences with many query rows in a
// step. Block (tile, q head): 64 consecutive query rows of one sequence, 4 warps of 16 rows each. For each
// tile of 64 keys (gathered from the paged f16 cache through the sequence's block table into shared memory),
// a warp computes S = Q·Kᵀ with mma.m16n8k16 (f16 in, f32 accumulate), masks it (causal, sliding window),
// updates its rows' running max and sum (online softmax), and adds P·V into its f32 output fragment. Nothing
// of size rows × keys ever reaches global memory. Needs sm_80+ and HEAD_DIM % 16 == 0.
// The fragment layouts and the ldmatrix/mma helpers are in common.cuh.

#define FA_ROWS 64
#define FA_KEYS 64
#define FA_STRIDE (HDIM + 8)  // halves per shared row: 16-byte aligned rows, no bank conflicts for ldmatrix

// tiles[2 * i]: the tile's first batch row; [2 * i + 1]: its rows (<= 64). Rows of a tile are consecutive rows
// of one sequence, so their positions are consecutive too.
extern "C" __global__ void __launch_bounds__(128)
    flash_prefill(const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
                  float* __restrict__ out, const int* __restrict__ tiles, const int* __restrict__ positions,
                  const int* __restrict__ row_seq, const int* __restrict__ table_off,
                  const int* __restrict__ tables, int n_heads, int n_kv, int block_size, int window, float scale,
                  float softcap, u16* __restrict__ xh, int xh_bf16) {
    PDL_PROLOGUE();
#if __CUDA_ARCH__ >= 800
    extern __shared__ __align__(16) u16 smem[];
    u16* qs = smem;                              // [FA_ROWS][FA_STRIDE]
    u16* ks = qs + FA_ROWS * FA_STRIDE;          // [FA_KEYS][FA_STRIDE]
    u16* vs = ks + FA_KEYS * FA_STRIDE;          // [FA_KEYS][FA_STRIDE]
    __shared__ long long slot_s[FA_KEYS];
    const int row0 = tiles[2 * blockIdx.x], rows = tiles[2 * blockIdx.x + 1];
    const int h = blockIdx.y, kh = h / (n_heads / n_kv);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int kv_dim = n_kv * HDIM, q_dim = n_heads * HDIM;
    const int p0 = positions[row0];
    const int p_last = p0 + rows - 1;
    const int* table = tables + table_off[row_seq[row0]];

    // Q tile, as f16 (rows past the tile's end are zeros and never written out).
    for (int i = tid; i < FA_ROWS * (HDIM / 2); i += 128) {
        const int r = i / (HDIM / 2), d = 2 * (i % (HDIM / 2));
        float2 v = make_float2(0.0f, 0.0f);
        if (r < rows) v = *(const float2*)(q + (size_t)(row0 + r) * q_dim + h * HDIM + d);
        *(u32*)(qs + r * FA_STRIDE + d) = pack_f16x2(v.x, v.y);
    }
    __syncthreads();
    // This warp's Q fragments, for every 16-wide step of the head.
    u32 qa[HDIM / 16][4];
    {
        const int mi = lane >> 3, r = lane & 7;
        const int row = warp * 16 + (mi & 1) * 8 + r;
#pragma unroll
        for (int kk = 0; kk < HDIM / 16; kk++) {
            const int col = kk * 16 + (mi >> 1) * 8;
            ldsm_x4(smem_addr(qs + row * FA_STRIDE + col), qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3]);
        }
    }
    float o[HDIM / 8][4];
#pragma unroll
    for (int i = 0; i < HDIM / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_r[2] = {NEG_INF, NEG_INF}, l_r[2] = {0.0f, 0.0f};
    // This thread's two rows' positions.
    const int qp[2] = {p0 + warp * 16 + g, p0 + warp * 16 + g + 8};

    const int lo = window > 0 ? max(0, p0 - window + 1) : 0;
    for (int k0 = lo; k0 <= p_last; k0 += FA_KEYS) {
        const int cnt = min(FA_KEYS, p_last + 1 - k0);
        __syncthreads();  // the previous tile's K and V are no longer read
        for (int i = tid; i < FA_KEYS; i += 128) {
            const int p = k0 + i;
            slot_s[i] = i < cnt ? (long long)table[p / block_size] * block_size + p % block_size : -1;
        }
        __syncthreads();
        // K and V tiles: HDIM / 8 16-byte chunks per key.
        for (int i = tid; i < FA_KEYS * (HDIM / 8); i += 128) {
            const int key = i / (HDIM / 8), ch = i % (HDIM / 8);
            uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
            const long long slot = slot_s[key];
            if (slot >= 0) {
                kv4 = __ldg((const uint4*)(kc + slot * kv_dim + kh * HDIM) + ch);
                vv4 = __ldg((const uint4*)(vc + slot * kv_dim + kh * HDIM) + ch);
            }
            *(uint4*)(ks + key * FA_STRIDE + ch * 8) = kv4;
            *(uint4*)(vs + key * FA_STRIDE + ch * 8) = vv4;
        }
        __syncthreads();
        // S = Q·Kᵀ: 16 rows x 64 keys per warp, 8 n-tiles of 8 keys.
        float sacc[FA_KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < FA_KEYS / 8; nt++) sacc[nt][0] = sacc[nt][1] = sacc[nt][2] = sacc[nt][3] = 0.0f;
        {
            const int mi = lane >> 3, r = lane & 7;
#pragma unroll
            for (int kk = 0; kk < HDIM / 16; kk++) {
#pragma unroll
                for (int nt = 0; nt < FA_KEYS / 8; nt += 2) {
                    const int key = nt * 8 + (mi >> 1) * 8 + r;
                    const int col = kk * 16 + (mi & 1) * 8;
                    u32 b0, b1, b2, b3;
                    ldsm_x4(smem_addr(ks + key * FA_STRIDE + col), b0, b1, b2, b3);
                    mma16816(sacc[nt], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b0, b1);
                    mma16816(sacc[nt + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b2, b3);
                }
            }
        }
        // Scale, soft-cap, mask; the rows' new maxima.
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < FA_KEYS / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + nt * 8 + 2 * c + (e & 1);
                const int rr = e >> 1;
                float v = sacc[nt][e] * scale;
                if (softcap > 0.0f) v = softcap * tanhf(v / softcap);
                const bool masked = key > qp[rr] || (window > 0 && key <= qp[rr] - window) || key >= k0 + cnt;
                v = masked ? NEG_INF : v;
                sacc[nt][e] = v;
                mx[rr] = fmaxf(mx[rr], v);
            }
        }
        float alpha[2];
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
            mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
            const float m_new = fmaxf(m_r[rr], mx[rr]);
            // A row with every key so far masked keeps m = -inf; its exponentials are all zero.
            alpha[rr] = m_new == NEG_INF ? 1.0f : expf(m_r[rr] - m_new);
            m_r[rr] = m_new;
            l_r[rr] *= alpha[rr];
        }
#pragma unroll
        for (int i = 0; i < HDIM / 8; i++) {
            o[i][0] *= alpha[0];
            o[i][1] *= alpha[0];
            o[i][2] *= alpha[1];
            o[i][3] *= alpha[1];
        }
        // P = exp(S - m), kept as f16 A fragments for P·V (two n-tiles of S make one 16-key A fragment).
        u32 pa[FA_KEYS / 16][4];
#pragma unroll
        for (int nt = 0; nt < FA_KEYS / 8; nt++) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float m = m_r[e >> 1];
                p[e] = m == NEG_INF ? 0.0f : expf(sacc[nt][e] - m);
                l_r[e >> 1] += p[e];
            }
            pa[nt / 2][(nt & 1) * 2] = pack_f16x2(p[0], p[1]);
            pa[nt / 2][(nt & 1) * 2 + 1] = pack_f16x2(p[2], p[3]);
        }
        // O += P·V: V's 8x8 blocks transposed by ldmatrix into B fragments.
        {
            const int mi = lane >> 3, r = lane & 7;
#pragma unroll
            for (int kk = 0; kk < FA_KEYS / 16; kk++) {
#pragma unroll
                for (int nd = 0; nd < HDIM / 8; nd += 2) {
                    const int key = kk * 16 + (mi & 1) * 8 + r;
                    const int col = (nd + (mi >> 1)) * 8;
                    u32 b0, b1, b2, b3;
                    ldsm_x4_t(smem_addr(vs + key * FA_STRIDE + col), b0, b1, b2, b3);
                    mma16816(o[nd], pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], b0, b1);
                    mma16816(o[nd + 1], pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], b2, b3);
                }
            }
        }
    }
    // The rows' sums are spread over the four lanes of each row group.
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        l_r[rr] += __shfl_xor_sync(0xffffffffu, l_r[rr], 1);
        l_r[rr] += __shfl_xor_sync(0xffffffffu, l_r[rr], 2);
    }
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int r = warp * 16 + g + 8 * rr;
        if (r >= rows) continue;
        const float inv = l_r[rr] > 0.0f ? 1.0f / l_r[rr] : 0.0f;
        const size_t at = (size_t)(row0 + r) * q_dim + h * HDIM;
#pragma unroll
        for (int nd = 0; nd < HDIM / 8; nd++) {
            const float a = o[nd][2 * rr] * inv, b = o[nd][2 * rr + 1] * inv;
            *(float2*)(out + at + nd * 8 + 2 * c) = make_float2(a, b);
            // The half-precision copy for the output projection's GEMM (when the host asks: every row's
            // attention is here).
            if (xh) *(u32*)(xh + at + nd * 8 + 2 * c) = half2_bits(a, b, xh_bf16);
        }
    }
#endif  // older GPUs never launch it (the host checks the architecture)
}
