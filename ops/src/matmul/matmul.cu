// y[r, o] += bias[o]: the bias epilogue of a cuBLAS linear.
// Layout: y is [rows, out] row-major; bias is [out].
// Launch: grid-stride over rows·out elements, 256 threads per block.

template <typename T> __device__ void bias_add(T *y, const T *bias, const long n, const int out) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        st(y, i, ld(y, i) + ld(bias, i % out));
    }
}

extern "C" __global__ void bias_add_f32(float *y, const float *bias, const long n, const int out) {
    grid_entry();
    bias_add(y, bias, n, out);
}
extern "C" __global__ void bias_add_bf16(bf16_t *y, const bf16_t *bias, const long n, const int out) {
    grid_entry();
    bias_add(y, bias, n, out);
}
extern "C" __global__ void bias_add_f16(f16_t *y, const f16_t *bias, const long n, const int out) {
    grid_entry();
    bias_add(y, bias, n, out);
}

// Few-row linear (decode): y[r, o] = Σ_i x[r, i]·w[o, i] (+ bias[o]) for r < R ≤ 4, accumulated in f32 and rounded
// once to T, as the cuBLAS path does. Layout: x [R, in], w [out, in], y [R, out], row-major; bias [out] or null.
// Launch: 256 threads per block, one warp per output feature (8 per block), lanes striding over `in` with
// 16-byte loads of w (and x) when `in` is a multiple of the vector width and both buffers are 16-byte aligned; a
// lane issues GEMV_BATCH loads of w before it consumes the first, the sums still taken in column order. The weights
// are constants (no kernel writes them), so the first batch is loaded before grid_entry(): in a recorded step those
// loads overlap the kernel this one depends on, and only x waits for it.
#define GEMV_BATCH 8
// wp[u] ← pack c0 + 32·u of a weight row, for the packs below `packs` (`ld_once_const`).
template <int N>
__device__ __forceinline__ void load_packs(const uint4 *w4, uint4 (&wp)[N], const int c0, const int packs) {
#pragma unroll
    for (int u = 0; u < N; ++u) {
        if (c0 + 32 * u < packs) wp[u] = ld_once_const(w4 + c0 + 32 * u);
    }
}

// The sums of a few-row linear for the warp's output feature o, acc[r] = Σ_i x[r, i]·w[o, i], handed to
// store(o, acc) in lane 0: `gemv` with the epilogue of the caller's choice.
template <typename T, int R, typename Store>
__device__ __forceinline__ void gemv_rows(const T *x, const T *w, const int in, const int out, const int vec,
                                          Store store) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    constexpr int V = 16 / sizeof(T);
    const T *wr = w + (long)o * in;
    const uint4 *w4 = reinterpret_cast<const uint4 *>(wr);
    const int packs = in / V;
    uint4 wp[GEMV_BATCH];
    if (o < out && vec) load_packs(w4, wp, lane, packs);
    grid_entry();
    if (o >= out) return;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    if (vec) {
        for (int c0 = lane; c0 < packs; c0 += 32 * GEMV_BATCH) {
            if (c0 != lane) load_packs(w4, wp, c0, packs);
#pragma unroll
            for (int u = 0; u < GEMV_BATCH; ++u) {
                const int c = c0 + 32 * u;
                if (c >= packs) break;
                float wv[V];
                unpackv<T>(wp[u], wv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float xv[V];
                    unpackv<T>(reinterpret_cast<const uint4 *>(x + (long)r * in)[c], xv);
#pragma unroll
                    for (int k = 0; k < V; ++k) acc[r] = fmaf(xv[k], wv[k], acc[r]);
                }
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            const float wv = ld(wr, i);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] = fmaf(ld(x, (long)r * in + i), wv, acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        float v = acc[r];
#pragma unroll
        for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
        acc[r] = v;
    }
    if (lane == 0) store(o, acc);
}

template <typename T, int R>
__device__ void gemv(const T *x, const T *w, const T *bias, T *y, const int in, const int out, const int vec) {
    gemv_rows<T, R>(x, w, in, out, vec, [&](int o, const float (&acc)[R]) {
        const float b = bias ? ld(bias, o) : 0.f;
#pragma unroll
        for (int r = 0; r < R; ++r) st(y, (long)r * out + o, bias ? round_to<T>(acc[r]) + b : acc[r]);
    });
}

// Mask values of a projection (decode): m[b, o, at + j] = exp(a[o]·softplus(dt)) for row r = b·S + j, with dt =
// x[r]·w[o] (+ bias[o]) accumulated and rounded to T exactly as `gemv` stores it, so m is bit for bit `gemv` then
// dynamic_mask (dynamic_mask.cu). Layout: x [R, in], w [Hm = out, in], a [Hm] f32, m [R / S, Hm, row] f32 with row =
// cap and at = *pos when pos is given (slots outside [0, cap) are not written), else row = S and at = 0. Same launch
// as `gemv`; the position, which a copy before the step writes and no kernel does, is loaded with the first weights
// before grid_entry().
template <typename T, int R>
__device__ void mask_gemv(const T *x, const T *w, const T *bias, const float *a, float *m, const int in, const int out,
                          const int vec, const int S, const long long *pos, const long cap) {
    const long at = pos != nullptr ? (long)*pos : 0, row = pos != nullptr ? cap : (long)S;
    gemv_rows<T, R>(x, w, in, out, vec, [&](int o, const float (&acc)[R]) {
        const float b = bias ? ld(bias, o) : 0.f, ao = a[o];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float dt = round_to<T>(bias ? round_to<T>(acc[r]) + b : acc[r]);
            const long j = r % S, seq = r / S;
            if (at + j >= 0 && at + j < row) m[(seq * out + o) * row + at + j] = expf(ao * softplus_f32(dt));
        }
    });
}

