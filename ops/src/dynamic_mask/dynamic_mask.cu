// m[b, h, j] = exp(a[h] * softplus(dt[b, j, h])), softplus(z) = z if z > 20 else log1p(exp(z)); all in f32.
// Layout: dt [B, S, Hm] (f32 or bf16), a [Hm] f32, m [B, Hm, S] f32, all contiguous.
// Launch: one thread per element of m, grid-stride, any 1-D grid and block.
// dynamic_mask_at_*: m is a cache [B, Hm, cap] and key j goes to slot *pos + j (slots outside [0, cap)
// are not written).

template <typename E>
__device__ void dynamic_mask(const E *dt, const float *a, float *m, const int S, const int Hm, const long n,
                             const long long *pos, const long cap) {
    const long at = pos != nullptr ? (long)*pos : 0, row = pos != nullptr ? cap : (long)S;
    for (long o = (long)blockIdx.x * blockDim.x + threadIdx.x; o < n; o += (long)gridDim.x * blockDim.x) {
        const long j = o % S, bh = o / S, h = bh % Hm, b = bh / Hm;
        if (at + j >= 0 && at + j < row) m[bh * row + at + j] = expf(a[h] * softplus_f32(ld(dt, (b * S + j) * Hm + h)));
    }
}

#define INSTANTIATE(E, NAME)                                                                                       \
    extern "C" __global__ void dynamic_mask_##NAME(const E *dt, const float *a, float *m, const int S, const int Hm, \
                                                   const long n) {                                                 \
        grid_entry();                                                                                              \
        dynamic_mask(dt, a, m, S, Hm, n, nullptr, 0);                                                              \
    }                                                                                                              \
    extern "C" __global__ void dynamic_mask_at_##NAME(const E *dt, const float *a, float *m, const int S,          \
                                                      const int Hm, const long n, const long long *pos,             \
                                                      const long cap) {                                             \
        grid_entry();                                                                                              \
        dynamic_mask(dt, a, m, S, Hm, n, pos, cap);                                                                \
    }
INSTANTIATE(float, f32)
INSTANTIATE(bf16_t, bf16)
INSTANTIATE(f16_t, f16)
