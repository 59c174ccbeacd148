// y[r, o] += bias[o]: the bias epilogue of a cuBLAS linear.
// Layout: y is [rows, out] row-major; bias is [out].
// Launch: grid-stride over rows·out elements, 256 threads per block.
template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

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

// Few-row linear (decode): y[r, o] = Σ_i x[r, i]·w[o, i] (+ bias[o]) for r < R ≤ 4, accumulated in f32 and rounded
// once to T, as the cuBLAS path does. Layout: x [R, in], w [out, in], y [R, out], row-major; bias [out] or null.
// Launch: 256 threads per block, one warp per output feature (8 per block), lanes striding over `in` with
// 16-byte loads of w (and x) when `in` is a multiple of the vector width and both buffers are 16-byte aligned; a
// lane issues GEMV_BATCH loads of w before it consumes the first, the sums still taken in column order. The weights
// are constants (no kernel writes them), so the first batch is loaded before grid_entry(): in a recorded step those
// loads overlap the kernel this one depends on, and only x waits for it.
#define GEMV_BATCH 8
template <typename T> struct Vec16;
template <> struct Vec16<float> { static constexpr int n = 4; };
template <> struct Vec16<bf16_t> { static constexpr int n = 8; };

template <typename T> __device__ __forceinline__ void unpack16(const uint4 &v, float *out);
template <> __device__ __forceinline__ void unpack16<float>(const uint4 &v, float *out) {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
}
template <> __device__ __forceinline__ void unpack16<bf16_t>(const uint4 &v, float *out) {
    const unsigned int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        out[2 * k] = __uint_as_float(w[k] << 16);
        out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}

// wp[u] ← pack c0 + 32·u of a weight row, for the packs below `packs`.
template <int N>
__device__ __forceinline__ void load_packs(const uint4 *w4, uint4 (&wp)[N], const int c0, const int packs) {
#pragma unroll
    for (int u = 0; u < N; ++u) {
        if (c0 + 32 * u < packs) wp[u] = w4[c0 + 32 * u];
    }
}

// The residual norm in front of a few-row linear (norm_gemv, norm_gated_gemv): per row r < R, h = T(s[c]·res + f) (or
// T(res + f) without s) and x[c] = T(wn[c]·T(h[c]·rsqrt(Σ_c h²/in + eps))), exactly as residual_rms_norm (rms_norm.cu)
// computes them: the squares are summed in the order of its block of NV = min(1024, in rounded up to 32) threads (each
// virtual thread over c ≡ t mod NV, then each virtual warp's butterfly, then one butterfly over the warps' sums). Every
// block computes x into shared memory `xs` [R, in]; block 0 also stores h. A thread takes the columns of virtual
// threads lane of virtual warps warp, warp + warps, … (element e = k·M + m: the k-th such warp, round m of M); the
// first NORM_HELD have s and wn loaded before grid_entry() (constants) and their residual loads issued together.
template <typename T> struct NormIn {
    const T *s, *res, *f, *wn;
    T *h;
    float eps;
};

constexpr int NORM_HELD = 8;

struct NormCols {
    int nv, vwarps, rounds, per_thread;
    __device__ NormCols(const int in) {
        nv = min(1024, (in + 31) & ~31);
        vwarps = nv >> 5;
        rounds = (in + nv - 1) / nv;
        per_thread = (vwarps + (int)(blockDim.x >> 5) - 1) / (int)(blockDim.x >> 5) * rounds;
    }
    // Column of element e of this thread, or -1 past the row.
    __device__ int col(const int e, const int in) const {
        const int k = e / rounds, m = e - k * rounds, vw = (int)(threadIdx.x >> 5) + (int)(blockDim.x >> 5) * k;
        const int c = vw * 32 + (int)(threadIdx.x & 31) + m * nv;
        return e < per_thread && vw < vwarps && c < in ? c : -1;
    }
};

template <typename T> struct NormHeld {
    float s[NORM_HELD], wn[NORM_HELD];
};

