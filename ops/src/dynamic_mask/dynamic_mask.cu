// m[b, h, j] = exp(a[h] * softplus(dt[b, j, h])), softplus(z) = z if z > 20 else log1p(exp(z)); all in f32.
// Layout: dt [B, S, Hm] (f32 or bf16), a [Hm] f32, m [B, Hm, S] f32, all contiguous.
// Launch: one thread per element of m, grid-stride, any 1-D grid and block.

template <typename E>
__device__ void dynamic_mask(const E *dt, const float *a, float *m, const int S, const int Hm, const long n) {
    for (long o = (long)blockIdx.x * blockDim.x + threadIdx.x; o < n; o += (long)gridDim.x * blockDim.x) {
        const long j = o % S, bh = o / S, h = bh % Hm, b = bh / Hm;
        m[o] = expf(a[h] * softplus_f32(ld(dt, (b * S + j) * Hm + h)));
    }
}

extern "C" __global__ void dynamic_mask_f32(const float *dt, const float *a, float *m, const int S, const int Hm,
                                            const long n) {
    grid_entry();
    dynamic_mask(dt, a, m, S, Hm, n);
}

extern "C" __global__ void dynamic_mask_bf16(const bf16_t *dt, const float *a, float *m, const int S, const int Hm,
                                             const long n) {
    grid_entry();
    dynamic_mask(dt, a, m, S, Hm, n);
}
