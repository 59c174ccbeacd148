// SSD decode step: Δ = softplus(dt), S[p,n] ← S[p,n]·exp(Δ·A) + (Δ·x[p])·B[n] in place, y[p] = Σ_n S[p,n]·C[n].
// Layout: x, y [B,H,P] (one token); dt [B,H]; A [H] f32; B, C [B,H,N]; S [B,H,P,N] f32.
// Launch: grid B·H·⌈P/8⌉, 256 threads; warp w owns row p = 8·(block % ⌈P/8⌉) + w, lanes stride over n.
#define SSD_STEP_ROWS 8

template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

template <typename T>
__device__ void ssd_step(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm, float *state, T *y,
                         const int heads, const int P, const int N) {
    const int tiles = (P + SSD_STEP_ROWS - 1) / SSD_STEP_ROWS;
    const long bh = blockIdx.x / tiles;
    const int p = (blockIdx.x % tiles) * SSD_STEP_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (p >= P) return;
    const float delta = softplus_f32(ld(dt, bh));
    const float decay = expf(delta * A[bh % heads]);
    const float dx = delta * ld(x, bh * P + p);
    float *row = state + (bh * P + p) * N;
    float acc = 0.0f;
    for (int n = lane; n < N; n += 32) {
        const float s = row[n] * decay + dx * ld(Bm, bh * N + n);
        row[n] = s;
        acc += s * ld(Cm, bh * N + n);
    }
    acc = warp_sum(acc);
    if (lane == 0) st(y, bh * P + p, acc);
}

extern "C" __global__ void ssd_step_f32(const float *x, const float *dt, const float *A, const float *Bm,
                                        const float *Cm, float *state, float *y, const int heads, const int P,
                                        const int N) {
    ssd_step(x, dt, A, Bm, Cm, state, y, heads, P, N);
}

extern "C" __global__ void ssd_step_bf16(const bf16_t *x, const bf16_t *dt, const float *A, const bf16_t *Bm,
                                         const bf16_t *Cm, float *state, bf16_t *y, const int heads, const int P,
                                         const int N) {
    ssd_step(x, dt, A, Bm, Cm, state, y, heads, P, N);
}
