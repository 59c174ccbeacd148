// y = rope(rms_norm(x, w)) per head: n[c] = T(w[c] * T(x[c] * rsqrt(mean(x^2) + eps))) as rms_norm.cu stores it, then
// y[c] = rope_rotate(n[c], n[c ± half], cos[c], sin[c]) as rope.cu rotates it (c < half takes -n[c + half]).
// Layout: x, y [rows, heads, dim] in T; w [dim]; cos, sin [rows, dim]. Launch: one block per (row, head),
// blockDim.x = min(1024, dim rounded up to 32) (rms_norm's, so the sum of squares adds in its order), dim floats
// of dynamic shared memory. Thread t's first column is t: its w, a constant, is loaded before grid_entry(), and its x,
// cos and sin together after it, kept in registers, so that with a column a thread nothing is loaded twice.

template <typename T>
__device__ void norm_rope(const T *x, const T *w, const T *cos_t, const T *sin_t, T *y, const int heads, const int dim,
                          const float eps) {
    extern __shared__ float normed[];
    __shared__ float scratch[32];
    const long base = (long)blockIdx.x * dim, cs = (long)(blockIdx.x / heads) * dim;
    const int half = dim / 2, t = threadIdx.x;
    const float wt = t < dim ? ld(w, t) : 0.0f;
    grid_entry();
    float vt = 0.0f, cos_v = 0.0f, sin_v = 0.0f, ss = 0.0f;
    for (int c = t; c < dim; c += blockDim.x) {
        const float v = ld(x, base + c);
        if (c == t) vt = v, cos_v = ld(cos_t, cs + t), sin_v = ld(sin_t, cs + t);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
    for (int c = t; c < dim; c += blockDim.x) {
        const float v = c == t ? vt : ld(x, base + c);
        normed[c] = round_to<T>((c == t ? wt : ld(w, c)) * round_to<T>(v * inv));
    }
    __syncthreads();
    for (int c = t; c < dim; c += blockDim.x) {
        const bool lower = c < half;
        const float partner = normed[lower ? c + half : c - half];
        const float cc = c == t ? cos_v : ld(cos_t, cs + c), sc = c == t ? sin_v : ld(sin_t, cs + c);
        st(y, base + c, rope_rotate<T>(normed[c], partner, cc, sc, lower));
    }
}

extern "C" __global__ void norm_rope_f32(const float *x, const float *w, const float *cos_t, const float *sin_t,
                                         float *y, const int heads, const int dim, const float eps) {
    norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps);
}

extern "C" __global__ void norm_rope_bf16(const bf16_t *x, const bf16_t *w, const bf16_t *cos_t, const bf16_t *sin_t,
                                          bf16_t *y, const int heads, const int dim, const float eps) {
    norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps);
}
