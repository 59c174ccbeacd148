// sim[a][n] = q[r, a, h, :]·keys[h, n, a, :] (f64, summed in the CPU kernel's order, rounded to f32); (sx, ix), (sy, iy) =
// per-axis top-k; out = the k largest sx[i] + sy[j] with id ix[i]·nk + iy[j]; ties go to the lower index, then the lower (i, j).
// Layout: q [rows, 2, He, half], keys [He, nk, 2, half] in T; scores f32 and ids i64 [rows, He, k].
// Launch: grid (row tiles, He), one warp per (row, head); the head's keys staged once per block in shared memory, in f64
// (_wide) or in T, or read from T (_global); each warp loads its next row's queries while it ranks the current one. The
// keys are constants (no kernel writes them): they are staged before grid_entry(), overlapping the kernel this one
// depends on (the queries' projection).

__device__ __forceinline__ double ld_f64(const float *p, long i) { return (double)p[i]; }
__device__ __forceinline__ double ld_f64(const bf16_t *p, long i) { return (double)bf16_to_f32(p[i]); }
__device__ __forceinline__ double ld_f64(const double *p, long i) { return p[i]; }

// A staged key: copied in its own type, or widened to f64.
template <typename T> __device__ __forceinline__ void put_key(T *d, const T *s) { *d = *s; }
template <typename T> __device__ __forceinline__ void put_key(double *d, const T *s) { *d = ld_f64(s, 0); }

// Key elements a thread loads before it stores the first to shared memory.
#define PK_STAGE 8

// Query values a lane holds for the next row: 2·half ≤ 32·PK_PREFETCH is loaded ahead into registers.
#define PK_PREFETCH 4

