// out[r] = Σ_{h,j} w·up[e], e = ids[r,h,j], w = act(x[r]·down[e])·p or act(x[r]·down[e]·p), p = softmax_j(scores[r,h,:])
// (÷ Σ_j p when norm); f32 math; a row with an id outside 0..E is written as NaN and no row outside 0..E is read.
// Layout: x, out [rows, dim]; down, up [E, dim] in T; scores f32, ids i64 [rows, heads, k]; act 0..3 = silu, relu, gelu, gelu_tanh.
// Launch: one block of 256 threads per row; heads·k ≤ 1024; 4-wide loads when dim % 4 == 0 and the buffers are aligned.
#define EM_MAX_SEL 1024

template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

// Elements i..i+3 (i a multiple of 4, p aligned to 4 elements).
__device__ __forceinline__ void ld4(const float *p, long i, float v[4]) {
    const float4 t = *reinterpret_cast<const float4 *>(p + i);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void ld4(const bf16_t *p, long i, float v[4]) {
    const uint2 t = *reinterpret_cast<const uint2 *>(p + i);
    v[0] = __uint_as_float(t.x << 16), v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16), v[3] = __uint_as_float(t.y & 0xffff0000u);
}
__device__ __forceinline__ void st4(float *p, long i, const float v[4]) {
    *reinterpret_cast<float4 *>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(bf16_t *p, long i, const float v[4]) {
    uint2 t;
    t.x = (unsigned int)f32_to_bf16(v[0]) | ((unsigned int)f32_to_bf16(v[1]) << 16);
    t.y = (unsigned int)f32_to_bf16(v[2]) | ((unsigned int)f32_to_bf16(v[3]) << 16);
    *reinterpret_cast<uint2 *>(p + i) = t;
}
template <typename T> __device__ __forceinline__ bool aligned4(const T *p) {
    return ((unsigned long long)p & (4 * sizeof(T) - 1)) == 0;
}

__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
    case 0: return x / (1.0f + expf(-x));
    case 1: return x < 0.0f ? 0.0f : x;
    case 2: return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    default: return 0.5f * x * (1.0f + tanhf(0.7978846f * (x + 0.044715f * (x * x * x))));
    }
}

template <typename T>
__device__ void expert_mix(const T *x, const float *scores, const long long *ids, const T *down, const T *up, T *out,
                           const int heads, const int k, const int dim, const long long num_experts, const int act,
                           const int after, const int norm) {
    __shared__ float w[EM_MAX_SEL];
    __shared__ int eid[EM_MAX_SEL];
    __shared__ int bad;
    const long row = blockIdx.x;
    const int n = heads * k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const bool vec = dim % 4 == 0 && aligned4(x) && aligned4(down) && aligned4(up) && aligned4(out);
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const long long id = ids[row * n + j];
        const bool ok = id >= 0 && id < num_experts;
        if (!ok) bad = 1;
        eid[j] = ok ? (int)id : 0;
    }
    for (int h = warp; h < heads; h += warps) {
        const float *s = scores + (row * heads + h) * (long)k;
        float *p = w + h * k;
        float m = __int_as_float(0xff800000);
        for (int j = lane; j < k; j += 32) m = fmaxf(m, s[j]);
        m = warp_max(m);
        float sum = 0.0f;
        for (int j = lane; j < k; j += 32) sum += expf(s[j] - m);
        sum = warp_sum(sum);
        float total = 0.0f;
        for (int j = lane; j < k; j += 32) {
            p[j] = expf(s[j] - m) / sum;
            total += p[j];
        }
        total = warp_sum(total);
        if (norm) {
            for (int j = lane; j < k; j += 32) p[j] = p[j] / total;
        }
    }
    __syncthreads();
    const long xo = row * dim;
    for (int j = warp; j < n; j += warps) {
        const long eo = (long)eid[j] * dim;
        float d = 0.0f;
        if (vec) {
            for (int c = 4 * lane; c < dim; c += 128) {
                float a[4], b[4];
                ld4(x, xo + c, a);
                ld4(down, eo + c, b);
                d += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
            }
        } else {
            for (int c = lane; c < dim; c += 32) d += ld(x, xo + c) * ld(down, eo + c);
        }
        d = warp_sum(d);
        if (lane == 0) w[j] = after ? activate(d * w[j], act) : activate(d, act) * w[j];
    }
    __syncthreads();
    if (bad) {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) st(out, xo + c, __int_as_float(0x7fc00000));
        return;
    }
    if (vec) {
        for (int c = 4 * threadIdx.x; c < dim; c += 4 * blockDim.x) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int j = 0; j < n; ++j) {
                float u[4];
                ld4(up, (long)eid[j] * dim + c, u);
                for (int i = 0; i < 4; ++i) acc[i] += w[j] * u[i];
            }
            st4(out, xo + c, acc);
        }
    } else {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < n; ++j) acc += w[j] * ld(up, (long)eid[j] * dim + c);
            st(out, xo + c, acc);
        }
    }
}

extern "C" __global__ void expert_mix_f32(const float *x, const float *scores, const long long *ids, const float *down,
                                          const float *up, float *out, const int heads, const int k, const int dim,
                                          const long long num_experts, const int act, const int after, const int norm) {
    expert_mix(x, scores, ids, down, up, out, heads, k, dim, num_experts, act, after, norm);
}

extern "C" __global__ void expert_mix_bf16(const bf16_t *x, const float *scores, const long long *ids,
                                           const bf16_t *down, const bf16_t *up, bf16_t *out, const int heads,
                                           const int k, const int dim, const long long num_experts, const int act,
                                           const int after, const int norm) {
    expert_mix(x, scores, ids, down, up, out, heads, k, dim, num_experts, act, after, norm);
}
