// sim[a][n] = q[r, a, h, :]·keys[h, n, a, :] (f64 sums rounded to f32, as the CPU kernel); (sx, ix), (sy, iy) = per-axis top-k;
// out = the k largest sx[i] + sy[j] with id ix[i]·nk + iy[j]; ties go to the lower index, then the lower (i, j).
// Layout: q [rows, 2, He, half], keys [He, nk, 2, half] in T; scores f32 and ids i64 [rows, He, k].
// Launch: one block of 256 threads per (row, head), blockIdx.x = row·He + head; nk ≤ 256; warp 0 merges the k rows.
#define PK_MAX_KEYS 256

template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }

// (va, ia) comes before (vb, ib): the larger value first, NaN largest, equal values by the lower index.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
    const bool na = va != va, nb = vb != vb;
    if (na || nb) return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

__device__ __forceinline__ double warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Values v[0..n) ranked in `before` order; the first `keep` land in sv, si.
__device__ void rank_sort(const float *v, int n, int keep, float *sv, int *si) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float vi = v[i];
        int rank = 0;
        for (int j = 0; j < n; ++j) rank += before(v[j], j, vi, i);
        if (rank < keep) {
            sv[rank] = vi;
            si[rank] = i;
        }
    }
}

// The first unmerged candidate among this lane's rows a ≡ lane (mod 32); row a holds sx[a] + sy[c] for
// next[a] ≤ c < min(ny, k / (a + 1)). No candidate gives (-inf, INT_MAX), which every candidate comes before.
__device__ __forceinline__ void lane_best(const float *sx, const float *sy, const int *next, int nx, int ny, int k,
                                          float &bv, int &ba) {
    bv = __int_as_float(0xff800000);
    ba = 0x7fffffff;
    for (int a = threadIdx.x & 31; a < nx; a += 32) {
        const int c = next[a];
        if (c < min(ny, k / (a + 1)) && before(sx[a] + sy[c], a, bv, ba)) {
            bv = sx[a] + sy[c];
            ba = a;
        }
    }
}

// Warp 0 only: the k first candidates (sum, a, c) with a < nx, c < ny, (a + 1)·(c + 1) ≤ k, in the order sum
// (descending), a, c. sx and sy descend, so each row is already in that order and a k-step merge of the row heads
// suffices. next[a] is read and written by the lane owning row a only.
__device__ void merge_rows(const float *sx, const int *ix, const float *sy, const int *iy, int nx, int ny, int k,
                           long long nk, int *next, float *scores, long long *ids) {
    const int lane = threadIdx.x & 31;
    for (int a = lane; a < nx; a += 32) next[a] = 0;
    float mv;
    int ma;
    lane_best(sx, sy, next, nx, ny, k, mv, ma);
    for (int slot = 0; slot < k; ++slot) {
        float bv = mv;
        int ba = ma;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oa = __shfl_xor_sync(0xffffffffu, ba, o);
            if (before(ov, oa, bv, ba)) {
                bv = ov;
                ba = oa;
            }
        }
        if (ba == 0x7fffffff) break;
        if ((ba & 31) == lane) {
            const int c = next[ba];
            scores[slot] = bv;
            ids[slot] = (long long)ix[ba] * nk + iy[c];
            next[ba] = c + 1;
            lane_best(sx, sy, next, nx, ny, k, mv, ma);
        }
    }
}

template <typename T>
__device__ void pk_topk(const T *q, const T *keys, float *scores, long long *ids, const int heads, const int nk,
                        const int half, const int k) {
    __shared__ float sim[2][PK_MAX_KEYS];
    __shared__ float sv[2][PK_MAX_KEYS];
    __shared__ int si[2][PK_MAX_KEYS];
    __shared__ int next[PK_MAX_KEYS];
    const long rh = blockIdx.x;
    const long row = rh / heads;
    const int h = (int)(rh % heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int t = warp; t < 2 * nk; t += warps) {
        const int axis = t / nk, n = t % nk;
        const long qo = ((row * 2 + axis) * heads + h) * (long)half;
        const long ko = (((long)h * nk + n) * 2 + axis) * (long)half;
        double s = 0.0;
        for (int i = lane; i < half; i += 32) s += (double)ld(q, qo + i) * (double)ld(keys, ko + i);
        s = warp_sum_f64(s);
        if (lane == 0) sim[axis][n] = (float)s;
    }
    __syncthreads();
    rank_sort(sim[0], nk, k, sv[0], si[0]);
    rank_sort(sim[1], nk, k, sv[1], si[1]);
    __syncthreads();
    if (warp == 0) merge_rows(sv[0], si[0], sv[1], si[1], k, k, k, nk, next, scores + rh * k, ids + rh * k);
}

extern "C" __global__ void pk_topk_f32(const float *q, const float *keys, float *scores, long long *ids,
                                       const int heads, const int nk, const int half, const int k) {
    pk_topk(q, keys, scores, ids, heads, nk, half, k);
}

extern "C" __global__ void pk_topk_bf16(const bf16_t *q, const bf16_t *keys, float *scores, long long *ids,
                                        const int heads, const int nk, const int half, const int k) {
    pk_topk(q, keys, scores, ids, heads, nk, half, k);
}
