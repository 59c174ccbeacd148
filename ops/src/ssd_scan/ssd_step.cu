// SSD decode step: Δ = softplus(dt), S[p,n] ← S[p,n]·exp(Δ·A) + (Δ·x[p])·B[n] in place, y[p] = Σ_n S[p,n]·C[n].
// Layout: x, y [B,H,P] (one token); dt [B,H]; A [H] f32; B, C [B,H,N]; S [B,H,P,N] f32. 256 threads per block.
// ssd_step_vec<G>x<K> (N % 4 == 0): grid B·H·⌈P/(K·256/R)⌉, R lanes per row, each with G float4 column groups of K
// rows.
// ssd_step (any N): grid B·H·⌈P/8⌉; warp w owns row p = 8·(block % ⌈P/8⌉) + w, lanes stride over n.
// ssd_step_rope*: the same with B and C given before RoPE and rotated on load (rope_rotate, as rope_apply stores
// them) with cos, sin [B, N] (one row per sequence, N even; the vectorised form needs N % 8 == 0).
#define SSD_STEP_ROWS 8

#define SSD_STEP_THREADS 256

// Read-only inputs through the non-coherent path; a 4-element group of B or C stays packed (float4 or two 16-bit
// pairs) until it is used.
template <typename T> __device__ __forceinline__ float ldg(const T *p, long i);
template <> __device__ __forceinline__ float ldg<float>(const float *p, long i) { return __ldg(p + i); }
template <> __device__ __forceinline__ float ldg<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(__ldg(p + i)); }
template <> __device__ __forceinline__ float ldg<f16_t>(const f16_t *p, long i) { return f16_to_f32(__ldg(p + i)); }
template <typename T> struct Quad;
template <> struct Quad<float> {
    typedef float4 raw;
};
template <> struct Quad<bf16_t> {
    typedef uint2 raw;
};
template <> struct Quad<f16_t> {
    typedef uint2 raw;
};
template <typename T> __device__ __forceinline__ typename Quad<T>::raw ldg4(const T *p, long i) {
    return __ldg(reinterpret_cast<const typename Quad<T>::raw *>(p + i));
}
template <typename T> __device__ __forceinline__ float4 unpack4(typename Quad<T>::raw u) {
    return make_float4(word_lo<T>(u.x), word_hi<T>(u.x), word_lo<T>(u.y), word_hi<T>(u.y));
}
template <> __device__ __forceinline__ float4 unpack4<float>(float4 v) { return v; }

__device__ __forceinline__ float4 step4(float4 s, float decay, float dx, float4 b) {
    return make_float4(s.x * decay + dx * b.x, s.y * decay + dx * b.y, s.z * decay + dx * b.z, s.w * decay + dx * b.w);
}

// Lane l of a row owns the 4-column groups l, l + R (< N/4); thread t of the block owns rows t/R + k·(256/R) of its
// tile for k < K. A and the thread's K·G state groups are loaded before grid_entry(): A is a constant, and the state
// is written by this kernel alone (never by the kernel it waits for, whose inputs are this step's projections).
// Every other load (dt, x, B, C) is issued before the first use, so a block waits for one memory round trip after
// the wait. The state is read once and written once: streaming (evict-first) loads and stores. The K row sums reduce
// across the R lanes together.
template <typename T>
__device__ __forceinline__ float4 rotate4(float4 own, float4 partner, float4 c, float4 s, bool lower) {
    return make_float4(rope_rotate<T>(own.x, partner.x, c.x, s.x, lower),
                       rope_rotate<T>(own.y, partner.y, c.y, s.y, lower),
                       rope_rotate<T>(own.z, partner.z, c.z, s.z, lower),
                       rope_rotate<T>(own.w, partner.w, c.w, s.w, lower));
}

