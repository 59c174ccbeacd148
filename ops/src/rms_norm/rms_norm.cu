// y[r, c] = w[c] * T(x[r, c] * rsqrt(mean_c(x[r, :]^2) + eps)), statistics in f32 (PyTorch's order for bf16).
// Layout: x, y are [rows, cols] row-major and contiguous; w is [cols].
// Launch: one block per row, blockDim.x a multiple of 32 and at most 1024.
template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ float round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_to<bf16_t>(float v) { return bf16_to_f32(f32_to_bf16(v)); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

template <typename T>
__device__ void rms_norm(const T *x, const T *w, T *y, const int cols, const float eps) {
    __shared__ float scratch[32];
    const long row = (long)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = ld(x, row + c);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        st(y, row + c, ld(w, c) * round_to<T>(ld(x, row + c) * inv));
    }
}

extern "C" __global__ void rms_norm_f32(const float *x, const float *w, float *y, const int cols, const float eps) {
    rms_norm(x, w, y, cols, eps);
}

extern "C" __global__ void rms_norm_bf16(const bf16_t *x, const bf16_t *w, bf16_t *y, const int cols, const float eps) {
    rms_norm(x, w, y, cols, eps);
}