template <typename T> __device__ __forceinline__ void norm_preload(const NormIn<T> &n, const int in, NormHeld<T> &held) {
    const NormCols nc(in);
#pragma unroll
    for (int e = 0; e < NORM_HELD; ++e) {
        const int c = nc.col(e, in);
        held.s[e] = c >= 0 && n.s ? ld(n.s, c) : 1.0f;
        held.wn[e] = c >= 0 ? ld(n.wn, c) : 0.0f;
    }
}

template <typename T, int R>
__device__ void norm_finish(const NormIn<T> &n, const int in, const NormHeld<T> &held, T *xs) {
    __shared__ float vsum[R][32];
    const NormCols nc(in);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    auto h_of = [&](float scale, float res, float f) { return round_to<T>(__fadd_rn(__fmul_rn(scale, res), f)); };
    for (int r = 0; r < R; ++r) {
        const long row = (long)r * in;
        float a[NORM_HELD], b[NORM_HELD];
#pragma unroll
        for (int e = 0; e < NORM_HELD; ++e) {
            const int c = max(nc.col(e, in), 0);
            a[e] = ld(n.res, row + c);
            b[e] = ld(n.f, row + c);
        }
#pragma unroll
        for (int e = 0; e < NORM_HELD; ++e) {
            const int c = nc.col(e, in);
            if (c < 0) continue;
            const float v = h_of(held.s[e], a[e], b[e]);
            st(xs, row + c, v);
            if (blockIdx.x == 0) st(n.h, row + c, v);
        }
        for (int e = NORM_HELD; e < nc.per_thread; ++e) {
            const int c = nc.col(e, in);
            if (c < 0) continue;
            const float v = h_of(n.s ? ld(n.s, c) : 1.0f, ld(n.res, row + c), ld(n.f, row + c));
            st(xs, row + c, v);
            if (blockIdx.x == 0) st(n.h, row + c, v);
        }
        for (int k = 0, vw = warp; vw < nc.vwarps; ++k, vw += warps) {
            float ss = 0.0f;
            for (int m = 0; m < nc.rounds; ++m) {
                const int c = nc.col(k * nc.rounds + m, in);
                if (c < 0) continue;
                const float v = ld(xs, row + c);
                ss += v * v;
            }
            ss = warp_sum(ss);
            if (lane == 0) vsum[r][vw] = ss;
        }
    }
    __syncthreads();
    for (int r = 0; r < R; ++r) {
        const long row = (long)r * in;
        const float inv = rsqrtf(warp_sum(lane < nc.vwarps ? vsum[r][lane] : 0.0f) / (float)in + n.eps);
#pragma unroll
        for (int e = 0; e < NORM_HELD; ++e) {
            const int c = nc.col(e, in);
            if (c >= 0) st(xs, row + c, held.wn[e] * round_to<T>(ld(xs, row + c) * inv));
        }
        for (int e = NORM_HELD; e < nc.per_thread; ++e) {
            const int c = nc.col(e, in);
            if (c >= 0) st(xs, row + c, ld(n.wn, c) * round_to<T>(ld(xs, row + c) * inv));
        }
    }
    __syncthreads();
}

template <typename T, int R, bool NORM>
__device__ void gemv(const T *x, const T *w, const T *bias, T *y, const int in, const int out, const int vec,
                     const NormIn<T> n) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    constexpr int V = Vec16<T>::n;
    const T *wr = w + (long)o * in;
    const uint4 *w4 = reinterpret_cast<const uint4 *>(wr);
    const int packs = in / V;
    uint4 wp[GEMV_BATCH];
    if (o < out && vec) load_packs(w4, wp, lane, packs);
    NormHeld<T> held;
    if (NORM) norm_preload(n, in, held);
    grid_entry();
    if (NORM) {
        extern __shared__ uint4 norm_x[];
        norm_finish<T, R>(n, in, held, reinterpret_cast<T *>(norm_x));
        x = reinterpret_cast<const T *>(norm_x);
    }
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
                unpack16<T>(wp[u], wv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float xv[V];
                    unpack16<T>(reinterpret_cast<const uint4 *>(x + (long)r * in)[c], xv);
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
    if (lane == 0) {
        const float b = bias ? ld(bias, o) : 0.f;
#pragma unroll
        for (int r = 0; r < R; ++r) st(y, (long)r * out + o, bias ? round_to<T>(acc[r]) + b : acc[r]);
    }
}