// With ROPE, group j of B and C pairs with group j ± V/2 (the other half of the head), loaded alongside it.
template <typename T, int G, int K, bool ROPE>
__device__ __forceinline__ void ssd_step_vec(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm,
                                             const T *cos_t, const T *sin_t, float *state, T *y, const int heads,
                                             const int P, const int N, const int R) {
    const int V = N / 4, shift = __ffs(R) - 1, rows_pass = SSD_STEP_THREADS >> shift;
    const unsigned rows_block = rows_pass * K, tiles = (P + rows_block - 1) / rows_block;
    const unsigned bhu = blockIdx.x / tiles;
    const long bh = bhu;
    const int lane = threadIdx.x & (R - 1);
    const int p0 = (blockIdx.x - bhu * tiles) * rows_block + (threadIdx.x >> shift);
    const float a = __ldg(A + bhu % (unsigned)heads);
    float4 s[K][G];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int p = p0 + k * rows_pass;
        if (p < P) {
            const float4 *row = reinterpret_cast<const float4 *>(state + (bh * P + p) * N);
#pragma unroll
            for (int g = 0; g < G; ++g)
                if (lane + g * R < V) s[k][g] = __ldcs(row + lane + g * R);
        }
    }
    grid_entry();
    const float z = ldg(dt, bh);
    float xv[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int p = p0 + k * rows_pass;
        if (p < P) xv[k] = ldg(x, bh * P + p);
    }
    typename Quad<T>::raw b[G], c[G], bp[G], cp[G], co[G], si[G];
    const int half = V / 2;
    const long rope_row = (long)(bhu / (unsigned)heads) * N;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const int j = lane + g * R;
        if (j < V) {
            b[g] = ldg4(Bm, bh * N + 4 * j);
            c[g] = ldg4(Cm, bh * N + 4 * j);
            if (ROPE) {
                const int jp = j < half ? j + half : j - half;
                bp[g] = ldg4(Bm, bh * N + 4 * jp);
                cp[g] = ldg4(Cm, bh * N + 4 * jp);
                co[g] = ldg4(cos_t, rope_row + 4 * j);
                si[g] = ldg4(sin_t, rope_row + 4 * j);
            }
        }
    }
    float4 bv[G], cv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const int j = lane + g * R;
        if (j < V) {
            bv[g] = unpack4<T>(b[g]);
            cv[g] = unpack4<T>(c[g]);
            if (ROPE) {
                const float4 cs = unpack4<T>(co[g]), sn = unpack4<T>(si[g]);
                bv[g] = rotate4<T>(bv[g], unpack4<T>(bp[g]), cs, sn, j < half);
                cv[g] = rotate4<T>(cv[g], unpack4<T>(cp[g]), cs, sn, j < half);
            }
        }
    }
    const float delta = softplus_f32(z);
    const float decay = expf(delta * a);
    float acc[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int p = p0 + k * rows_pass;
        acc[k] = 0.0f;
        if (p < P) {
            const float dx = delta * xv[k];
            float4 *row = reinterpret_cast<float4 *>(state + (bh * P + p) * N);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const int j = lane + g * R;
                if (j < V) {
                    const float4 v = step4(s[k][g], decay, dx, bv[g]);
                    __stcs(row + j, v);
                    acc[k] += v.x * cv[g].x + v.y * cv[g].y + v.z * cv[g].z + v.w * cv[g].w;
                }
            }
        }
    }
    for (int o = R / 2; o > 0; o >>= 1) {
#pragma unroll
        for (int k = 0; k < K; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], o);
    }
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
            const int p = p0 + k * rows_pass;
            if (p < P) st(y, bh * P + p, acc[k]);
        }
    }
}

// Element n of B or C at `base`, rotated with the sequence's cos/sin row under ROPE.
template <typename T, bool ROPE>
__device__ __forceinline__ float bc_at(const T *m, long base, int n, const T *cos_t, const T *sin_t, long rope_row,
                                       int N) {
    const float v = ld(m, base + n);
    if (!ROPE) return v;
    const int half = N / 2;
    const bool lower = n < half;
    return rope_rotate<T>(v, ld(m, base + (lower ? n + half : n - half)), ld(cos_t, rope_row + n),
                          ld(sin_t, rope_row + n), lower);
}

template <typename T, bool ROPE>
__device__ void ssd_step(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm, const T *cos_t,
                         const T *sin_t, float *state, T *y, const int heads, const int P, const int N) {
    const int tiles = (P + SSD_STEP_ROWS - 1) / SSD_STEP_ROWS;
    const long bh = blockIdx.x / tiles;
    const int p = (blockIdx.x % tiles) * SSD_STEP_ROWS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (p >= P) return;
    const float a = A[bh % heads];
    const float delta = softplus_f32(ld(dt, bh));
    const float decay = expf(delta * a);
    const float dx = delta * ld(x, bh * P + p);
    float *row = state + (bh * P + p) * N;
    float acc = 0.0f;
    const long rope_row = bh / heads * N;
    for (int n = lane; n < N; n += 32) {
        const float s = row[n] * decay + dx * bc_at<T, ROPE>(Bm, bh * N, n, cos_t, sin_t, rope_row, N);
        row[n] = s;
        acc += s * bc_at<T, ROPE>(Cm, bh * N, n, cos_t, sin_t, rope_row, N);
    }
    acc = warp_sum(acc);
    if (lane == 0) st(y, bh * P + p, acc);
}

