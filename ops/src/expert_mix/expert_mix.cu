// out[r] = Σ_{h,j} w·up[e], e = ids[r,h,j], w = act(x[r]·down[e])·p or act(x[r]·down[e]·p), p = softmax_j(scores[r,h,:])
// (÷ Σ_j p when norm); f32 math; a row with an id outside 0..E is written as NaN and no row outside 0..E is read.
// Layout: x, out [rows, dim]; down, up [E, dim] in T; scores f32, ids i64 [rows, heads, k]; act 0..3 = silu, relu, gelu, gelu_tanh.
// Launch (expert_mix_*): grid (rows, column slices of `width`), 256 threads; each block weighs all heads·k ≤ 1024
// experts of its row (`lanes` threads per down dot), then sums its slice of up rows; 16-byte loads when dim and the
// buffers allow. expert_mix_rows_*: one block of 256 threads per row, a warp per down dot, each thread owns 4-wide
// columns of the up sum over all experts; 4-wide loads when dim and the buffers allow; with `dots` (f32 [rows, E], the
// dot of every row with every down row, from a GEMM; null for none) the weights are read from it instead of
// computed. For few rows, two launches:
// expert_weigh_* (grid (rows, ⌈heads·k / 8⌉), 256 threads, a warp per down dot) writes the weights w f32
// [rows, heads·k], NaN for an id outside 0..E; expert_sum_* (grid (rows, column slices of `width`), 256 threads)
// sums its slice of up rows with them, so that no down dot is computed twice.
// With an addend `add` [rows, dim] (null for none; the fused residual add of the shared MLP) every output element is
// T(mix) + add in f32, rounded to T: the value of the unfused ExpertMix followed by Add.
#define EM_MAX_SEL 1024
#define EM_THREADS 256

// v to p[i .. i + N): one element, four (`st4`) or a 16-byte pack of a 16-bit type H.
__device__ __forceinline__ void stv(float *p, long i, const float (&v)[1]) { p[i] = v[0]; }
__device__ __forceinline__ void stv(float *p, long i, const float (&v)[4]) { st4(p, i, v); }
template <typename H> __device__ __forceinline__ void stv(H *p, long i, const float (&v)[1]) { st(p, i, v[0]); }
template <typename H> __device__ __forceinline__ void stv(H *p, long i, const float (&v)[4]) { st4(p, i, v); }
template <typename H> __device__ __forceinline__ void stv(H *p, long i, const float (&v)[8]) {
    *reinterpret_cast<uint4 *>(p + i) =
        make_uint4(pack2<H>(v[0], v[1]), pack2<H>(v[2], v[3]), pack2<H>(v[4], v[5]), pack2<H>(v[6], v[7]));
}
// out[i .. i + V) = v, or T(v) + add[i .. i + V) when there is an addend.
template <typename T, int V>
__device__ __forceinline__ void put(T *out, const T *add, long i, const float (&v)[V]) {
    float r[V];
#pragma unroll
    for (int t = 0; t < V; ++t) r[t] = v[t];
    if (add != nullptr) {
        float a[V];
        ldv(add, i, a);
#pragma unroll
        for (int t = 0; t < V; ++t) r[t] = round_to<T>(r[t]) + a[t];
    }
    stv(out, i, r);
}

// The addend's row at `offset`, or null.
template <typename T> __device__ __forceinline__ const T *add_row(const T *add, long offset) {
    return add != nullptr ? add + offset : nullptr;
}

