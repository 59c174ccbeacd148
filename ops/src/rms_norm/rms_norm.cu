// y[r, c] = w[c] * T(x[r, c] * rsqrt(mean_c(x[r, :]^2) + eps)), statistics in f32 (PyTorch's order for bf16).
// Layout: x, y are [rows, cols] row-major and contiguous; w is [cols].
// Launch: one block per row, blockDim.x a multiple of 32 and at most 1024. With a column a thread (cols ≤ blockDim.x)
// the weights (and the residual scale below), constants, are loaded before grid_entry() and each value stays in a
// register between the sum and the store.

template <typename T>
__device__ void rms_norm(const T *x, const T *w, T *y, const int cols, const float eps) {
    __shared__ float scratch[32];
    const long row = (long)blockIdx.x * cols;
    const int t = threadIdx.x;
    const bool held = cols <= blockDim.x;
    auto normed = [](float wc, float v, float inv) { return wc * round_to<T>(v * inv); };
    float wt = 0.0f;
    if (held && t < cols) wt = ld(w, t);
    grid_entry();
    if (held) {
        float v = 0.0f, ss = 0.0f;
        if (t < cols) {
            v = ld(x, row + t);
            ss += v * v;
        }
        const float inv = rsqrtf(block_sum(ss, scratch) / (float)cols + eps);
        if (t < cols) st(y, row + t, normed(wt, v, inv));
        return;
    }
    float ss = 0.0f;
    for (int c = t; c < cols; c += blockDim.x) {
        const float v = ld(x, row + c);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)cols + eps);
    for (int c = t; c < cols; c += blockDim.x) st(y, row + c, normed(ld(w, c), ld(x, row + c), inv));
}

extern "C" __global__ void rms_norm_f32(const float *x, const float *w, float *y, const int cols, const float eps) {
    rms_norm(x, w, y, cols, eps);
}

extern "C" __global__ void rms_norm_bf16(const bf16_t *x, const bf16_t *w, bf16_t *y, const int cols, const float eps) {
    rms_norm(x, w, y, cols, eps);
}

extern "C" __global__ void rms_norm_f16(const f16_t *x, const f16_t *w, f16_t *y, const int cols, const float eps) {
    rms_norm(x, w, y, cols, eps);
}

// Fused learned residual and norm: h = s[c]*r + f (or r + f without s), y = w[c] * T(h * rsqrt(mean(h^2) + eps)).
// Layout: r, f, h, y are [rows, cols]; s and w are [cols]. Launch: as rms_norm; h is rounded to T before the norm.
template <typename T>
__device__ void residual_rms_norm(const T *s, const T *r, const T *f, const T *w, T *h, T *y, const int cols,
                                  const float eps) {
    __shared__ float scratch[32];
    const long row = (long)blockIdx.x * cols;
    const int t = threadIdx.x;
    const bool held = cols <= blockDim.x;
    auto residual = [&](float scale, int c) {
        return round_to<T>(__fadd_rn(__fmul_rn(scale, ld(r, row + c)), ld(f, row + c)));
    };
    auto normed = [](float wc, float v, float inv) { return wc * round_to<T>(v * inv); };
    float scale_t = 1.0f, wt = 0.0f;
    if (held && t < cols) {
        if (s) scale_t = ld(s, t);
        wt = ld(w, t);
    }
    grid_entry();
    if (held) {
        float v = 0.0f, ss = 0.0f;
        if (t < cols) {
            v = residual(scale_t, t);
            st(h, row + t, v);
            ss += v * v;
        }
        const float inv = rsqrtf(block_sum(ss, scratch) / (float)cols + eps);
        if (t < cols) st(y, row + t, normed(wt, v, inv));
        return;
    }
    float ss = 0.0f;
    for (int c = t; c < cols; c += blockDim.x) {
        const float v = residual(s ? ld(s, c) : 1.0f, c);
        st(h, row + c, v);
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)cols + eps);
    for (int c = t; c < cols; c += blockDim.x) st(y, row + c, normed(ld(w, c), ld(h, row + c), inv));
}

extern "C" __global__ void residual_rms_norm_f32(const float *s, const float *r, const float *f, const float *w,
                                                 float *h, float *y, const int cols, const float eps) {
    residual_rms_norm(s, r, f, w, h, y, cols, eps);
}

extern "C" __global__ void residual_rms_norm_bf16(const bf16_t *s, const bf16_t *r, const bf16_t *f, const bf16_t *w,
                                                  bf16_t *h, bf16_t *y, const int cols, const float eps) {
    residual_rms_norm(s, r, f, w, h, y, cols, eps);
}

extern "C" __global__ void residual_rms_norm_f16(const f16_t *s, const f16_t *r, const f16_t *f, const f16_t *w,
                                                  f16_t *h, f16_t *y, const int cols, const float eps) {
    residual_rms_norm(s, r, f, w, h, y, cols, eps);
}
