// SSD decode step: Δ = softplus(dt), S[p,n] ← S[p,n]·exp(Δ·A) + (Δ·x[p])·B[n] in place, y[p] = Σ_n S[p,n]·C[n].
// Layout: x, y [B,H,P] (one token); dt [B,H]; A [H] f32; B, C [B,H,N]; S [B,H,P,N] f32. 256 threads per block.
// ssd_step_vec<G> (N % 4 == 0): grid B·H·⌈P/(K·256/R)⌉, R lanes per row, each with G float4 column groups of K rows.
// ssd_step (any N): grid B·H·⌈P/8⌉; warp w owns row p = 8·(block % ⌈P/8⌉) + w, lanes stride over n.
#define SSD_STEP_ROWS 8

template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

#define SSD_STEP_THREADS 256
#define SSD_STEP_MAX_K 4

template <typename T> __device__ __forceinline__ float4 ld4(const T *p, long i);
template <> __device__ __forceinline__ float4 ld4<float>(const float *p, long i) {
    return *reinterpret_cast<const float4 *>(p + i);
}
template <> __device__ __forceinline__ float4 ld4<bf16_t>(const bf16_t *p, long i) {
    const uint2 u = *reinterpret_cast<const uint2 *>(p + i);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}

__device__ __forceinline__ float4 step4(float4 s, float decay, float dx, float4 b) {
    return make_float4(s.x * decay + dx * b.x, s.y * decay + dx * b.y, s.z * decay + dx * b.z, s.w * decay + dx * b.w);
}

// Lane l of a row owns the 4-column groups l, l + R (< N/4); every state load of a thread is issued before its first
// update.
template <typename T, int G>
__device__ void ssd_step_vec(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm, float *state, T *y,
                             const int heads, const int P, const int N, const int R, const int K) {
    const int V = N / 4, rows_pass = SSD_STEP_THREADS / R, rows_block = rows_pass * K;
    const int tiles = (P + rows_block - 1) / rows_block;
    const long bh = blockIdx.x / tiles;
    const int lane = threadIdx.x & (R - 1);
    const int p0 = (blockIdx.x % tiles) * rows_block + threadIdx.x / R;
    float4 b[G], c[G], s[SSD_STEP_MAX_K][G];
    float xv[SSD_STEP_MAX_K];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const int j = lane + g * R;
        if (j < V) {
            b[g] = ld4(Bm, bh * N + 4 * j);
            c[g] = ld4(Cm, bh * N + 4 * j);
        }
    }
#pragma unroll
    for (int k = 0; k < SSD_STEP_MAX_K; ++k) {
        const int p = p0 + k * rows_pass;
        if (k < K && p < P) {
            xv[k] = ld(x, bh * P + p);
            const float4 *row = reinterpret_cast<const float4 *>(state + (bh * P + p) * N);
#pragma unroll
            for (int g = 0; g < G; ++g)
                if (lane + g * R < V) s[k][g] = row[lane + g * R];
        }
    }
    const float delta = softplus_f32(ld(dt, bh));
    const float decay = expf(delta * A[bh % heads]);
#pragma unroll
    for (int k = 0; k < SSD_STEP_MAX_K; ++k) {
        if (k >= K) break;
        const int p = p0 + k * rows_pass;
        float acc = 0.0f;
        if (p < P) {
            const float dx = delta * xv[k];
            float4 *row = reinterpret_cast<float4 *>(state + (bh * P + p) * N);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int j = lane + g * R;
                if (j < V) {
                    const float4 v = step4(s[k][g], decay, dx, b[g]);
                    row[j] = v;
                    acc += v.x * c[g].x + v.y * c[g].y + v.z * c[g].z + v.w * c[g].w;
                }
            }
        }
        for (int o = R / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0 && p < P) st(y, bh * P + p, acc);
    }
}

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

#define SSD_STEP_VEC(G, MIN_BLOCKS)                                                                                    \
    extern "C" __global__ void __launch_bounds__(SSD_STEP_THREADS, MIN_BLOCKS)                                         \
        ssd_step_vec##G##_f32(const float *x, const float *dt, const float *A, const float *Bm, const float *Cm,       \
                              float *state, float *y, const int heads, const int P, const int N, const int R,          \
                              const int K) {                                                                           \
        ssd_step_vec<float, G>(x, dt, A, Bm, Cm, state, y, heads, P, N, R, K);                                         \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(SSD_STEP_THREADS, MIN_BLOCKS)                                         \
        ssd_step_vec##G##_bf16(const bf16_t *x, const bf16_t *dt, const float *A, const bf16_t *Bm, const bf16_t *Cm,  \
                               float *state, bf16_t *y, const int heads, const int P, const int N, const int R,        \
                               const int K) {                                                                          \
        ssd_step_vec<bf16_t, G>(x, dt, A, Bm, Cm, state, y, heads, P, N, R, K);                                        \
    }

SSD_STEP_VEC(1, 4)
SSD_STEP_VEC(2, 2)