// Gated few-row linear (decode): h[r, o] = T(T(act(g))·u) with g = T(x·wg[o] (+ bg[o])) and u = T(x·wu[o] (+ bu[o]))
// each accumulated exactly as `gemv` does, so h is bit for bit gemv, gemv, then act_mul (act.cu). One warp per output
// feature computes both products; same launch as `gemv`, its first weight batches loaded before grid_entry() likewise.
template <typename T, int R>
__device__ void gated_gemv(const T *x, const T *wg, const T *wu, const T *bg, const T *bu, T *h, const int in,
                           const int out, const int vec, const int act) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    constexpr int V = 16 / sizeof(T);
    constexpr int B = GEMV_BATCH / 2;
    const T *gr = wg + (long)o * in, *ur = wu + (long)o * in;
    const uint4 *g4 = reinterpret_cast<const uint4 *>(gr), *u4 = reinterpret_cast<const uint4 *>(ur);
    const int packs = in / V;
    uint4 gp[B], up[B];
    if (o < out && vec) {
        load_packs(g4, gp, lane, packs);
        load_packs(u4, up, lane, packs);
    }
    grid_entry();
    if (o >= out) return;
    float ag[R], au[R];
#pragma unroll
    for (int r = 0; r < R; ++r) ag[r] = au[r] = 0.f;
    if (vec) {
        for (int c0 = lane; c0 < packs; c0 += 32 * B) {
            if (c0 != lane) {
                load_packs(g4, gp, c0, packs);
                load_packs(u4, up, c0, packs);
            }
#pragma unroll
            for (int u = 0; u < B; ++u) {
                const int c = c0 + 32 * u;
                if (c >= packs) break;
                float gv[V], uv[V];
                unpackv<T>(gp[u], gv);
                unpackv<T>(up[u], uv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float xv[V];
                    unpackv<T>(reinterpret_cast<const uint4 *>(x + (long)r * in)[c], xv);
#pragma unroll
                    for (int k = 0; k < V; ++k) {
                        ag[r] = fmaf(xv[k], gv[k], ag[r]);
                        au[r] = fmaf(xv[k], uv[k], au[r]);
                    }
                }
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            const float gv = ld(gr, i), uv = ld(ur, i);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float xv = ld(x, (long)r * in + i);
                ag[r] = fmaf(xv, gv, ag[r]);
                au[r] = fmaf(xv, uv, au[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        float g = ag[r], u = au[r];
#pragma unroll
        for (int s = 16; s > 0; s >>= 1) {
            g += __shfl_xor_sync(0xffffffffu, g, s);
            u += __shfl_xor_sync(0xffffffffu, u, s);
        }
        ag[r] = g, au[r] = u;
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float g = round_to<T>(bg ? round_to<T>(ag[r]) + ld(bg, o) : ag[r]);
            const float u = round_to<T>(bu ? round_to<T>(au[r]) + ld(bu, o) : au[r]);
            st(h, (long)r * out + o, round_to<T>(activate(g, act)) * u);
        }
    }
}

#define GEMV(T, NAME, R)                                                                                          \
    extern "C" __global__ void gemv##R##_##NAME(const T *x, const T *w, const T *bias, T *y, const int in,        \
                                                const int out, const int vec) {                                    \
        gemv<T, R>(x, w, bias, y, in, out, vec);                                                                   \
    }                                                                                                              \
    extern "C" __global__ void gated_gemv##R##_##NAME(const T *x, const T *wg, const T *wu, const T *bg, const T *bu, \
                                                      T *h, const int in, const int out, const int vec,           \
                                                      const int act) {                                             \
        gated_gemv<T, R>(x, wg, wu, bg, bu, h, in, out, vec, act);                                                 \
    }                                                                                                              \
    extern "C" __global__ void mask_gemv##R##_##NAME(const T *x, const T *w, const T *bias, const float *a,          \
                                                     float *m, const int in, const int out, const int vec,         \
                                                     const int S, const long long *pos, const long cap) {           \
        mask_gemv<T, R>(x, w, bias, a, m, in, out, vec, S, pos, cap);                                              \
    }
GEMV(float, f32, 1)
GEMV(float, f32, 2)
GEMV(float, f32, 3)
GEMV(float, f32, 4)
GEMV(bf16_t, bf16, 1)
GEMV(bf16_t, bf16, 2)
GEMV(bf16_t, bf16, 3)
GEMV(bf16_t, bf16, 4)
GEMV(f16_t, f16, 1)
GEMV(f16_t, f16, 2)
GEMV(f16_t, f16, 3)
GEMV(f16_t, f16, 4)