// w[j] ← the weight of expert j; groups of `lanes` threads (a power of two ≤ 32) take one expert each per round.
template <typename T, int V>
__device__ __forceinline__ void weigh(const T *x, const T *down, const int *eid, float *w, const int n, const int dim,
                                      const int lanes, const int act, const int after) {
    const int groups = blockDim.x / lanes, g = threadIdx.x / lanes, l = threadIdx.x % lanes;
    for (int j0 = 0; j0 < n; j0 += groups) {
        const int j = j0 + g;
        float d = 0.0f;
        if (j < n) {
            const long eo = (long)eid[j] * dim;
#pragma unroll 4
            for (int c = l * V; c < dim; c += lanes * V) {
                float a[V], b[V];
                ldv(x, c, a);
                ldv(down, eo + c, b);
#pragma unroll
                for (int i = 0; i < V; ++i) d += a[i] * b[i];
            }
        }
        for (int o = lanes >> 1; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (j < n && l == 0) w[j] = after ? activate(d * w[j], act) : activate(d, act) * w[j];
    }
}

// The thread's first up pack of a column slice when several groups of threads split the experts (`mix_slice`): loaded
// before the weights are known.
template <typename T, int V>
__device__ __forceinline__ bool first_pack(const T *up, const int *eid, float (&u)[V], const int n, const int dim,
                                           const int c0, const int c1) {
    const int packs = (c1 - c0) / V;
    const int groups = max(1, (int)blockDim.x / packs);
    const int p = threadIdx.x % packs, g = threadIdx.x / packs;
    const bool first = groups > 1 && g < groups && g < n;
#pragma unroll
    for (int i = 0; i < V; ++i) u[i] = 0.0f;
    if (first) ldv(up, (long)eid[g] * dim + c0 + p * V, u);
    return first;
}

// out[c0 .. c1) of one row = Σ_j w[j]·up[eid[j]]: groups of threads split the experts of each V-wide column pack, then
// add in group order; `u` is the thread's `first_pack`.
template <typename T, int V>
__device__ __forceinline__ void mix_slice(const T *up, T *out, const T *add, const int *eid, const float *w,
                                          float *part, const int n, const int dim, const int c0, const int c1,
                                          const float (&u)[V], const bool first) {
    const int packs = (c1 - c0) / V;
    const int groups = max(1, (int)blockDim.x / packs);
    const int p = threadIdx.x % packs, g = threadIdx.x / packs;
    if (groups == 1) {
        for (int pc = threadIdx.x; pc < packs; pc += blockDim.x) {
            const int c = c0 + pc * V;
            float acc[V];
#pragma unroll
            for (int i = 0; i < V; ++i) acc[i] = 0.0f;
#pragma unroll 8
            for (int j = 0; j < n; ++j) {
                float v[V];
                ldv(up, (long)eid[j] * dim + c, v);
#pragma unroll
                for (int i = 0; i < V; ++i) acc[i] += w[j] * v[i];
            }
            put(out, add, c, acc);
        }
        return;
    }
    if (g < groups) {
        float acc[V];
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] = first ? w[g] * u[i] : 0.0f;
#pragma unroll 4
        for (int j = g + groups; j < n; j += groups) {
            float v[V];
            ldv(up, (long)eid[j] * dim + c0 + p * V, v);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[i] += w[j] * v[i];
        }
#pragma unroll
        for (int i = 0; i < V; ++i) part[(g * packs + p) * V + i] = acc[i];
    }
    __syncthreads();
    for (int o = threadIdx.x; o < packs * V; o += blockDim.x) {
        float s[1] = {0.0f};
        for (int gg = 0; gg < groups; ++gg) s[0] += part[gg * packs * V + o];
        put(out, add, c0 + o, s);
    }
}

// eid[j] ← ids[row, j] (0 where out of range, and *bad set), w[j] ← the routing weight of slot j; ends on a barrier.
__device__ __forceinline__ void routing(const float *scores, const long long *ids, float *w, int *eid, int *bad,
                                        const long row, const int heads, const int k, const long long num_experts,
                                        const int norm) {
    const int n = heads * k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (threadIdx.x == 0) *bad = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const long long id = ids[row * n + j];
        const bool ok = id >= 0 && id < num_experts;
        if (!ok) *bad = 1;
        eid[j] = ok ? (int)id : 0;
    }
    for (int h = warp; h < heads; h += warps) {
        const float *s = scores + (row * heads + h) * (long)k;
        const HeadSoftmax hs = head_softmax(s, k, lane);
        for (int j = lane; j < k; j += 32) w[h * k + j] = head_prob(hs, s, j, norm);
    }
    __syncthreads();
}

