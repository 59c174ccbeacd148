// out[r, :] = x[r, :] ⊙ Σ_h Σ_{n ∈ top-k(sim_h)} v_embed[n, :] (f32 sum), sim_h[n] = Σ_i vq[r, h, i]·v_keys[h, i, n]
// (f64 in the CPU kernel's order, then f32); top-k by a bitonic sort: larger first, NaN largest, ties to the lower n.
// Layout: x, out [rows, dim]; vq [rows, Hv, Rv]; v_keys [Hv, Rv, Nv]; v_embed [Nv, dim]; all T.
// Launch: one block of 256 threads per row; Nv ≤ 4096 and Hv·k ≤ 4096 (shared memory: 32 KB).
#define IV_MAX_VALUES 4096
#define IV_MAX_SEL 4096

// Sorts key/idx[0..p2) (p2 a power of two) into `ranks_before` order.
__device__ void bitonic_sort(float *key, unsigned short *idx, const int p2) {
    for (int size = 2; size <= p2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < p2 / 2; t += blockDim.x) {
                const int i = 2 * stride * (t / stride) + t % stride, j = i + stride;
                const bool swap = (i & size) == 0 ? ranks_before(key[j], idx[j], key[i], idx[i])
                                                  : ranks_before(key[i], idx[i], key[j], idx[j]);
                if (swap) {
                    const float kt = key[i];
                    key[i] = key[j], key[j] = kt;
                    const unsigned short it = idx[i];
                    idx[i] = idx[j], idx[j] = it;
                }
            }
            __syncthreads();
        }
    }
}

template <typename T>
__device__ void inner_values(const T *x, const T *vq, const T *v_keys, const T *v_embed, T *out, const int heads,
                             const int rv, const int nv, const int k, const int dim) {
    __shared__ float key[IV_MAX_VALUES];
    __shared__ unsigned short idx[IV_MAX_VALUES];
    __shared__ unsigned short sel[IV_MAX_SEL];
    const long row = blockIdx.x;
    int p2 = 1;
    while (p2 < nv) p2 <<= 1;
    for (int h = 0; h < heads && k > 0; ++h) {
        const long qo = (row * heads + h) * (long)rv;
        for (int n = threadIdx.x; n < p2; n += blockDim.x) {
            if (n < nv) {
                double s = 0.0;
                for (int i = 0; i < rv; ++i) {
                    s += (double)ld(vq, qo + i) * (double)ld(v_keys, ((long)h * rv + i) * nv + n);
                }
                key[n] = (float)s;
                idx[n] = (unsigned short)n;
            } else {
                key[n] = __int_as_float(0xff800000);
                idx[n] = 0xffff;
            }
        }
        __syncthreads();
        bitonic_sort(key, idx, p2);
        for (int j = threadIdx.x; j < k; j += blockDim.x) sel[h * k + j] = idx[j];
        __syncthreads();
    }
    const int n = k > 0 ? heads * k : 0;
    const long xo = row * dim;
    if (dim % 4 == 0 && aligned4(x) && aligned4(v_embed) && aligned4(out)) {
        for (int c = 4 * threadIdx.x; c < dim; c += 4 * blockDim.x) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, xv[4];
            for (int j = 0; j < n; ++j) {
                float v[4];
                ld4(v_embed, (long)sel[j] * dim + c, v);
                for (int i = 0; i < 4; ++i) acc[i] += v[i];
            }
            ld4(x, xo + c, xv);
            for (int i = 0; i < 4; ++i) acc[i] = __fmul_rn(xv[i], acc[i]);
            st4(out, xo + c, acc);
        }
    } else {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < n; ++j) acc += ld(v_embed, (long)sel[j] * dim + c);
            st(out, xo + c, __fmul_rn(ld(x, xo + c), acc));
        }
    }
}

extern "C" __global__ void inner_values_f32(const float *x, const float *vq, const float *v_keys,
                                            const float *v_embed, float *out, const int heads, const int rv,
                                            const int nv, const int k, const int dim) {
    grid_entry();
    inner_values(x, vq, v_keys, v_embed, out, heads, rv, nv, k, dim);
}

extern "C" __global__ void inner_values_bf16(const bf16_t *x, const bf16_t *vq, const bf16_t *v_keys,
                                             const bf16_t *v_embed, bf16_t *out, const int heads, const int rv,
                                             const int nv, const int k, const int dim) {
    grid_entry();
    inner_values(x, vq, v_keys, v_embed, out, heads, rv, nv, k, dim);
}

extern "C" __global__ void inner_values_f16(const f16_t *x, const f16_t *vq, const f16_t *v_keys,
                                             const f16_t *v_embed, f16_t *out, const int heads, const int rv,
                                             const int nv, const int k, const int dim) {
    grid_entry();
    inner_values(x, vq, v_keys, v_embed, out, heads, rv, nv, k, dim);
}
