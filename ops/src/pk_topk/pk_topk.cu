// sim[a][n] = q[r, a, h, :]·keys[h, n, a, :] (f64, summed in the CPU kernel's order, rounded to f32); (sx, ix), (sy, iy) =
// per-axis top-k; out = the k largest sx[i] + sy[j] with id ix[i]·nk + iy[j]; ties go to the lower index, then the lower (i, j).
// Layout: q [rows, 2, He, half], keys [He, nk, 2, half] in T; scores f32 and ids i64 [rows, He, k].
// Launch: grid (row tiles, He), one warp per (row, head); the head's keys staged once per block in shared memory, in f64
// (_wide) or in T, or read from T (_global); each warp loads its next row's queries while it ranks the current one. The
// keys are constants (no kernel writes them): they are staged before grid_entry(), overlapping the kernel this one
// depends on (the queries' projection).

__device__ __forceinline__ double ld_f64(const float *p, long i) { return (double)p[i]; }
__device__ __forceinline__ double ld_f64(const bf16_t *p, long i) { return (double)bf16_to_f32(p[i]); }
__device__ __forceinline__ double ld_f64(const f16_t *p, long i) { return (double)f16_to_f32(p[i]); }
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

// sk[a][n][i] (row stride `stride`) = keys[n][a][i] of one head, by the whole block, PK_STAGE loads in flight per
// thread; ends with a block barrier.
template <typename T, typename K>
__device__ __forceinline__ void stage_keys(const T *keys, K *sk, int nk, int half, int stride) {
    const int total = 2 * nk * half;
    for (int t0 = threadIdx.x; t0 < total; t0 += PK_STAGE * blockDim.x) {
        T v[PK_STAGE];
#pragma unroll
        for (int u = 0; u < PK_STAGE; ++u) {
            const int t = t0 + u * blockDim.x;
            if (t < total) v[u] = keys[t];
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

// Per-warp scratch, in this order (the launcher sizes it the same way): skey u64 [nk][2], ckey u64 [cand_pad],
// sq f64 [2][half], sim f32 [nk][2], sv f32 [2][k], si i32 [2][k], cac i32 [cand_pad].
struct WarpScratch {
    unsigned long long *skey, *ckey;
    double *sq;
    float *sim, *sv;
    int *si, *cac;

    __device__ __forceinline__ WarpScratch(unsigned char *base, int nk, int half, int k, int cand_pad) {
        skey = reinterpret_cast<unsigned long long *>(base);
        ckey = skey + 2 * nk;
        sq = reinterpret_cast<double *>(ckey + cand_pad);
        sim = reinterpret_cast<float *>(sq + 2 * half);
        sv = sim + 2 * nk;
        si = reinterpret_cast<int *>(sv + 2 * k);
        cac = si + 2 * k;
    }
};

// Staged keys: K (T or f64) [2][nk][stride], then each warp's scratch (WarpScratch).
template <typename T, typename K, bool SMEM_KEYS>
__device__ void pk_topk(const T *q, const T *keys, float *scores, long long *ids, const int rows, const int heads,
                        const int nk, const int half, const int k, const int rows_per_block, const int stride,
                        const int key_bytes, const int warp_bytes, const int cand_pad) {
    extern __shared__ __align__(16) unsigned char pk_smem[];
    const int h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const long kh = (long)h * nk * 2 * half;
    K *sk = reinterpret_cast<K *>(pk_smem);
    const WarpScratch ws(pk_smem + key_bytes + warp * warp_bytes, nk, half, k, cand_pad);
    unsigned long long *const skey = ws.skey, *const ckey = ws.ckey;
    double *const sq = ws.sq;
    float *const sim = ws.sim, *const sv = ws.sv;
    int *const si = ws.si, *const cac = ws.cac;
    const long row0 = (long)blockIdx.x * rows_per_block;
    const long row_end = min((long)rows, row0 + rows_per_block);
    const long first = row0 + warp;
    if (SMEM_KEYS) stage_keys(keys + kh, sk, nk, half, stride);
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

// cnt[axes·t + a] (zeroed) += the number of keys key[axes·j + a], j < n, above key[axes·t + a], for every t < n and
// axis a < axes, by the whole block: a thread counts the keys above one key in one of `parts` equal parts of its axis
// (as many parts as the block has threads for, up to n), and the parts meet by integer atomics, exact in any order.
// Ends with a block barrier.
__device__ __forceinline__ void count_above(const unsigned long long *key, int *cnt, int n, int axes) {
    const int items = n * axes, parts = max(1, min(n, (int)blockDim.x / max(items, 1)));
    for (int w = threadIdx.x; w < items * parts; w += blockDim.x) {
        const int t = w % items, part = w / items, a = t % axes;
        const unsigned long long kt = key[t];
        int c = 0;
        for (int j = part * n / parts, end = (part + 1) * n / parts; j < end; ++j) c += key[axes * j + a] > kt;
        if (c) atomicAdd(cnt + t, c);
    }
    __syncthreads();
}

// The row form, for few (row, head) pairs: one block a pair, grid (rows, He), each step of pk_topk spread over the
// block (a thread an axis and key for the similarities; count_above for both ranks; a warp a candidate row i). Its
// scratch, in this order after the staged keys (the launcher sizes it the same way): pk_topk's per-warp scratch,
// then rank i32 [nk][2], crank i32 [cand_pad], cstart i32 [k + 1] (cstart[i]: the candidates of the rows before i),
// fs f32 [k] and fid i32 [k] (the selection). The similarities, orders and candidate positions are pk_topk's, so are
// the results, bit for bit.
// With x given (else null), the block then weighs its k experts as expert_mix.cu's expert_weigh does, bit for bit: a
// warp a slot, w[r, h·k + j] = expert_weight(down_dot(x[r], down[id]), p_j) with p the softmax of the head's k scores
// (NaN for an id outside 0..num_experts); x [rows, dim] and down [num_experts, dim] in T, w f32 [rows, He·k].
template <typename T, typename K, bool SMEM_KEYS>
__device__ void pk_topk_row(const T *q, const T *keys, float *scores, long long *ids, const int heads, const int nk,
                            const int half, const int k, const int stride, const int key_bytes, const int cand_pad,
                            const T *x, const T *down, float *w, const int dim, const long long num_experts,
                            const int act, const int after, const int norm) {
    extern __shared__ __align__(16) unsigned char pk_smem[];
    const long r = blockIdx.x;
    const int h = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const long kh = (long)h * nk * 2 * half;
    K *sk = reinterpret_cast<K *>(pk_smem);
    const WarpScratch ws(pk_smem + key_bytes, nk, half, k, cand_pad);
    unsigned long long *const skey = ws.skey, *const ckey = ws.ckey;
    double *const sq = ws.sq;
    float *const sim = ws.sim, *const sv = ws.sv;
    int *const si = ws.si, *const cac = ws.cac;
    int *rank = cac + cand_pad;
    int *crank = rank + 2 * nk;
    int *cstart = crank + cand_pad;
    float *fs = reinterpret_cast<float *>(cstart + k + 1);
    int *fid = reinterpret_cast<int *>(fs + k);
    for (int t = tid; t < 2 * nk; t += blockDim.x) rank[t] = 0;
    for (int t = tid; t < cand_pad; t += blockDim.x) crank[t] = 0;
    for (int i = warp; i <= k; i += warps) {
        int c = 0;
        for (int u = lane; u < i; u += 32) c += k / (u + 1);
        for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
        if (lane == 0) cstart[i] = c;
    }
    if (SMEM_KEYS) stage_keys(keys + kh, sk, nk, half, stride);
    grid_entry();
    for (int t = tid; t < 2 * half; t += blockDim.x) {
        const int a = t >= half;
        sq[t] = ld_f64(q, ((r * 2 + a) * heads + h) * (long)half + (t - a * half));
    }
    __syncthreads();
    for (int t = tid; t < 2 * nk; t += blockDim.x) {
        const int n = t >> 1, a = t & 1;
        const float s = SMEM_KEYS ? dot_f64(sq + a * half, sk + (a * nk + n) * stride, half)
                                  : dot_f64(sq + a * half, keys + kh + t * (long)half, half);
        sim[t] = s;
        skey[t] = order_key(s, n);
    }
    __syncthreads();
    count_above(skey, rank, nk, 2);
    for (int t = tid; t < 2 * nk; t += blockDim.x) {
        const int a = t & 1, rk = rank[t];
        if (rk < k) {
            sv[a * k + rk] = sim[t];
            si[a * k + rk] = t >> 1;
        }
    }
    __syncthreads();
    // Row i holds the candidates (i, j), j < ⌊k / (i + 1)⌋, at positions cstart[i] + j.
    for (int i = warp; i < k; i += warps) {
        const int c0 = cstart[i], len = cstart[i + 1] - c0;
        for (int j = lane; j < len; j += 32) {
            ckey[c0 + j] = order_key(sv[i] + sv[k + j], c0 + j);
            cac[c0 + j] = (i << 16) | j;
        }
    }
    __syncthreads();
    const int cand = cstart[k];
    count_above(ckey, crank, cand, 1);
    float *out_s = scores + (r * heads + h) * (long)k;
    long long *out_i = ids + (r * heads + h) * (long)k;
    for (int t = tid; t < cand; t += blockDim.x) {
        const int rk = crank[t];
        if (rk < k) {
            const int i = cac[t] >> 16, j = cac[t] & 0xffff;
            const float sc = sv[i] + sv[k + j];
            const int id = si[i] * nk + si[k + j];
            out_s[rk] = sc;
            out_i[rk] = id;
            fs[rk] = sc;
            fid[rk] = id;
        }
    }
    if (x == nullptr) return;
    __syncthreads();
    // The warp's first slot asks for its down row before the head's softmax, which all its slots share.
    const T *xr = x + r * dim;
    DownHead first;
    if (warp < k && fid[warp] < num_experts) first = down_head(xr, down + (long)fid[warp] * dim, dim, lane);
    const HeadSoftmax hs = head_softmax(fs, k, lane);
    for (int j = warp; j < k; j += warps) {
        const int id = fid[j];
        float wj = __int_as_float(0x7fc00000);
        if (id < num_experts) {
            const T *dr = down + (long)id * dim;
            const DownHead head = j == warp ? first : down_head(xr, dr, dim, lane);
            wj = expert_weight(down_dot(xr, dr, dim, lane, head), head_prob(hs, fs, j, norm), act, after);
        }
        if (lane == 0) w[(r * heads + h) * (long)k + j] = wj;
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
PK_TOPK(pk_topk_f16_wide, f16_t, double, true, 4)
PK_TOPK(pk_topk_f32, float, float, true, 3)
PK_TOPK(pk_topk_bf16, bf16_t, bf16_t, true, 3)
PK_TOPK(pk_topk_f16, f16_t, f16_t, true, 3)
PK_TOPK(pk_topk_f32_global, float, float, false, 3)
PK_TOPK(pk_topk_bf16_global, bf16_t, bf16_t, false, 3)
PK_TOPK(pk_topk_f16_global, f16_t, f16_t, false, 3)

#define PK_TOPK_ROW(NAME, T, K, SMEM)                                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                                                 \
        NAME(const T *q, const T *keys, float *scores, long long *ids, const int heads, const int nk, const int half,  \
             const int k, const int stride, const int key_bytes, const int cand_pad, const T *x, const T *down,        \
             float *w, const int dim, const long long num_experts, const int act, const int after, const int norm) {   \
        pk_topk_row<T, K, SMEM>(q, keys, scores, ids, heads, nk, half, k, stride, key_bytes, cand_pad, x, down, w,     \
                                dim, num_experts, act, after, norm);                                                  \
    }

PK_TOPK_ROW(pk_topk_row_f32_wide, float, double, true)
PK_TOPK_ROW(pk_topk_row_bf16_wide, bf16_t, double, true)
PK_TOPK_ROW(pk_topk_row_f16_wide, f16_t, double, true)
PK_TOPK_ROW(pk_topk_row_f32, float, float, true)
PK_TOPK_ROW(pk_topk_row_bf16, bf16_t, bf16_t, true)
PK_TOPK_ROW(pk_topk_row_f16, f16_t, f16_t, true)
PK_TOPK_ROW(pk_topk_row_f32_global, float, float, false)
PK_TOPK_ROW(pk_topk_row_bf16_global, bf16_t, bf16_t, false)
PK_TOPK_ROW(pk_topk_row_f16_global, f16_t, f16_t, false)