template <typename T>
__device__ void expert_mix(const T *x, const float *scores, const long long *ids, const T *down, const T *up, T *out,
                           const T *add, const int heads, const int k, const int dim, const long long num_experts,
                           const int act, const int after, const int norm, const int width, const int lanes) {
    constexpr int V = 16 / sizeof(T);
    __shared__ float w[EM_MAX_SEL];
    __shared__ int eid[EM_MAX_SEL];
    __shared__ __align__(16) float part[EM_THREADS * V];
    __shared__ int bad;
    const long row = blockIdx.x;
    const int c0 = blockIdx.y * width, c1 = min(dim, c0 + width);
    const int n = heads * k;
    const long xo = row * dim;
    const bool vec =
        dim % V == 0 && aligned16(x) && aligned16(down) && aligned16(up) && aligned16(out) && aligned16(add);
    routing(scores, ids, w, eid, &bad, row, heads, k, num_experts, norm);
    if (bad) {
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
            const float v[1] = {__int_as_float(0x7fc00000)};
            put(out, add, xo + c, v);
        }
        return;
    }
    if (vec) {
        float u[V];
        const bool first = first_pack<T, V>(up, eid, u, n, dim, c0, c1);
        weigh<T, V>(x + xo, down, eid, w, n, dim, lanes, act, after);
        __syncthreads();
        mix_slice<T, V>(up, out + xo, add_row(add, xo), eid, w, part, n, dim, c0, c1, u, first);
    } else {
        float u[1];
        const bool first = first_pack<T, 1>(up, eid, u, n, dim, c0, c1);
        weigh<T, 1>(x + xo, down, eid, w, n, dim, lanes, act, after);
        __syncthreads();
        mix_slice<T, 1>(up, out + xo, add_row(add, xo), eid, w, part, n, dim, c0, c1, u, first);
    }
}

// The few-row form's weights: warp j of the grid's row takes slot j = head·k + i; NaN for an id outside 0..E.
template <typename T>
__device__ void expert_weigh(const T *x, const float *scores, const long long *ids, const T *down, float *wout,
                             const int heads, const int k, const int dim, const long long num_experts, const int act,
                             const int after, const int norm) {
    const long row = blockIdx.x;
    const int n = heads * k;
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= n) return;
    const long long id = ids[row * n + j];
    if (!(id >= 0 && id < num_experts)) {
        if (lane == 0) wout[row * n + j] = __int_as_float(0x7fc00000);
        return;
    }
    const T *xr = x + row * dim, *dr = down + id * dim;
    const DownHead head = down_head(xr, dr, dim, lane);
    const HeadSoftmax hs = head_softmax(scores + (row * heads + j / k) * (long)k, k, lane);
    const float prob = head_prob(hs, scores + (row * heads + j / k) * (long)k, j % k, norm);
    const float d = down_dot(xr, dr, dim, lane, head);
    if (lane == 0) wout[row * n + j] = expert_weight(d, prob, act, after);
}

// The few-row form's sums: out[row, c0 .. c1) = Σ_j w[row, j]·up[ids[row, j]], an id outside 0..E read as row 0 (its
// NaN weight makes the row NaN).
template <typename T>
__device__ void expert_sum(const long long *ids, const float *wts, const T *up, T *out, const T *add, const int n,
                           const int dim, const long long num_experts, const int width) {
    constexpr int V = 16 / sizeof(T);
    __shared__ float w[EM_MAX_SEL];
    __shared__ int eid[EM_MAX_SEL];
    __shared__ __align__(16) float part[EM_THREADS * V];
    const long row = blockIdx.x;
    const int c0 = blockIdx.y * width, c1 = min(dim, c0 + width);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const long long id = ids[row * n + j];
        eid[j] = id >= 0 && id < num_experts ? (int)id : 0;
        w[j] = wts[row * n + j];
    }
    __syncthreads();
    const T *add_r = add_row(add, row * dim);
    if (dim % V == 0 && aligned16(up) && aligned16(out) && aligned16(add)) {
        float u[V];
        const bool first = first_pack<T, V>(up, eid, u, n, dim, c0, c1);
        mix_slice<T, V>(up, out + row * dim, add_r, eid, w, part, n, dim, c0, c1, u, first);
    } else {
        float u[1];
        const bool first = first_pack<T, 1>(up, eid, u, n, dim, c0, c1);
        mix_slice<T, 1>(up, out + row * dim, add_r, eid, w, part, n, dim, c0, c1, u, first);
    }
}

