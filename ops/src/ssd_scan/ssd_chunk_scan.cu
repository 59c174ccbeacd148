// SSD prefill, chunked dual form: per chunk a_t = softplus(dt_t)·A, Z = Σ_s e^{a_{s+1..L}}Δ_s x_s⊗B_s, S_c = e^{a_{1..L}}S_{c-1} + Z,
// y_t = Σ_{s≤t} (C_t·B_s) e^{a_{s+1..t}} Δ_s x_s + e^{a_{1..t}} S_{c-1}·C_t. x, y [B,S,H,P]; dt [B,S,H]; B, C [B,S,H,N]; S [B,H,P,N].
// Launch: chunk_state (grid B·H·chunks × P/64·N/64), state_pass (grid B·H·⌈PN/256⌉), chunk_out (grid B·H·chunks × P/64);
// 256 threads each; workspace: per-chunk states [B,H,chunks,P,N] then chunk log-decays [B,H,chunks].
#define SSD_CH 64
#define SSD_TILE 64
#define SSD_KT 32
#define SSD_THREADS 256

template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

// Z[p, n] of chunk c, with weights w_s = Δ_s·exp(a_{s+1} + … + a_last); block (0 of y) also stores the chunk's log-decay.
template <typename T>
__device__ void ssd_chunk_state(const T *x, const T *dt, const float *A, const T *Bm, float *ws, const int seq,
                                const int heads, const int P, const int N, const int L, const int chunks) {
    __shared__ float xs[SSD_KT][SSD_TILE + 1];
    __shared__ float bs[SSD_KT][SSD_TILE + 1];
    __shared__ float w[SSD_CH], a[SSD_CH];
    const long bh = blockIdx.x / chunks;
    const int c = blockIdx.x % chunks, h = bh % heads;
    const long b = bh / heads;
    const int t0 = c * L, lc = min(L, seq - t0);
    const int ntiles = (N + SSD_TILE - 1) / SSD_TILE;
    const int p0 = (blockIdx.y / ntiles) * SSD_TILE, n0 = (blockIdx.y % ntiles) * SSD_TILE;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const long row0 = (b * seq + t0) * heads + h;
    if (tid < lc) {
        const float d = softplus_f32(ld(dt, row0 + (long)tid * heads));
        w[tid] = d;
        a[tid] = d * A[h];
    }
    __syncthreads();
    if (tid < lc) {
        float acc = 0.0f;
        for (int s = lc - 1; s > tid; --s) acc += a[s];
        w[tid] *= expf(acc);
        if (tid == 0 && blockIdx.y == 0) ws[(long)gridDim.x * P * N + blockIdx.x] = acc + a[0];
    }
    __syncthreads();
    float z[4][4] = {};
    for (int s0 = 0; s0 < lc; s0 += SSD_KT) {
        for (int i = tid; i < SSD_KT * SSD_TILE; i += SSD_THREADS) {
            const int k = i / SSD_TILE, j = i % SSD_TILE, s = s0 + k;
            const long tok = row0 + (long)s * heads;
            xs[k][j] = (s < lc && p0 + j < P) ? ld(x, tok * P + p0 + j) : 0.0f;
            bs[k][j] = (s < lc && n0 + j < N) ? w[s] * ld(Bm, tok * N + n0 + j) : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < SSD_KT; ++k) {
            float xr[4], br[4];
            for (int i = 0; i < 4; ++i) xr[i] = xs[k][ty + 16 * i];
            for (int j = 0; j < 4; ++j) br[j] = bs[k][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) z[i][j] += xr[i] * br[j];
        }
        __syncthreads();
    }
    float *out = ws + (long)blockIdx.x * P * N;
    for (int i = 0; i < 4; ++i) {
        const int p = p0 + ty + 16 * i;
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (p < P && n < N) out[(long)p * N + n] = z[i][j];
        }
    }
}

