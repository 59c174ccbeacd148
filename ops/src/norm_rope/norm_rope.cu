// y = rope(rms_norm(x, w)) per head: n[c] = T(w[c] * T(x[c] * rsqrt(mean(x^2) + eps))) as rms_norm.cu stores it, then
// y[c] = rope_rotate(n[c], n[c ± half], cos[c], sin[c]) as rope.cu rotates it (c < half takes -n[c + half]).
// Layout: x, y [rows, heads, dim] in T; w [dim]; cos, sin [rows, dim]. Launch: one block per (row, head),
// blockDim.x = min(1024, dim rounded up to 32) (rms_norm's, so the sum of squares adds in its order), dim floats
// of dynamic shared memory. With a column a thread (dim ≤ blockDim.x) w, a constant, is loaded before grid_entry()
// and x, cos and sin together after it.
// norm_rope_at_*: y is a cache [B, heads, cap, dim] and row r = b·S + j of x goes to slot *pos + j of sequence b
// (slots outside [0, cap) are not written), as place_rows (elementwise.cu) puts rows of [B, S, heads, dim] permuted;
// the position, which a copy before the step writes and no kernel does, is loaded with w before grid_entry().

template <typename T>
__device__ void norm_rope(const T *x, const T *w, const T *cos_t, const T *sin_t, T *y, const int heads, const int dim,
                          const float eps, const int S, const long long *pos, const long cap) {
    extern __shared__ float n[];
    __shared__ float scratch[32];
    const long base = (long)blockIdx.x * dim, cs = (long)(blockIdx.x / heads) * dim;
    const int half = dim / 2, t = threadIdx.x;
    const bool held = dim <= blockDim.x;
    auto normed = [](float wc, float v, float inv) { return round_to<T>(wc * round_to<T>(v * inv)); };
    float wt = 0.0f;
    if (held && t < dim) wt = ld(w, t);
    const long at = pos != nullptr ? (long)*pos : 0;
    grid_entry();
    long out = base;
    if (pos != nullptr) {
        const long row = blockIdx.x / heads, slot = at + row % S;
        if (slot < 0 || slot >= cap) return;
        out = (((row / S) * heads + blockIdx.x % heads) * cap + slot) * dim;
    }
    if (held) {
        float v = 0.0f, cv = 0.0f, sv = 0.0f, ss = 0.0f;
        if (t < dim) {
            v = ld(x, base + t);
            cv = ld(cos_t, cs + t);
            sv = ld(sin_t, cs + t);
            ss += v * v;
        }
        const float inv = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
        if (t < dim) n[t] = normed(wt, v, inv);
        __syncthreads();
        if (t < dim) {
            const bool lower = t < half;
            st(y, out + t, rope_rotate<T>(n[t], n[lower ? t + half : t - half], cv, sv, lower));
        }
        return;
    }
    float ss = 0.0f;
    for (int c = t; c < dim; c += blockDim.x) {
        const float v = ld(x, base + c);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)dim + eps);
    for (int c = t; c < dim; c += blockDim.x) n[c] = normed(ld(w, c), ld(x, base + c), inv);
    __syncthreads();
    for (int c = t; c < dim; c += blockDim.x) {
        const bool lower = c < half;
        const float partner = n[lower ? c + half : c - half];
        st(y, out + c, rope_rotate<T>(n[c], partner, ld(cos_t, cs + c), ld(sin_t, cs + c), lower));
    }
}

#define INSTANTIATE(T, NAME)                                                                                       \
    extern "C" __global__ void norm_rope_##NAME(const T *x, const T *w, const T *cos_t, const T *sin_t, T *y,        \
                                                const int heads, const int dim, const float eps) {                 \
        norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps, 1, nullptr, 0);                                          \
    }                                                                                                              \
    extern "C" __global__ void norm_rope_at_##NAME(const T *x, const T *w, const T *cos_t, const T *sin_t, T *y,     \
                                                   const int heads, const int dim, const float eps, const int S,   \
                                                   const long long *pos, const long cap) {                         \
        norm_rope(x, w, cos_t, sin_t, y, heads, dim, eps, S, pos, cap);                                            \
    }
INSTANTIATE(float, f32)
INSTANTIATE(bf16_t, bf16)
INSTANTIATE(f16_t, f16)