// One block per row: warp w weighs experts w, w + 8, ... (or, with the row's down dots `dots` [E] given, thread t
// weighs experts t, t + 256, ... from them); then thread t sums columns 4t, 4t + 1024, ... over all experts.
template <typename T, int V>
__device__ __forceinline__ void mix_row(const T *x, const T *down, const T *up, T *out, const T *add, const float *dots,
                                        const int *eid, float *w, const int n, const int dim, const int act,
                                        const int after) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (dots != nullptr) {
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const float d = dots[eid[j]];
            w[j] = after ? activate(d * w[j], act) : activate(d, act) * w[j];
        }
    }
    for (int j = warp; j < n && dots == nullptr; j += warps) {
        const long eo = (long)eid[j] * dim;
        float d = 0.0f;
        for (int c = V * lane; c < dim; c += 32 * V) {
            float a[V], b[V];
            ldv(x, c, a);
            ldv(down, eo + c, b);
#pragma unroll
            for (int i = 0; i < V; ++i) d += a[i] * b[i];
        }
        d = warp_sum(d);
        if (lane == 0) w[j] = after ? activate(d * w[j], act) : activate(d, act) * w[j];
    }
    __syncthreads();
    for (int c = V * threadIdx.x; c < dim; c += V * blockDim.x) {
        float acc[V];
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] = 0.0f;
        for (int j = 0; j < n; ++j) {
            float u[V];
            ldv(up, (long)eid[j] * dim + c, u);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[i] += w[j] * u[i];
        }
        put(out, add, c, acc);
    }
}

template <typename T>
__device__ void expert_mix_rows(const T *x, const float *scores, const long long *ids, const T *down, const T *up,
                                T *out, const T *add, const float *dots, const int heads, const int k, const int dim,
                                const long long num_experts, const int act, const int after, const int norm) {
    __shared__ float w[EM_MAX_SEL];
    __shared__ int eid[EM_MAX_SEL];
    __shared__ int bad;
    const long row = blockIdx.x;
    const int n = heads * k;
    const long xo = row * dim;
    const bool vec = dim % 4 == 0 && aligned4(x) && aligned4(down) && aligned4(up) && aligned4(out) && aligned4(add);
    routing(scores, ids, w, eid, &bad, row, heads, k, num_experts, norm);
    if (bad) {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            const float v[1] = {__int_as_float(0x7fc00000)};
            put(out, add, xo + c, v);
        }
        return;
    }
    const float *drow = dots != nullptr ? dots + row * num_experts : nullptr;
    if (vec) {
        mix_row<T, 4>(x + xo, down, up, out + xo, add_row(add, xo), drow, eid, w, n, dim, act, after);
    } else {
        mix_row<T, 1>(x + xo, down, up, out + xo, add_row(add, xo), drow, eid, w, n, dim, act, after);
    }
}

#define EXPERT_MIX(NAME, T)                                                                                             \
    extern "C" __global__ void __launch_bounds__(EM_THREADS)                                                            \
        expert_mix_##NAME(const T *x, const float *scores, const long long *ids, const T *down, const T *up, T *out,    \
                          const T *add, const int heads, const int k, const int dim, const long long num_experts,       \
                          const int act, const int after, const int norm, const int width, const int lanes) {           \
        grid_entry();                                                                                                   \
        expert_mix(x, scores, ids, down, up, out, add, heads, k, dim, num_experts, act, after, norm, width, lanes);     \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(EM_THREADS)                                                            \
        expert_mix_rows_##NAME(const T *x, const float *scores, const long long *ids, const T *down, const T *up,       \
                               T *out, const T *add, const float *dots, const int heads, const int k, const int dim,    \
                               const long long num_experts, const int act, const int after, const int norm) {           \
        grid_entry();                                                                                                   \
        expert_mix_rows(x, scores, ids, down, up, out, add, dots, heads, k, dim, num_experts, act, after, norm);        \
    }
EXPERT_MIX(f32, float)
EXPERT_MIX(bf16, bf16_t)
EXPERT_MIX(f16, f16_t)

#define EXPERT_SPLIT(NAME, T)                                                                                           \
    extern "C" __global__ void __launch_bounds__(EM_THREADS)                                                            \
        expert_weigh_##NAME(const T *x, const float *scores, const long long *ids, const T *down, float *w,             \
                            const int heads, const int k, const int dim, const long long num_experts, const int act,    \
                            const int after, const int norm) {                                                          \
        grid_entry();                                                                                                   \
        expert_weigh(x, scores, ids, down, w, heads, k, dim, num_experts, act, after, norm);                            \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(EM_THREADS)                                                            \
        expert_sum_##NAME(const long long *ids, const float *w, const T *up, T *out, const T *add, const int n,          \
                          const int dim, const long long num_experts, const int width) {                                \
        grid_entry();                                                                                                   \
        expert_sum(ids, w, up, out, add, n, dim, num_experts, width);                                                   \
    }
EXPERT_SPLIT(f32, float)
EXPERT_SPLIT(bf16, bf16_t)
EXPERT_SPLIT(f16, f16_t)