#define SSD_STEP(NAME, T, ROPE, ROPE_PARAMS, ROPE_ARGS)                                                            \
    extern "C" __global__ void NAME(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm ROPE_PARAMS,     \
                                    float *state, T *y, const int heads, const int P, const int N) {                 \
        grid_entry();                                                                                                  \
        ssd_step<T, ROPE>(x, dt, A, Bm, Cm, ROPE_ARGS, state, y, heads, P, N);                                         \
    }
#define NO_ROPE_ARGS nullptr, nullptr
#define ROPE_PARAMS_OF(T) , const T *cos_t, const T *sin_t
#define ROPE_ARGS cos_t, sin_t
#define EMPTY

SSD_STEP(ssd_step_f32, float, false, EMPTY, NO_ROPE_ARGS)
SSD_STEP(ssd_step_bf16, bf16_t, false, EMPTY, NO_ROPE_ARGS)
SSD_STEP(ssd_step_rope_f32, float, true, ROPE_PARAMS_OF(float), ROPE_ARGS)
SSD_STEP(ssd_step_rope_bf16, bf16_t, true, ROPE_PARAMS_OF(bf16_t), ROPE_ARGS)
SSD_STEP(ssd_step_f16, f16_t, false, EMPTY, NO_ROPE_ARGS)
SSD_STEP(ssd_step_rope_f16, f16_t, true, ROPE_PARAMS_OF(f16_t), ROPE_ARGS)

#define SSD_STEP_VEC_ONE(NAME, T, G, K, MIN_BLOCKS, ROPE, ROPE_PARAMS, ROPE_ARGS)                                      \
    extern "C" __global__ void __launch_bounds__(SSD_STEP_THREADS, MIN_BLOCKS)                                         \
        NAME(const T *x, const T *dt, const float *A, const T *Bm, const T *Cm ROPE_PARAMS, float *state, T *y,       \
             const int heads, const int P, const int N, const int R) {                                                 \
        ssd_step_vec<T, G, K, ROPE>(x, dt, A, Bm, Cm, ROPE_ARGS, state, y, heads, P, N, R);                            \
    }
#define SSD_STEP_VEC(G, K, MIN_BLOCKS)                                                                                 \
    SSD_STEP_VEC_ONE(ssd_step_vec##G##x##K##_f32, float, G, K, MIN_BLOCKS, false, EMPTY, NO_ROPE_ARGS)                 \
    SSD_STEP_VEC_ONE(ssd_step_vec##G##x##K##_bf16, bf16_t, G, K, MIN_BLOCKS, false, EMPTY, NO_ROPE_ARGS)               \
    SSD_STEP_VEC_ONE(ssd_step_rope_vec##G##x##K##_f32, float, G, K, MIN_BLOCKS, true, ROPE_PARAMS_OF(float),           \
                     ROPE_ARGS)                                                                                        \
    SSD_STEP_VEC_ONE(ssd_step_rope_vec##G##x##K##_bf16, bf16_t, G, K, MIN_BLOCKS, true, ROPE_PARAMS_OF(bf16_t),        \
                     ROPE_ARGS)                                                                                        \
    SSD_STEP_VEC_ONE(ssd_step_vec##G##x##K##_f16, f16_t, G, K, MIN_BLOCKS, false, EMPTY, NO_ROPE_ARGS)                 \
    SSD_STEP_VEC_ONE(ssd_step_rope_vec##G##x##K##_f16, f16_t, G, K, MIN_BLOCKS, true, ROPE_PARAMS_OF(f16_t),           \
                     ROPE_ARGS)

SSD_STEP_VEC(1, 1, 4)
SSD_STEP_VEC(1, 4, 5)
SSD_STEP_VEC(2, 1, 4)
SSD_STEP_VEC(2, 4, 3)