// In place over the workspace: slot c gets the state before chunk c (Z_c is read first); `state` gets the final state.
__device__ void ssd_state_pass(float *state, float *ws, const long bhs, const int PN, const int chunks) {
    const int etiles = (PN + SSD_THREADS - 1) / SSD_THREADS;
    const long bh = blockIdx.x / etiles;
    const int e = (blockIdx.x % etiles) * SSD_THREADS + threadIdx.x;
    if (e >= PN) return;
    const float *logdecay = ws + bhs * chunks * PN + bh * chunks;
    float *slot = ws + bh * chunks * PN + e;
    float s = state[bh * PN + e], z = slot[0];
    for (int c = 0; c < chunks; ++c) {
        const float next = c + 1 < chunks ? slot[(long)(c + 1) * PN] : 0.0f;
        slot[(long)c * PN] = s;
        s = expf(logdecay[c]) * s + z;
        z = next;
    }
    state[bh * PN + e] = s;
}

// y of chunk c for 64 head-dim columns, as one product [M | diag(e^{cum})·C]·[X ; S_{c-1}ᵀ] with
// M[t, s] = (C_t·B_s)·exp(a_{s+1} + … + a_t)·Δ_s for s ≤ t, else 0.
template <typename T>
__device__ void ssd_chunk_out(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm, const float *ws, T *y,
                              const int seq, const int heads, const int P, const int N, const int L, const int chunks) {
    __shared__ float m[SSD_CH][SSD_CH + 1];
    __shared__ float cs[SSD_CH][SSD_KT + 1];
    __shared__ float r[SSD_CH * (SSD_KT + 1)];
    __shared__ float delta[SSD_CH], a[SSD_CH], cexp[SSD_CH];
    const long bh = blockIdx.x / chunks;
    const int c = blockIdx.x % chunks, h = bh % heads;
    const long b = bh / heads;
    const int t0 = c * L, lc = min(L, seq - t0);
    const int p0 = blockIdx.y * SSD_TILE;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const long row0 = (b * seq + t0) * heads + h;
    if (tid < SSD_CH) {
        const float d = tid < lc ? softplus_f32(ld(dt, row0 + (long)tid * heads)) : 0.0f;
        delta[tid] = d;
        a[tid] = d * A[h];
    }
    __syncthreads();
    if (tid < SSD_CH) {
        float acc = 0.0f;
        if (tid < lc) {
            for (int s = tid; s >= 0; --s) {
                m[tid][s] = expf(acc) * delta[s];
                acc += a[s];
            }
        }
        cexp[tid] = tid < lc ? expf(acc) : 0.0f;
    }
    float g[4][4] = {};
    float(*bs)[SSD_KT + 1] = reinterpret_cast<float(*)[SSD_KT + 1]>(r);
    for (int n0 = 0; n0 < N; n0 += SSD_KT) {
        __syncthreads();
        for (int i = tid; i < SSD_CH * SSD_KT; i += SSD_THREADS) {
            const int t = i / SSD_KT, k = i % SSD_KT;
            const bool ok = t < lc && n0 + k < N;
            const long off = (row0 + (long)t * heads) * N + n0 + k;
            cs[t][k] = ok ? ld(Cm, off) : 0.0f;
            bs[t][k] = ok ? ld(Bm, off) : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < SSD_KT; ++k) {
            float cr[4], br[4];
            for (int i = 0; i < 4; ++i) cr[i] = cs[ty + 16 * i][k];
            for (int j = 0; j < 4; ++j) br[j] = bs[tx + 16 * j][k];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) g[i][j] += cr[i] * br[j];
        }
    }
    for (int i = 0; i < 4; ++i) {
        const int t = ty + 16 * i;
        for (int j = 0; j < 4; ++j) {
            const int s = tx + 16 * j;
            m[t][s] = (t < lc && s <= t) ? m[t][s] * g[i][j] : 0.0f;
        }
    }
    float acc[4][4] = {};
    float(*rt)[SSD_TILE + 1] = reinterpret_cast<float(*)[SSD_TILE + 1]>(r);
    for (int s0 = 0; s0 < lc; s0 += SSD_KT) {
        __syncthreads();
        for (int i = tid; i < SSD_KT * SSD_TILE; i += SSD_THREADS) {
            const int k = i / SSD_TILE, j = i % SSD_TILE, s = s0 + k;
            rt[k][j] = (s < lc && p0 + j < P) ? ld(x, (row0 + (long)s * heads) * P + p0 + j) : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < SSD_KT; ++k) {
            float mr[4], xr[4];
            for (int i = 0; i < 4; ++i) mr[i] = m[ty + 16 * i][s0 + k];
            for (int j = 0; j < 4; ++j) xr[j] = rt[k][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += mr[i] * xr[j];
        }
    }
    const float *prev = ws + (long)blockIdx.x * P * N;
    for (int n0 = 0; n0 < N; n0 += SSD_KT) {
        __syncthreads();
        for (int i = tid; i < SSD_CH * SSD_KT; i += SSD_THREADS) {
            const int t = i / SSD_KT, k = i % SSD_KT;
            cs[t][k] = (t < lc && n0 + k < N) ? cexp[t] * ld(Cm, (row0 + (long)t * heads) * N + n0 + k) : 0.0f;
        }
        for (int i = tid; i < SSD_KT * SSD_TILE; i += SSD_THREADS) {
            const int j = i / SSD_KT, k = i % SSD_KT;
            rt[k][j] = (p0 + j < P && n0 + k < N) ? prev[(long)(p0 + j) * N + n0 + k] : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < SSD_KT; ++k) {
            float cr[4], sr[4];
            for (int i = 0; i < 4; ++i) cr[i] = cs[ty + 16 * i][k];
            for (int j = 0; j < 4; ++j) sr[j] = rt[k][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += cr[i] * sr[j];
        }
    }
    for (int i = 0; i < 4; ++i) {
        const int t = ty + 16 * i;
        for (int j = 0; j < 4; ++j) {
            const int p = p0 + tx + 16 * j;
            if (t < lc && p < P) st(y, (row0 + (long)t * heads) * P + p, acc[i][j]);
        }
    }
}

extern "C" __global__ void ssd_chunk_state_f32(const float *x, const float *dt, const float *A, const float *Bm, float *ws,
                                               const int seq, const int heads, const int P, const int N, const int L,
                                               const int chunks) {
    ssd_chunk_state(x, dt, A, Bm, ws, seq, heads, P, N, L, chunks);
}

extern "C" __global__ void ssd_chunk_state_bf16(const bf16_t *x, const bf16_t *dt, const float *A, const bf16_t *Bm,
                                                float *ws, const int seq, const int heads, const int P, const int N,
                                                const int L, const int chunks) {
    ssd_chunk_state(x, dt, A, Bm, ws, seq, heads, P, N, L, chunks);
}

extern "C" __global__ void ssd_state_pass_f32(float *state, float *ws, const long bhs, const int PN, const int chunks) {
    ssd_state_pass(state, ws, bhs, PN, chunks);
}

extern "C" __global__ void ssd_chunk_out_f32(const float *x, const float *dt, const float *A, const float *Bm,
                                             const float *Cm, const float *ws, float *y, const int seq, const int heads,
                                             const int P, const int N, const int L, const int chunks) {
    ssd_chunk_out(x, dt, A, Bm, Cm, ws, y, seq, heads, P, N, L, chunks);
}

extern "C" __global__ void ssd_chunk_out_bf16(const bf16_t *x, const bf16_t *dt, const float *A, const bf16_t *Bm,
                                              const bf16_t *Cm, const float *ws, bf16_t *y, const int seq,
                                              const int heads, const int P, const int N, const int L, const int chunks) {
    ssd_chunk_out(x, dt, A, Bm, Cm, ws, y, seq, heads, P, N, L, chunks);
}
