// Glue: y = a + b; y = w[c]*res + f; y = x*mask[row]; [A,B,C,D] -> [A,C,B,D]; concat along an axis; casts.
// Layout: contiguous row-major buffers; element i of a [rows, cols] view is (i / cols, i % cols).
// Launch: grid-stride loops over the output elements, 256 threads per block.

#define GRID_STRIDE(i, n) for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

template <typename T> __device__ void add(const T *a, const T *b, T *y, long n) {
    GRID_STRIDE(i, n) st(y, i, ld(a, i) + ld(b, i));
}
template <typename T> __device__ void scaled_residual(const T *w, const T *res, const T *f, T *y, long n, int cols) {
    GRID_STRIDE(i, n) st(y, i, __fadd_rn(__fmul_rn(ld(w, i % cols), ld(res, i)), ld(f, i)));
}
template <typename T> __device__ void mask_rows(const T *x, const long long *mask, T *y, long n, int cols) {
    GRID_STRIDE(i, n) st(y, i, ld(x, i) * (float)mask[i / cols]);
}
template <typename T> __device__ void swap_axes_12(const T *x, T *y, long n, int b, int c, int d) {
    GRID_STRIDE(i, n) {
        const long id = i % d, r = i / d;
        const long ib = r % b, r2 = r / b;
        const long ic = r2 % c, ia = r2 / c;
        y[i] = x[((ia * b + ib) * c + ic) * d + id];
    }
}
template <typename T> __device__ void concat(const T *x, const T *y, T *out, long n, long inner_a, long inner_b) {
    const long row = inner_a + inner_b;
    GRID_STRIDE(i, n) {
        const long o = i / row, j = i % row;
        out[i] = j < inner_a ? x[o * inner_a + j] : y[o * inner_b + (j - inner_a)];
    }
}

template <typename T> __device__ void slice_cols(const T *x, T *y, long n, long cols, long start, long len) {
    GRID_STRIDE(i, n) y[i] = x[(i / len) * cols + start + i % len];
}

// dst[o, pos + r, :] = x[o, r, :] for r < rows, with dst of cap rows per o and pos read from the device (a cache
// append whose offset a replayed graph cannot bake in); rows pos + r outside [0, cap) are not written.
// n = outer·rows·inner.
template <typename T>
__device__ void place_rows(const T *x, T *dst, const long long *pos, long n, long rows, long inner, long cap) {
    const long p = *pos;
    GRID_STRIDE(i, n) {
        const long per = rows * inner, o = i / per, j = i % per, at = p + j / inner;
        if (at >= 0 && at < cap) dst[o * cap * inner + p * inner + j] = x[i];
    }
}

#define INSTANTIATE(T, S)                                                                                          \
    extern "C" __global__ void add_##S(const T *a, const T *b, T *y, long n) {                                     \
        grid_entry();                                                                                              \
        add(a, b, y, n);                                                                                           \
    }                                                                                                              \
    extern "C" __global__ void scaled_residual_##S(const T *w, const T *r, const T *f, T *y, long n, int cols) {   \
        grid_entry();                                                                                              \
        scaled_residual(w, r, f, y, n, cols);                                                                      \
    }                                                                                                              \
    extern "C" __global__ void mask_rows_##S(const T *x, const long long *m, T *y, long n, int cols) {             \
        grid_entry();                                                                                              \
        mask_rows(x, m, y, n, cols);                                                                               \
    }                                                                                                              \
    extern "C" __global__ void swap_axes_12_##S(const T *x, T *y, long n, int b, int c, int d) {                   \
        grid_entry();                                                                                              \
        swap_axes_12(x, y, n, b, c, d);                                                                            \
    }                                                                                                              \
    extern "C" __global__ void slice_cols_##S(const T *x, T *y, long n, long cols, long start, long len) {         \
        grid_entry();                                                                                              \
        slice_cols(x, y, n, cols, start, len);                                                                     \
    }                                                                                                              \
    extern "C" __global__ void concat_##S(const T *x, const T *y, T *out, long n, long ia, long ib) {              \
        grid_entry();                                                                                              \
        concat(x, y, out, n, ia, ib);                                                                              \
    }

#define INSTANTIATE_PLACE(T, S)                                                                                    \
    extern "C" __global__ void place_rows_##S(const T *x, T *dst, const long long *pos, long n, long rows, long inner, \
                                              long cap) {                                                                \
        grid_entry();                                                                                                    \
        place_rows(x, dst, pos, n, rows, inner, cap);                                                                    \
    }

INSTANTIATE_PLACE(float, f32)
INSTANTIATE_PLACE(bf16_t, bf16)
INSTANTIATE_PLACE(f16_t, f16)
INSTANTIATE_PLACE(long long, i64)
INSTANTIATE(float, f32)
INSTANTIATE(bf16_t, bf16)
INSTANTIATE(f16_t, f16)

extern "C" __global__ void cast_f32_bf16(const float *x, bf16_t *y, long n) {
    grid_entry();
    GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void cast_f32_f16(const float *x, f16_t *y, long n) {
    grid_entry();
    GRID_STRIDE(i, n) y[i] = f32_to_f16(x[i]);
}
extern "C" __global__ void cast_bf16_f32(const bf16_t *x, float *y, long n) {
    grid_entry();
    GRID_STRIDE(i, n) y[i] = bf16_to_f32(x[i]);
}

extern "C" __global__ void cast_f16_f32(const f16_t *x, float *y, long n) {
    grid_entry();
    GRID_STRIDE(i, n) y[i] = f16_to_f32(x[i]);
}