// Gated few-row linear (decode): h[r, o] = T(T(act(g))·u) with g = T(x·wg[o] (+ bg[o])) and u = T(x·wu[o] (+ bu[o]))
// each accumulated exactly as `gemv` does, so h is bit for bit gemv, gemv, then act_mul (act.cu). One warp per output
// feature computes both products; same launch as `gemv`, its first weight batches loaded before grid_entry() likewise.
template <typename T, int R, bool NORM>
__device__ void gated_gemv(const T *x, const T *wg, const T *wu, const T *bg, const T *bu, T *h, const int in,
                           const int out, const int vec, const int act, const NormIn<T> n) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    constexpr int V = Vec16<T>::n;
    constexpr int B = GEMV_BATCH / 2;
    const T *gr = wg + (long)o * in, *ur = wu + (long)o * in;
    const uint4 *g4 = reinterpret_cast<const uint4 *>(gr), *u4 = reinterpret_cast<const uint4 *>(ur);
    const int packs = in / V;
    uint4 gp[B], up[B];
    if (o < out && vec) {
        load_packs(g4, gp, lane, packs);
        load_packs(u4, up, lane, packs);
    }
    NormHeld<T> held;
    if (NORM) norm_preload(n, in, held);
    grid_entry();
    if (NORM) {
        extern __shared__ uint4 norm_x[];
        norm_finish<T, R>(n, in, held, reinterpret_cast<T *>(norm_x));
        x = reinterpret_cast<const T *>(norm_x);
    }
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
                unpack16<T>(gp[u], gv);
                unpack16<T>(up[u], uv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float xv[V];
                    unpack16<T>(reinterpret_cast<const uint4 *>(x + (long)r * in)[c], xv);
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
        gemv<T, R, false>(x, w, bias, y, in, out, vec, NormIn<T>{});                                               \
    }                                                                                                              \
    extern "C" __global__ void gated_gemv##R##_##NAME(const T *x, const T *wg, const T *wu, const T *bg, const T *bu, \
                                                      T *h, const int in, const int out, const int vec,           \
                                                      const int act) {                                             \
        gated_gemv<T, R, false>(x, wg, wu, bg, bu, h, in, out, vec, act, NormIn<T>{});                             \
    }                                                                                                              \
    extern "C" __global__ void norm_gemv##R##_##NAME(const T *s, const T *res, const T *f, const T *wn, T *hr,      \
                                                     const float eps, const T *w, const T *bias, T *y,            \
                                                     const int in, const int out, const int vec) {                 \
        gemv<T, R, true>(nullptr, w, bias, y, in, out, vec, NormIn<T>{s, res, f, wn, hr, eps});                    \
    }                                                                                                              \
    extern "C" __global__ void norm_gated_gemv##R##_##NAME(                                                        \
        const T *s, const T *res, const T *f, const T *wn, T *hr, const float eps, const T *wg, const T *wu,       \
        const T *bg, const T *bu, T *h, const int in, const int out, const int vec, const int act) {               \
        gated_gemv<T, R, true>(nullptr, wg, wu, bg, bu, h, in, out, vec, act, NormIn<T>{s, res, f, wn, hr, eps});  \
    }
GEMV(float, f32, 1)
GEMV(float, f32, 2)
GEMV(float, f32, 3)
GEMV(float, f32, 4)
GEMV(bf16_t, bf16, 1)
GEMV(bf16_t, bf16, 2)
GEMV(bf16_t, bf16, 3)
GEMV(bf16_t, bf16, 4)
