// y = rope(rms_norm(x, w)) per head: n[c] = T(w[c] * T(x[c] * rsqrt(mean(x^2) + eps))) as rms_norm.cu stores it, then
// y[c] = rope_rotate(n[c], n[c ± half], cos[c], sin[c]) as rope.cu rotates it (c < half takes -n[c + half]).
// Layout: x, y [rows, heads, dim] in T; w [dim]; cos, sin [rows, dim]. Launch: one block per (row, head),
// blockDim.x = min(1024, dim rounded up to 32) (rms_norm's, so the sum of squares adds in its order), dim floats
// of dynamic shared memory.

template <typename T>
__device__ void norm_rope(const T *x, const T *w, const T *cos_t, const T *sin_t, T *y, const int heads, const int dim,
                          const float eps) {
    extern __shared__ float normed[];
    __shared__ float scratch[32];
    const long base = (long)blockIdx.x * dim, cs = (long)(blockIdx.x / heads) * dim;
    const int half = dim / 2;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const float v = ld(x, base + c);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
        normed[c] = round_to<T>(ld(w, c) * round_to<T>(ld(x, base + c) * inv));
    __syncthreads();
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const bool lower = c < half;
        const float partner = normed[lower ? c + half : c - half];
        st(y, base + c, rope_rotate<T>(normed[c], partner, ld(cos_t, cs + c), ld(sin_t, cs + c), lower));
    }
}

extern "C" __global__ void norm_rope_f32(const float *x, const float *w, const float *cos_t, const float *sin_t,
                                         float *y, const int heads, const int dim, const float eps) {
    grid_entry();
    norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps);
}

extern "C" __global__ void norm_rope_bf16(const bf16_t *x, const bf16_t *w, const bf16_t *cos_t, const bf16_t *sin_t,
                                          bf16_t *y, const int heads, const int dim, const float eps) {
    grid_entry();
    norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps);
}
