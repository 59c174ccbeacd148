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
    bias_add(y, bias, n, out);
}
extern "C" __global__ void bias_add_bf16(bf16_t *y, const bf16_t *bias, const long n, const int out) {
    bias_add(y, bias, n, out);
}
