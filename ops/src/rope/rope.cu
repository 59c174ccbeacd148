// tables: cos[n, i] = cos[n, half + i] = T(f32(cos(f64(f32(pos[n])·inv_freq[i])))), sin alike (i < half; one f32 rounding).
// apply: y[i] = x[i]·cos[i] − x[half+i]·sin[i], y[half+i] = x[half+i]·cos[half+i] + x[i]·sin[half+i] per head
// (rope_rotate in common.cuh: each product rounded to T, then the sum). Layout: pos i64 [N], inv_freq f32
// [half], cos/sin [N, 2·half], x/y [rows, heads, dim] in T. Launch: 1-D grids of 256 threads striding over (n, i) / (r, h, i).
// rope_apply_at_*: y is a cache [B, heads, cap, dim] and row r = b·S + j of x goes to slot *pos + j of sequence b
// (slots outside [0, cap) are not written), as place_rows (elementwise.cu) puts rows of [B, S, heads, dim] permuted;
// the position, which a copy before the step writes and no kernel does, is loaded before grid_entry().

#define GRID_STRIDE(t, n)                                                                                              \
    for (long t = (long)blockIdx.x * blockDim.x + threadIdx.x; t < (n); t += (long)gridDim.x * blockDim.x)

template <typename T>
__device__ void rope_tables(const long long *pos, const float *inv_freq, T *cos_t, T *sin_t, const long n,
                            const int half) {
    GRID_STRIDE(t, n * half) {
        const long row = t / half;
        const int i = (int)(t % half);
        const float f = __fmul_rn((float)pos[row], inv_freq[i]);
        double s, c;
        sincos((double)f, &s, &c);
        const long o = row * 2 * half + i;
        st(cos_t, o, (float)c);
        st(cos_t, o + half, (float)c);
        st(sin_t, o, (float)s);
        st(sin_t, o + half, (float)s);
    }
}

template <typename T>
__device__ void rope_apply(const T *x, const T *cos_t, const T *sin_t, T *y, const long rows, const int heads,
                           const int dim, const int S, const long long *pos, const long cap) {
    const int half = dim / 2;
    const long at = pos != nullptr ? (long)*pos : 0;
    grid_entry();
    GRID_STRIDE(t, rows * heads * half) {
        const long rh = t / half;
        const int i = (int)(t % half);
        const long r = rh / heads, base = rh * dim, cs = r * dim;
        long out = base;
        if (pos != nullptr) {
            const long slot = at + r % S;
            if (slot < 0 || slot >= cap) continue;
            out = (((r / S) * heads + rh % heads) * cap + slot) * dim;
        }
        const float a = ld(x, base + i), b = ld(x, base + half + i);
        st(y, out + i, rope_rotate<T>(a, b, ld(cos_t, cs + i), ld(sin_t, cs + i), true));
        st(y, out + half + i, rope_rotate<T>(b, a, ld(cos_t, cs + half + i), ld(sin_t, cs + half + i), false));
    }
}

extern "C" __global__ void rope_tables_f32(const long long *pos, const float *inv_freq, float *cos_t, float *sin_t,
                                           const long n, const int half) {
    grid_entry();
    rope_tables(pos, inv_freq, cos_t, sin_t, n, half);
}

extern "C" __global__ void rope_tables_bf16(const long long *pos, const float *inv_freq, bf16_t *cos_t, bf16_t *sin_t,
                                            const long n, const int half) {
    grid_entry();
    rope_tables(pos, inv_freq, cos_t, sin_t, n, half);
}

extern "C" __global__ void rope_tables_f16(const long long *pos, const float *inv_freq, f16_t *cos_t, f16_t *sin_t,
                                            const long n, const int half) {
    grid_entry();
    rope_tables(pos, inv_freq, cos_t, sin_t, n, half);
}

#define INSTANTIATE_APPLY(T, NAME)                                                                                 \
    extern "C" __global__ void rope_apply_##NAME(const T *x, const T *cos_t, const T *sin_t, T *y, const long rows, \
                                                 const int heads, const int dim) {                                 \
        rope_apply(x, cos_t, sin_t, y, rows, heads, dim, 1, nullptr, 0);                                           \
    }                                                                                                              \
    extern "C" __global__ void rope_apply_at_##NAME(const T *x, const T *cos_t, const T *sin_t, T *y,                \
                                                    const long rows, const int heads, const int dim, const int S,  \
                                                    const long long *pos, const long cap) {                        \
        rope_apply(x, cos_t, sin_t, y, rows, heads, dim, S, pos, cap);                                             \
    }
INSTANTIATE_APPLY(float, f32)
INSTANTIATE_APPLY(bf16_t, bf16)
INSTANTIATE_APPLY(f16_t, f16)
