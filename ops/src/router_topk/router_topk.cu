// x = logits[r·nk ..], y = logits[(N + r)·nk ..] (the reference's view(2, N, nk), mixing tokens), each sorted descending
// into (sx, ix), (sy, iy); out = the top_k largest sx[a] + sy[c] with id ix[a]·nk + iy[c]; ties: lower index, then (a, c).
// Layout: logits [N, 2·nk] in T; scores f32 and ids i64 [N, top_k].
// Launch: one block of 256 threads per token r; nk ≤ 256; the block ranks the candidates (rank = 1, at most RT_MAX_CAND of
// them) or warp 0 merges the min(top_k, nk) sorted rows.
#define RT_MAX_KEYS 256
#define RT_MAX_CAND 2048

// Values v[0..n) ranked in `ranks_before` order; the first `keep` land in sv, si.
__device__ void rank_sort(const float *v, int n, int keep, float *sv, int *si) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float vi = v[i];
        int rank = 0;
        for (int j = 0; j < n; ++j) rank += ranks_before(v[j], j, vi, i);
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
        if (c < min(ny, k / (a + 1)) && ranks_before(sx[a] + sy[c], a, bv, ba)) {
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
            if (ranks_before(ov, oa, bv, ba)) {
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

// The whole block: the same k first candidates as merge_rows, each placed by its rank among all candidates
// (a, c) with c < min(ny, k / (a + 1)), numbered in row-major order so that the number breaks ties.
__device__ void rank_candidates(const float *sx, const int *ix, const float *sy, const int *iy, int nx, int ny, int k,
                                long long nk, unsigned long long *ckey, int *cac, float *scores, long long *ids) {
    int cand = 0;
    for (int a = 0; a < nx; ++a) {
        const int cnt = min(ny, k / (a + 1));
        for (int c = threadIdx.x; c < cnt; c += blockDim.x) {
            ckey[cand + c] = order_key(sx[a] + sy[c], cand + c);
            cac[cand + c] = (a << 16) | c;
        }
        cand += cnt;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < cand; t += blockDim.x) {
        const unsigned long long key = ckey[t];
        int rank = 0;
        for (int j = 0; j < cand; ++j) rank += ckey[j] > key;
        if (rank < k) {
            const int a = cac[t] >> 16, c = cac[t] & 0xffff;
            scores[rank] = sx[a] + sy[c];
            ids[rank] = (long long)ix[a] * nk + iy[c];
        }
    }
}

template <typename T>
__device__ void router_topk(const T *logits, float *scores, long long *ids, const int tokens, const int nk,
                            const int top_k, const int rank) {
    __shared__ float v[2][RT_MAX_KEYS];
    __shared__ unsigned long long ckey[RT_MAX_CAND];
    __shared__ int cac[RT_MAX_CAND];
    __shared__ float sv[2][RT_MAX_KEYS];
    __shared__ int si[2][RT_MAX_KEYS];
    __shared__ int next[RT_MAX_KEYS];
    const long r = blockIdx.x;
    for (int t = threadIdx.x; t < 2 * nk; t += blockDim.x) {
        const int axis = t / nk, i = t % nk;
        v[axis][i] = ld(logits, ((long)axis * tokens + r) * nk + i);
    }
    __syncthreads();
    const int n = min(top_k, nk);
    rank_sort(v[0], nk, n, sv[0], si[0]);
    rank_sort(v[1], nk, n, sv[1], si[1]);
    __syncthreads();
    if (rank) {
        rank_candidates(sv[0], si[0], sv[1], si[1], n, n, top_k, nk, ckey, cac, scores + r * top_k, ids + r * top_k);
    } else if (threadIdx.x < 32) {
        merge_rows(sv[0], si[0], sv[1], si[1], n, n, top_k, nk, next, scores + r * top_k, ids + r * top_k);
    }
}

extern "C" __global__ void router_topk_f32(const float *logits, float *scores, long long *ids, const int tokens,
                                           const int nk, const int top_k, const int rank) {
    grid_entry();
    router_topk(logits, scores, ids, tokens, nk, top_k, rank);
}

extern "C" __global__ void router_topk_bf16(const bf16_t *logits, float *scores, long long *ids, const int tokens,
                                            const int nk, const int top_k, const int rank) {
    grid_entry();
    router_topk(logits, scores, ids, tokens, nk, top_k, rank);
}

extern "C" __global__ void router_topk_f16(const f16_t *logits, float *scores, long long *ids, const int tokens,
                                            const int nk, const int top_k, const int rank) {
    grid_entry();
    router_topk(logits, scores, ids, tokens, nk, top_k, rank);
}
