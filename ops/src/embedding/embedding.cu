// y[n, :] = table[ids[n], :]; an id outside 0..rows writes row n as NaN and reads nothing.
// Layout: table [rows, dim], y [N, dim] in T; ids i64 [N].
// Launch: one block of 256 threads per id, striding over the row (16-byte copies when dim·sizeof(T) % 16 == 0
// and both buffers are 16-byte aligned).
template <typename T> __device__ __forceinline__ T nan_of();
template <> __device__ __forceinline__ float nan_of<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ bf16_t nan_of<bf16_t>() { return (bf16_t)0x7fc0; }
template <> __device__ __forceinline__ f16_t nan_of<f16_t>() { return (f16_t)0x7e00; }

template <typename T>
__device__ void embedding(const T *table, const long long *ids, T *y, const long long rows, const int dim) {
    const long n = blockIdx.x;
    const long long id = ids[n];
    T *dst = y + n * dim;
    if (id < 0 || id >= rows) {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = nan_of<T>();
        return;
    }
    const T *src = table + id * dim;
    const int bytes = dim * (int)sizeof(T);
    if (bytes % 16 == 0 && ((unsigned long long)table & 15) == 0 && ((unsigned long long)y & 15) == 0) {
        const uint4 *s = reinterpret_cast<const uint4 *>(src);
        uint4 *d = reinterpret_cast<uint4 *>(dst);
        for (int c = threadIdx.x; c < bytes / 16; c += blockDim.x) d[c] = s[c];
    } else {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
    }
}

extern "C" __global__ void embedding_f32(const float *table, const long long *ids, float *y, const long long rows,
                                         const int dim) {
    grid_entry();
    embedding(table, ids, y, rows, dim);
}

extern "C" __global__ void embedding_bf16(const bf16_t *table, const long long *ids, bf16_t *y, const long long rows,
                                          const int dim) {
    grid_entry();
    embedding(table, ids, y, rows, dim);
}

extern "C" __global__ void embedding_f16(const f16_t *table, const long long *ids, f16_t *y, const long long rows,
                                          const int dim) {
    grid_entry();
    embedding(table, ids, y, rows, dim);
}
