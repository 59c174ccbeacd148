// y[i] = T(T(act(gate[i]))·up[i]): the activation is rounded to T before the product (PyTorch's order for bf16).
// act 0..3 = silu x/(1+e^-x), relu, gelu 0.5·x·erfc(-x/√2), gelu_tanh 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))).
// Layout: gate, up, y contiguous with n elements. Launch: 1-D grid of 256-thread blocks striding over groups of 4
// elements (4-wide loads when the buffers are aligned).
template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

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

template <typename T> __device__ void act_mul(const T *gate, const T *up, T *y, const long n, const int act) {
    const bool vec = aligned4(gate) && aligned4(up) && aligned4(y);
    for (long i = 4 * ((long)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += 4L * gridDim.x * blockDim.x) {
        if (vec && i + 4 <= n) {
            float g[4], u[4], v[4];
            ld4(gate, i, g);
            ld4(up, i, u);
            for (int t = 0; t < 4; ++t) v[t] = round_to<T>(activate(g[t], act)) * u[t];
            st4(y, i, v);
        } else {
            for (long t = i; t < min(i + 4, n); ++t) st(y, t, round_to<T>(activate(ld(gate, t), act)) * ld(up, t));
        }
    }
}

extern "C" __global__ void act_mul_f32(const float *gate, const float *up, float *y, const long n, const int act) {
    grid_entry();
    act_mul(gate, up, y, n, act);
}

extern "C" __global__ void act_mul_bf16(const bf16_t *gate, const bf16_t *up, bf16_t *y, const long n, const int act) {
    grid_entry();
    act_mul(gate, up, y, n, act);
}