// Σ_i q[i]·k[i] as the CPU `dot`: eight interleaved f64 partial sums, added in order, then the tail; rounded once.
// The products of f32 values are exact in f64, so a fused multiply-add rounds as the CPU's multiply then add.
template <typename K> __device__ __forceinline__ float dot_f64(const double *q, const K *k, int half) {
    double l[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    const int body = half & ~7;
    for (int i = 0; i < body; i += 8) {
#pragma unroll
        for (int j = 0; j < 8; ++j) l[j] += q[i + j] * ld_f64(k, i + j);
    }
    double s = -0.0;
#pragma unroll
    for (int j = 0; j < 8; ++j) s += l[j];
    double rest = -0.0;
    for (int i = body; i < half; ++i) rest += q[i] * ld_f64(k, i);
    return (float)(s + rest);
}

// sq[a·half + i] = q[r, a, h, i] in f64, by the lanes of one warp.
template <typename T>
__device__ __forceinline__ void stage_queries(const T *q, double *sq, long r, int heads, int h, int half, int lane) {
    for (int t = lane; t < 2 * half; t += 32) {
        const int a = t >= half;
        sq[t] = ld_f64(q, ((r * 2 + a) * heads + h) * (long)half + (t - a * half));
    }
}

// pre[i] = q[r, a, h, j] for t = lane + 32·i = a·half + j < 2·half (2·half ≤ 32·PK_PREFETCH).
template <typename T>
__device__ __forceinline__ void load_queries(const T *q, float (&pre)[PK_PREFETCH], long r, int heads, int h, int half,
                                             int lane) {
#pragma unroll
    for (int i = 0; i < PK_PREFETCH; ++i) {
        const int t = lane + 32 * i;
        const int a = t >= half;
        if (t < 2 * half) pre[i] = ld(q, ((r * 2 + a) * heads + h) * (long)half + (t - a * half));
    }
}

__device__ __forceinline__ void store_queries(const float (&pre)[PK_PREFETCH], double *sq, int half, int lane) {
#pragma unroll
    for (int i = 0; i < PK_PREFETCH; ++i) {
        const int t = lane + 32 * i;
        if (t < 2 * half) sq[t] = (double)pre[i];
    }
}

// Staged keys: K (T or f64) [2][nk][stride]. Per-warp scratch, in this order (the launcher sizes it the same way):
// skey u64 [nk][2], ckey u64 [cand_pad], sq f64 [2][half], sim f32 [nk][2], sv f32 [2][k], si i32 [2][k], cac i32 [cand_pad].
template <typename T, typename K, bool SMEM_KEYS>
__device__ void pk_topk(const T *q, const T *keys, float *scores, long long *ids, const int rows, const int heads,
                        const int nk, const int half, const int k, const int rows_per_block, const int stride,
                        const int key_bytes, const int warp_bytes, const int cand_pad) {
    extern __shared__ __align__(16) unsigned char pk_smem[];
    const int h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const long kh = (long)h * nk * 2 * half;
    K *sk = reinterpret_cast<K *>(pk_smem);
    unsigned char *base = pk_smem + key_bytes + warp * warp_bytes;
    unsigned long long *skey = reinterpret_cast<unsigned long long *>(base);
    unsigned long long *ckey = skey + 2 * nk;
    double *sq = reinterpret_cast<double *>(ckey + cand_pad);
    float *sim = reinterpret_cast<float *>(sq + 2 * half);
    float *sv = sim + 2 * nk;
    int *si = reinterpret_cast<int *>(sv + 2 * k);
    int *cac = si + 2 * k;
    const long row0 = (long)blockIdx.x * rows_per_block;
    const long row_end = min((long)rows, row0 + rows_per_block);
    const long first = row0 + warp;
    if (SMEM_KEYS) {
        const int total = 2 * nk * half;
        for (int t0 = threadIdx.x; t0 < total; t0 += PK_STAGE * blockDim.x) {
            T v[PK_STAGE];
#pragma unroll
            for (int u = 0; u < PK_STAGE; ++u) {
                const int t = t0 + u * blockDim.x;
                if (t < total) v[u] = keys[kh + t];
            }
#pragma unroll
            for (int u = 0; u < PK_STAGE; ++u) {
                const int t = t0 + u * blockDim.x;
                if (t >= total) break;
                const int na = t / half, i = t - na * half;
                put_key(sk + ((na & 1) * nk + (na >> 1)) * stride + i, &v[u]);
            }
        }
        __syncthreads();
    }
    grid_entry();
    if (first < row_end) stage_queries(q, sq, first, heads, h, half, lane);
    const bool prefetch = 2 * half <= 32 * PK_PREFETCH;
    float pre[PK_PREFETCH] = {};
    for (long r = first; r < row_end; r += warps) {
        if (r != first) {
            if (prefetch) {
                store_queries(pre, sq, half, lane);
            } else {
                stage_queries(q, sq, r, heads, h, half, lane);
            }
        }
        __syncwarp();
        for (int n = lane; n < nk; n += 32) {
#pragma unroll
            for (int a = 0; a < 2; ++a) {
                const float s = SMEM_KEYS ? dot_f64(sq + a * half, sk + (a * nk + n) * stride, half)
                                          : dot_f64(sq + a * half, keys + kh + (n * 2 + a) * (long)half, half);
                sim[2 * n + a] = s;
                skey[2 * n + a] = order_key(s, n);
            }
        }
        if (prefetch && r + warps < row_end) load_queries(q, pre, r + warps, heads, h, half, lane);
        __syncwarp();
        for (int n = lane; n < nk; n += 32) {
            const unsigned long long kx = skey[2 * n], ky = skey[2 * n + 1];
            int rx = 0, ry = 0;
            for (int j = 0; j < nk; ++j) {
                const ulonglong2 o = reinterpret_cast<const ulonglong2 *>(skey)[j];
                rx += o.x > kx;
                ry += o.y > ky;
            }
            if (rx < k) {
                sv[rx] = sim[2 * n];
                si[rx] = n;
            }
            if (ry < k) {
                sv[k + ry] = sim[2 * n + 1];
                si[k + ry] = n;
            }
        }
        __syncwarp();
        // Candidates (i, j) with (i + 1)·(j + 1) ≤ k in row-major order; position t breaks ties. Row i holds
        // j < ⌊k / (i + 1)⌋, counted by a ballot over chunks of 32 j (no division).
        int cand = 0;
        for (int i = 0; i < k; ++i) {
            int cnt = 0;
            for (int j0 = 0; j0 < k; j0 += 32) {
                const int j = j0 + lane;
                const bool ok = j < k && (i + 1) * (j + 1) <= k;
                if (ok) {
                    ckey[cand + j] = order_key(sv[i] + sv[k + j], cand + j);
                    cac[cand + j] = (i << 16) | j;
                }
                const int c = __popc(__ballot_sync(0xffffffffu, ok));
                cnt += c;
                if (c < 32) break;
            }
            cand += cnt;
        }
        __syncwarp();
        float *out_s = scores + (r * heads + h) * (long)k;
        long long *out_i = ids + (r * heads + h) * (long)k;
        for (int t = lane; t < cand; t += 32) {
            const unsigned long long key = ckey[t];
            int rank = 0;
            for (int j = 0; j < cand; ++j) rank += ckey[j] > key;
            if (rank < k) {
                const int i = cac[t] >> 16, j = cac[t] & 0xffff;
                out_s[rank] = sv[i] + sv[k + j];
                out_i[rank] = (long long)si[i] * nk + si[k + j];
            }
        }
        __syncwarp();
    }
}

#define PK_TOPK(NAME, T, K, SMEM, MINB)                                                                                  \
    extern "C" __global__ void __launch_bounds__(256, MINB)                                                           \
        NAME(const T *q, const T *keys, float *scores, long long *ids, const int rows, const int heads, const int nk, \
             const int half, const int k, const int rows_per_block, const int stride, const int key_bytes,            \
             const int warp_bytes, const int cand_pad) {                                                               \
        pk_topk<T, K, SMEM>(q, keys, scores, ids, rows, heads, nk, half, k, rows_per_block, stride, key_bytes,         \
                            warp_bytes, cand_pad);                                                                    \
    }

// The _wide kernels fit 64 registers (four blocks of 256 threads per multiprocessor) without spilling.
PK_TOPK(pk_topk_f32_wide, float, double, true, 4)
PK_TOPK(pk_topk_bf16_wide, bf16_t, double, true, 4)
PK_TOPK(pk_topk_f32, float, float, true, 3)
PK_TOPK(pk_topk_bf16, bf16_t, bf16_t, true, 3)
PK_TOPK(pk_topk_f32_global, float, float, false, 3)
PK_TOPK(pk_topk_bf16_global, bf16_t, bf16_t, false, 3)
