// out[b,i,h,:] = Σ_j softmax_j(fl(q·k_j·scale) + bias[b,h,i,j])·v_j, online over key tiles; bias as in mod.rs (MIN = f32::MIN).
// The decode kernels leave out the keys whose attn_mask is negative (slots of a cache with room for more; S = 1).
// Layout: q, out [B,S,H,Dh]; k, v [B,G,T,Dh]; key_m [B,Hm,T]; learned [H,T]; attn_mask i64 [B,T]; row r = (b·H + h)·S + i.
// Launch (128 threads): prefill grid (B·H, ⌈S/BQ⌉); decode grid (B·H·S, splits) or decode_gqa grid (splits, B·G,
// ⌈(H/G)·S/NQ⌉), then combine (256 threads) grid (B·H·S, ⌈Dh/32⌉).
// Before them when the mode needs it: ratio_threshold (256 threads) grid B·Hm -> tau; keep_window (1024 threads) grid
// B·Hm·S, or keep_window_cluster (clusters of 8 blocks of 256 threads) grid 8·B·Hm·S -> keep; for the tensor-core
// prefill instead order_keys, then keep_until or keep_sort, keep_rank, keep_theta and keep_until_ranked -> until, and
// keep_lists -> list, count (launches with each kernel below).
constexpr float MASKED = -3.40282346638528859811704183484516925e+38f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Order of f32::total_cmp as unsigned integers, and back.
__device__ __forceinline__ unsigned total_key(float x) {
    const unsigned u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_total_key(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// Order of `select::desc` reversed: every NaN largest, -0 equal to +0.
__device__ __forceinline__ unsigned order_key(float x) {
    if (x != x) return 0xffffffffu;
    return total_key(x == 0.0f ? 0.0f : x);
}
// order_key(MASKED).
constexpr unsigned MASKED_KEY = 0x00800000u;
// Key j with order key k as one integer, larger when it beats: (k, -j).
__device__ __forceinline__ unsigned long long beat_key(unsigned k, int j) {
    return (unsigned long long)k << 32 | (0xffffffffu - (unsigned)j);
}

enum { CAUSAL = 0, BOOLEAN = 1, ADDITIVE = 2, LEARNED = 3 };

struct Mask {
    const float *key_m, *learned;
    const long long *attn_mask;
    const float *tau;      // [B, Hm] ratio thresholds, or null when the ratio is inactive
    const unsigned *keep;  // [B, Hm, S][2] keep-window (order key, last kept index), or null
    int mode, S, T, H, Hm;

    // The mask head of head h.
    __device__ int mask_head(int h) const { return (int)((long)h * Hm / H); }

    // The per-key value the mode reads for key j of head h (mask head hm): learned[h, j], key_m[b, hm, j], or 0.
    __device__ float key_value(int b, int h, int hm, int j) const {
        if (mode == LEARNED) return learned[(long)h * T + j];
        if (mode == CAUSAL) return 0.0f;
        return key_m[((long)b * Hm + hm) * T + j];
    }
    // The ratio threshold of mask head hm, or -inf without one.
    __device__ float tau_of(int b, int hm) const {
        return tau != nullptr && mode == ADDITIVE ? tau[(long)b * Hm + hm] : neg_inf();
    }
    // The bias of a key before the causal mask and the keep window, from its attn_mask value `am`, its key_value x
    // and its head's tau_of: padding, then the mode.
    __device__ float key_bias_of(long long am, float x, float tau_v) const {
        if (am == 0) return MASKED;
        if (mode == CAUSAL) return 0.0f;
        if (mode == LEARNED) return x != 0.0f ? 0.0f : MASKED;
        if (mode == BOOLEAN) return x < 1.0f ? MASKED : 0.0f;
        return x < tau_v ? MASKED : x;
    }
    // key_bias_of's value without a branch on the mode: a key is MASKED when am = 0 or v < lo, v = |x| for LEARNED (lo
    // the smallest subnormal, so that ±0 masks) and x otherwise (lo = 1 for BOOLEAN, tau_v for ADDITIVE and for CAUSAL,
    // whose tau_v is -inf); a kept key's bias is x for ADDITIVE and 0 otherwise.
    __device__ float key_bias_flat(long long am, float x, float tau_v) const {
        const float v = mode == LEARNED ? fabsf(x) : x;
        const float lo = mode == LEARNED ? __int_as_float(1) : mode == BOOLEAN ? 1.0f : tau_v;
        return am == 0 || v < lo ? MASKED : mode == ADDITIVE ? x : 0.0f;
    }
    // key_bias_of key j of head h; hm = mask_head(h).
    __device__ float key_bias(int b, int h, int hm, int j) const {
        return key_bias_of(attn_mask[(long)b * T + j], key_value(b, h, hm, j), tau_of(b, hm));
    }
    __device__ float key_bias(int b, int h, int j) const { return key_bias(b, h, mask_head(h), j); }

    // bias, or MASKED when key j falls outside the keep window (vk, last) of its row.
    __device__ static float kept(float bias, int j, unsigned vk, int last) {
        const unsigned ok = order_key(bias);
        return ok > vk || (ok == vk && j <= last) ? bias : MASKED;
    }
    // The full bias of key j for query i of mask head hm, given kb = key_bias(b, h, hm, j).
    __device__ float row_bias_hm(float kb, int b, int hm, int i, int j) const {
        float bias = j <= T - S + i ? kb : MASKED;
        if (keep != nullptr) {
            const long kr = ((long)b * Hm + hm) * S + i;
            bias = kept(bias, j, keep[2 * kr], (int)keep[2 * kr + 1]);
        }
        return bias;
    }
    __device__ float row_bias(float kb, int b, int h, int i, int j) const { return row_bias_hm(kb, b, mask_head(h), i, j); }
};

#define MASK_PARAMS                                                                                                    \
    const float *key_m, const float *learned, const long long *attn_mask, const float *tau, const unsigned *keep,      \
        const int mode, const int S, const int T, const int H, const int Hm
#define MASK_INIT Mask{key_m, learned, attn_mask, tau, keep, mode, S, T, H, Hm}

// Exclusive prefix sum of c over the block's threads in thread order; *total gets the sum. `wsum` holds 32 values.
__device__ unsigned block_exclusive_sum(unsigned c, unsigned *wsum, unsigned *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    unsigned x = c;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) wsum[warp] = x;
    __syncthreads();
    unsigned before = 0, all = 0;
    for (int w = 0; w < warps; ++w) {
        before += w < warp ? wsum[w] : 0u;
        all += wsum[w];
    }
    *total = all;
    return before + x - c;
}

// The rank-th smallest (0-based) of key_of(j) over the j in [0, n) that key_of takes; the count of taken keys must
// exceed rank. *rest = rank minus the number of taken keys below the result. Radix select, 8 bits a pass: a
// histogram with one shared atomic per distinct digit of a warp, and the digit found by a block prefix sum.
// blockDim.x is a multiple of 32, at least 256.
template <typename KeyOf>
__device__ unsigned radix_select(const int n, unsigned rank, KeyOf key_of, unsigned *hist, unsigned *bcast,
                                 unsigned *rest) {
    __shared__ unsigned wsum[32];
    const int lane = threadIdx.x & 31;
    unsigned prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
        __syncthreads();
        for (int base = threadIdx.x - lane; base < n; base += blockDim.x) {
            const int j = base + lane;
            unsigned key;
            const bool taken = j < n && key_of(j, key) && (key & mask) == prefix;
            const int digit = taken ? (int)((key >> shift) & 255u) : -1;
            const unsigned peers = __match_any_sync(0xffffffffu, digit);
            if (taken && __ffs(peers) - 1 == lane) atomicAdd(&hist[digit], (unsigned)__popc(peers));
        }
        __syncthreads();
        const unsigned c = threadIdx.x < 256 ? hist[threadIdx.x] : 0u;
        unsigned total;
        const unsigned below = block_exclusive_sum(c, wsum, &total);
        if (threadIdx.x < 256 && below <= rank && rank < below + c) {
            bcast[0] = prefix | ((unsigned)threadIdx.x << shift);
            bcast[1] = rank - below;
        }
        __syncthreads();
        prefix = bcast[0];
        rank = bcast[1];
        mask |= 255u << shift;
        __syncthreads();
    }
    *rest = rank;
    return prefix;
}

// tau[b, hm] = the n-th smallest key_m[b, hm, :] in total_cmp order (1 ≤ n ≤ T).
extern "C" __global__ void __launch_bounds__(256)
    masked_attention_ratio_threshold(const float *key_m, float *tau, const int T, const int n) {
    grid_entry();
    __shared__ unsigned hist[256], bcast[2];
    const float *m = key_m + (long)blockIdx.x * T;
    unsigned rest;
    const unsigned k = radix_select(
        T, (unsigned)(n - 1),
        [&](int j, unsigned &key) {
            key = total_key(m[j]);
            return true;
        },
        hist, bcast, &rest);
    if (threadIdx.x == 0) tau[blockIdx.x] = from_total_key(k);
}

// The cluster of thread blocks this one belongs to (sm_90): its rank, the cluster's index, a barrier of all its
// threads (release/acquire, so shared-memory writes before it are seen by every block after it), and a word of
// another block's shared memory (the same variable of block `rank`).
__device__ __forceinline__ unsigned cluster_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ unsigned cluster_index() {
    unsigned r;
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\n\tbarrier.cluster.wait.acquire;" ::: "memory");
}
__device__ __forceinline__ unsigned ld_cluster(const unsigned *p, unsigned rank) {
    const unsigned local = (unsigned)__cvta_generic_to_shared(p);
    unsigned remote, v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
    return v;
}

// Keys a keep-window thread holds in registers: block r of a row's CLUSTER blocks takes keys [r·L, (r+1)·L) with
// L = ⌈T/CLUSTER⌉, its thread t keys r·L + t + THREADS·k for k < KEEP_REGS; keys past THREADS·KEEP_REGS of a block are
// read again from global memory in each pass.
constexpr int KEEP_REGS = 8;

// The keep window of `Additive` per (b, hm, i), shared by the query heads of mask head hm: the W-th largest bias in
// (value descending, index ascending) order, as (order key, index); a key is kept when it comes no later in that
// order. W = 0 keeps nothing. Radix select of the (W-1)-th smallest inverted order key, 8 bits a pass: each block
// counts its keys into its shared histogram (one atomic per distinct digit of a warp); with CLUSTER > 1 blocks per
// row (a thread-block cluster) every block sums the cluster's histograms bin by bin through distributed shared memory;
// warp 0 finds the digit (the same in every block). Then the ties of the found order key are counted per block, and
// the block holding the rest-th of them in index order writes it. Grid B·Hm·S·CLUSTER blocks of THREADS threads.
//
// Decode steps of a cache with room for more (S = 1; `pos` non-null, the slot n = *pos the step's key fills; `at` one
// word per row): a row whose at[row] is n holds in keep_out the selection over the same slots with slot n still empty
// (MASKED), that of the step before, and is updated instead of selected again. With beat keys (beat_key: larger
// beats), the old threshold t, slot n's old key o = beat_key(MASKED_KEY, n) and new key e, the keys above t change by
// d = [e > t] − [o > t]: for d > 0 the new threshold is the least key above t, for d < 0 (or t = o ≠ e, which is
// gone) the largest key below t, else t stays; one pass over the keys instead of four. Every row written sets
// at[row] = n + 1.
template <int CLUSTER, int THREADS>
__device__ void keep_window(const float *key_m, const long long *attn_mask, const float *tau, unsigned *keep_out,
                            unsigned *at, const long long *pos, const int S, const int T, const int Hm, const int W) {
    __shared__ unsigned hist[2][256], tot[256], bcast[2], wcount[THREADS / 32], slice_ties;
    __shared__ unsigned long long least[THREADS / 32];
    const unsigned part = CLUSTER > 1 ? cluster_rank() : 0u;
    const long kr = CLUSTER > 1 ? (long)cluster_index() : (long)blockIdx.x, bhm = kr / S;
    const int i = (int)(kr % S), tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    // With `pos` and no ratio threshold (a decode step of a cache in which the kernels before this one write only
    // slot n), the held keys are loaded before the grid's wait and the key of slot n again after it.
    const bool early = pos != nullptr && tau == nullptr;
    if (!early) grid_entry();
    const int n = pos != nullptr ? (int)min(max(*pos, -1ll), (long long)T) : -1;
    const bool stepped = at != nullptr && S == 1 && n >= 0 && n < T && at[kr] == (unsigned)n;
    if (W == 0) {
        if (early) grid_entry();
        if (part == 0 && tid == 0) keep_out[2 * kr] = keep_out[2 * kr + 1] = 0xffffffffu;
        return;
    }
    const int len = (T + CLUSTER - 1) / CLUSTER, lo = (int)part * len, hi = min(T, lo + len);
    const Mask mk{key_m, nullptr, attn_mask, tau, nullptr, ADDITIVE, S, T, Hm, Hm};
    const float *m = key_m + bhm * T;
    const float tau_v = mk.tau_of((int)(bhm / Hm), (int)(bhm % Hm));
    const long long *am = attn_mask + bhm / Hm * T;
    // ~order key of key j, from x = key_m and a = attn_mask of key j (absent slots, a < 0, as masked): the selection
    // runs over the smallest.
    auto inv_key_of = [&](int j, float x, long long a) {
        return ~order_key(j <= T - S + i && a >= 0 ? mk.key_bias_of(a, x, tau_v) : MASKED);
    };
    auto inv_key = [&](int j) { return inv_key_of(j, m[j], am[j]); };
    // Every load of the held keys is issued before any is used: indices clamped into [0, T), no branch on loaded values.
    unsigned key[KEEP_REGS];
    {
        float x[KEEP_REGS];
        long long a[KEEP_REGS];
#pragma unroll
        for (int r = 0; r < KEEP_REGS; ++r) {
            const int j = min(lo + tid + THREADS * r, T - 1);
            x[r] = m[j];
            a[r] = am[j];
        }
        if (early) {
            grid_entry();
#pragma unroll
            for (int r = 0; r < KEEP_REGS; ++r)
                if (lo + tid + THREADS * r == n) x[r] = m[n], a[r] = am[n];
        }
#pragma unroll
        for (int r = 0; r < KEEP_REGS; ++r) key[r] = inv_key_of(lo + tid + THREADS * r, x[r], a[r]);
    }
    const int rounds = (max(hi - lo, 0) + THREADS - 1) / THREADS;
    if (stepped) {
        // Every block reads the row's words before any is written (after a barrier of the row's blocks).
        const unsigned long long t_old = beat_key(keep_out[2 * kr], (int)keep_out[2 * kr + 1]);
        const unsigned long long o = beat_key(MASKED_KEY, n), e = beat_key(~inv_key(n), n);
        const int d = (int)(e > t_old) - (int)(o > t_old);
        if (e == o || (d == 0 && o != t_old)) {
            if (CLUSTER > 1) cluster_sync();
            else __syncthreads();
            if (part == 0 && tid == 0) at[kr] = (unsigned)n + 1u;
            return;
        }
        // Least key above t_old, or (flipped) the largest below it.
        const unsigned long long flip = d > 0 ? 0ull : ~0ull;
        unsigned long long best = ~0ull;
        auto consider = [&](unsigned k, int j) {
            const unsigned long long c = beat_key(~k, j);
            if (j < hi && (d > 0 ? c > t_old : c < t_old)) best = min(best, c ^ flip);
        };
#pragma unroll
        for (int r = 0; r < KEEP_REGS; ++r)
            if (r < rounds) consider(key[r], lo + tid + THREADS * r);
        for (int r = KEEP_REGS; r < rounds; ++r) {
            const int j = lo + tid + THREADS * r;
            consider(j < hi ? inv_key(j) : 0u, j);
        }
#pragma unroll
        for (int o2 = 16; o2 > 0; o2 >>= 1) best = min(best, __shfl_xor_sync(0xffffffffu, best, o2));
        if (lane == 0) least[warp] = best;
        __syncthreads();
        if (warp == 0) {
            best = lane < THREADS / 32 ? least[lane] : ~0ull;
#pragma unroll
            for (int o2 = 16; o2 > 0; o2 >>= 1) best = min(best, __shfl_xor_sync(0xffffffffu, best, o2));
            if (lane == 0) least[0] = best;
        }
        if (CLUSTER > 1) {
            cluster_sync();
            if (part == 0 && tid == 0) {
                for (unsigned q = 1; q < CLUSTER; ++q) {
                    const unsigned *w = reinterpret_cast<const unsigned *>(&least[0]);
                    const unsigned long long y =
                        (unsigned long long)ld_cluster(w + 1, q) << 32 | ld_cluster(w, q);
                    best = min(best, y);
                }
            }
            cluster_sync();
        } else {
            __syncthreads();
            best = least[0];
        }
        if (part == 0 && tid == 0) {
            best ^= flip;
            keep_out[2 * kr] = (unsigned)(best >> 32);
            keep_out[2 * kr + 1] = 0xffffffffu - (unsigned)best;
            at[kr] = (unsigned)n + 1u;
        }
        return;
    }
    if (tid < 256) hist[0][tid] = 0;
    __syncthreads();
    unsigned prefix = 0, mask = 0, rank = (unsigned)(W - 1);
    for (int pass = 0, shift = 24; shift >= 0; ++pass, shift -= 8) {
        unsigned *h = hist[pass & 1];
        // A cluster's other blocks may still read the other histogram until they reach this pass's barrier.
        if (CLUSTER == 1 && tid < 256) hist[(pass + 1) & 1][tid] = 0;
        auto count = [&](unsigned k, int j) {
            const bool taken = j < hi && (k & mask) == prefix;
            const int digit = taken ? (int)((k >> shift) & 255u) : -1;
            const unsigned peers = __match_any_sync(0xffffffffu, digit);
            if (taken && __ffs(peers) - 1 == lane) atomicAdd(&h[digit], (unsigned)__popc(peers));
        };
#pragma unroll
        for (int r = 0; r < KEEP_REGS; ++r)
            if (r < rounds) count(key[r], lo + tid + THREADS * r);
        for (int r = KEEP_REGS; r < rounds; ++r) {
            const int j = lo + tid + THREADS * r;
            count(j < hi ? inv_key(j) : 0u, j);
        }
        const unsigned *bins = h;
        if (CLUSTER > 1) {
            cluster_sync();
            if (tid < 256) {
                unsigned sum = 0;
#pragma unroll
                for (int q = 0; q < CLUSTER; ++q) sum += ld_cluster(&h[tid], (unsigned)q);
                tot[tid] = sum;
                hist[(pass + 1) & 1][tid] = 0;
            }
            bins = tot;
        }
        __syncthreads();
        if (warp == 0) {
            unsigned c[8], sum = 0;
#pragma unroll
            for (int e = 0; e < 8; ++e) c[e] = bins[8 * lane + e], sum += c[e];
            unsigned incl = sum;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned y = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += y;
            }
            unsigned below = incl - sum;
            if (below <= rank && rank < incl) {
                int found = -1;
                unsigned at = below;
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    if (found < 0 && rank < below + c[e]) found = e, at = below;
                    below += c[e];
                }
                bcast[0] = prefix | ((unsigned)(8 * lane + found) << shift);
                bcast[1] = rank - at;
            }
        }
        __syncthreads();
        prefix = bcast[0];
        rank = bcast[1];
        mask |= 255u << shift;
    }
    // Ties of the found order key: this block's count, then (in a cluster) the blocks before it.
    auto held = [&](int r) {
        unsigned k = 0;
#pragma unroll
        for (int q = 0; q < KEEP_REGS; ++q)
            if (q == r) k = key[q];
        return k;
    };
    auto tie_at = [&](int r) {
        const int j = lo + tid + THREADS * r;
        return j < hi && (r < KEEP_REGS ? held(r) : inv_key(j)) == prefix;
    };
    if constexpr (CLUSTER > 1) {
        unsigned mine = 0;
        for (int r = 0; r < rounds; ++r) mine += (unsigned)__syncthreads_count(tie_at(r));
        if (tid == 0) slice_ties = mine;
        cluster_sync();
        unsigned before = 0;
        for (unsigned q = 0; q < part; ++q) before += ld_cluster(&slice_ties, q);
        cluster_sync();
        if (rank < before || rank >= before + mine) return;
        rank -= before;
    }
    // The rank-th tie of this block in index order, one round of THREADS keys at a time.
    for (int r = 0; r < rounds; ++r) {
        const bool tie = tie_at(r);
        const unsigned ties = (unsigned)__syncthreads_count(tie);
        if (rank >= ties) {
            rank -= ties;
            continue;
        }
        const unsigned ballot = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) wcount[warp] = __popc(ballot);
        __syncthreads();
        unsigned below = __popc(ballot & ((1u << lane) - 1u));
        for (int w = 0; w < warp; ++w) below += wcount[w];
        if (tie && below == rank) {
            keep_out[2 * kr] = ~prefix;
            keep_out[2 * kr + 1] = (unsigned)(lo + tid + THREADS * r);
            if (at != nullptr) at[kr] = S == 1 && n >= 0 && n < T ? (unsigned)n + 1u : 0xffffffffu;
        }
        break;
    }
}

// One block of 1024 threads per row (8192 keys held); and, on sm_90 and later (thread-block clusters), a cluster of 8
// blocks of 256 threads per row (2048 keys held by each), for few rows.
extern "C" __global__ void __launch_bounds__(1024)
    masked_attention_keep_window(const float *key_m, const long long *attn_mask, const float *tau, unsigned *keep_out,
                                 unsigned *at, const long long *pos, const int S, const int T, const int Hm,
                                 const int W) {
    keep_window<1, 1024>(key_m, attn_mask, tau, keep_out, at, pos, S, T, Hm, W);
}
#if __CUDA_ARCH__ >= 900
extern "C" __global__ void __cluster_dims__(8, 1, 1) __launch_bounds__(256)
    masked_attention_keep_window_cluster(const float *key_m, const long long *attn_mask, const float *tau,
                                         unsigned *keep_out, unsigned *at, const long long *pos, const int S,
                                         const int T, const int Hm, const int W) {
    keep_window<8, 256>(key_m, attn_mask, tau, keep_out, at, pos, S, T, Hm, W);
}
#endif

// One block per tile of BQ queries of one (b, h); warp w owns query rows w, w + 4, ...; lane = key of the tile.
template <typename E, int DH, int BQ>
__device__ void prefill(const E *q, const E *k, const E *v, E *out, const Mask mk, const int G, const int dh,
                        const float scale) {
    constexpr int BK = 32, NT = 128, NW = NT / 32, RPW = BQ / NW, ACC = BQ * DH / NT, KS = DH + 1, PS = BK + 1;
    static_assert(BQ % NW == 0 && (BQ * DH) % NT == 0, "tile shape");
    __shared__ float Qs[BQ * DH], KVs[BK * KS], Ps[BQ * PS], alpha_s[BQ], l_s[BQ], kb_s[BK];
    __shared__ int extend;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int S = mk.S, T = mk.T, H = mk.H;
    const int b = blockIdx.x / H, h = blockIdx.x % H, g = h / (H / G);
    const long kv0 = ((long)b * G + g) * T * dh;
    for (int i0 = blockIdx.y * BQ; i0 < S; i0 += gridDim.y * BQ) {
        for (int f = tid; f < BQ * DH; f += NT) {
            const int i = i0 + f / DH, d = f % DH;
            Qs[f] = i < S && d < dh ? ld(q, (((long)b * S + i) * H + h) * dh + d) : 0.0f;
        }
        if (tid == 0) extend = 0;
        float m[RPW], l[RPW], acc[ACC];
#pragma unroll
        for (int r = 0; r < RPW; ++r) m[r] = neg_inf(), l[r] = 0.0f;
#pragma unroll
        for (int a = 0; a < ACC; ++a) acc[a] = 0.0f;
        // Keys from kend on are past every row's horizon: all rows see them as MIN, which adds nothing to a row
        // with a larger score, so they are visited only when some row is still fully masked.
        const int kend = min(T, T - S + min(i0 + BQ, S));
        for (int k0 = 0; k0 < T; k0 += BK) {
            if (k0 >= kend && k0 < kend + BK) {
#pragma unroll
                for (int r = 0; r < RPW; ++r)
                    if (lane == 0 && i0 + warp + NW * r < S && m[r] == MASKED) extend = 1;
                __syncthreads();
                if (!extend) break;
            }
            for (int f = tid; f < BK * DH; f += NT) {
                const int key = k0 + f / DH, d = f % DH;
                KVs[(f / DH) * KS + d] = key < T && d < dh ? ld(k, kv0 + (long)key * dh + d) : 0.0f;
            }
            if (tid < BK) kb_s[tid] = k0 + tid < T ? mk.key_bias(b, h, k0 + tid) : 0.0f;
            __syncthreads();
            const int j = k0 + lane;
            float s[RPW];
#pragma unroll
            for (int r = 0; r < RPW; ++r) s[r] = 0.0f;
#pragma unroll 8
            for (int d = 0; d < DH; ++d) {
                const float kd = KVs[lane * KS + d];
#pragma unroll
                for (int r = 0; r < RPW; ++r) s[r] += Qs[(warp + NW * r) * DH + d] * kd;
            }
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                const int qi = warp + NW * r, i = i0 + qi;
                float sc = neg_inf();
                if (j < T) {
                    const float bias = i < S ? mk.row_bias(kb_s[lane], b, h, i, j) : 0.0f;
                    sc = __fadd_rn(__fmul_rn(s[r], scale), bias);
                }
                const float m_new = fmaxf(m[r], warp_max(sc));
                const float alpha = expf(m[r] - m_new);
                const float p = j < T ? expf(sc - m_new) : 0.0f;
                l[r] = l[r] * alpha + warp_sum(p);
                m[r] = m_new;
                Ps[qi * PS + lane] = p;
                if (lane == 0) alpha_s[qi] = alpha;
            }
            __syncthreads();
            for (int f = tid; f < BK * DH; f += NT) {
                const int key = k0 + f / DH, d = f % DH;
                KVs[(f / DH) * KS + d] = key < T && d < dh ? ld(v, kv0 + (long)key * dh + d) : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int a = 0; a < ACC; ++a) {
                const int e = tid + NT * a, qi = e / DH, d = e % DH;
                float o = acc[a] * alpha_s[qi];
#pragma unroll 8
                for (int kj = 0; kj < BK; ++kj) o += Ps[qi * PS + kj] * KVs[kj * KS + d];
                acc[a] = o;
            }
            __syncthreads();
        }
#pragma unroll
        for (int r = 0; r < RPW; ++r)
            if (lane == 0) l_s[warp + NW * r] = l[r];
        __syncthreads();
#pragma unroll
        for (int a = 0; a < ACC; ++a) {
            const int e = tid + NT * a, qi = e / DH, d = e % DH, i = i0 + qi;
            if (i < S && d < dh) st(out, (((long)b * S + i) * H + h) * dh + d, acc[a] / l_s[qi]);
        }
    }
}

// One block per (row, slice of `chunk` keys); warp w takes keys j0 + w, j0 + w + 4, ...; lane holds dims lane + 32e.
// Writes part[row][split] = (max, Σ exp(s - max), Σ exp(s - max)·v[0..dh]).
template <typename E, int DH>
__device__ void decode(const E *q, const E *k, const E *v, float *part, const Mask mk, const int G, const int dh,
                       const float scale, const int chunk) {
    constexpr int NT = 128, NW = NT / 32, EL = (DH + 31) / 32;
    __shared__ float wm[NW], wl[NW], wacc[NW * DH];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int S = mk.S, T = mk.T, H = mk.H;
    const long row = blockIdx.x;
    const int i = (int)(row % S), h = (int)(row / S % H), b = (int)(row / S / H), g = h / (H / G);
    const int j0 = blockIdx.y * chunk, j1 = min(T, j0 + chunk);
    const long q0 = (((long)b * S + i) * H + h) * dh, kv0 = ((long)b * G + g) * T * dh;
    float qr[EL], acc[EL];
#pragma unroll
    for (int e = 0; e < EL; ++e) {
        const int d = lane + 32 * e;
        qr[e] = d < dh ? ld(q, q0 + d) : 0.0f;
        acc[e] = 0.0f;
    }
    float m = neg_inf(), l = 0.0f;
    for (int j = j0 + warp; j < j1; j += NW) {
        if (mk.attn_mask[(long)b * T + j] < 0) continue;
        const long kj = kv0 + (long)j * dh;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < EL; ++e) {
            const int d = lane + 32 * e;
            if (d < dh) dot += qr[e] * ld(k, kj + d);
        }
        dot = warp_sum(dot);
        const float s = __fadd_rn(__fmul_rn(dot, scale), mk.row_bias(mk.key_bias(b, h, j), b, h, i, j));
        const float m_new = fmaxf(m, s), alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
#pragma unroll
        for (int e = 0; e < EL; ++e) {
            const int d = lane + 32 * e;
            acc[e] = acc[e] * alpha + (d < dh ? p * ld(v, kj + d) : 0.0f);
        }
        m = m_new;
    }
    if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
    for (int e = 0; e < EL; ++e)
        if (lane + 32 * e < DH) wacc[warp * DH + lane + 32 * e] = acc[e];
    __syncthreads();
    float mx = neg_inf(), wt[NW];
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, wm[w]);
#pragma unroll
    for (int w = 0; w < NW; ++w) wt[w] = wm[w] == neg_inf() ? 0.0f : expf(wm[w] - mx);
    float *rec = part + (row * gridDim.y + blockIdx.y) * (long)(dh + 2);
    for (int d = tid; d < dh; d += NT) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) o += wacc[w * DH + d] * wt[w];
        rec[2 + d] = o;
    }
    if (tid == 0) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) sum += wl[w] * wt[w];
        rec[0] = mx;
        rec[1] = sum;
    }
}

// out[b,i,h,d] for the 32 dimensions d of blockIdx.y in row blockIdx.x, from the row's `splits` partial records:
// out = Σ_s w_s·acc_s / Σ_s w_s·l_s with w_s = exp(m_s − max m). The weights of up to COMBINE_TILE splits at a time go
// to shared memory; warp w sums splits w, w + 8, … for its lane's dimension, the first COMBINE_EARLY of them loaded
// with the maxima, then warp 0 adds the eight sums. Grid (B·H·S, ⌈dh/32⌉), COMBINE_THREADS threads.
constexpr int COMBINE_THREADS = 256, COMBINE_TILE = 1024, COMBINE_EARLY = 8;

template <typename E>
__device__ void combine(const float *part, E *out, const int S, const int H, const int dh, const int splits) {
    constexpr int NW = COMBINE_THREADS / 32;
    __shared__ float wt[COMBINE_TILE], red[NW][33];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, d = blockIdx.y * 32 + lane;
    const long row = blockIdx.x;
    const int i = (int)(row % S), h = (int)(row / S % H), b = (int)(row / S / H);
    const long stride = dh + 2;
    const float *rec = part + row * splits * stride;
    static_assert(NW * COMBINE_EARLY <= COMBINE_TILE, "the early values are in the first tile");
    float early[COMBINE_EARLY];
#pragma unroll
    for (int u = 0; u < COMBINE_EARLY; ++u) {
        const int s = warp + NW * u;
        early[u] = d < dh && s < splits ? rec[s * stride + 2 + d] : 0.0f;
    }
    float mx = neg_inf();
    for (int s = tid; s < splits; s += COMBINE_THREADS) mx = fmaxf(mx, rec[s * stride]);
    mx = warp_max(mx);
    if (lane == 0) red[warp][0] = mx;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, red[w][0]);
    float sum = 0.0f, o = 0.0f;
    for (int t0 = 0; t0 < splits; t0 += COMBINE_TILE) {
        const int n = min(COMBINE_TILE, splits - t0);
        __syncthreads();
        for (int s = tid; s < n; s += COMBINE_THREADS) {
            const float ms = rec[(t0 + s) * stride];
            const float w = ms == neg_inf() ? 0.0f : expf(ms - mx);
            wt[s] = w;
            sum += w * rec[(t0 + s) * stride + 1];
        }
        __syncthreads();
        if (d < dh) {
            int s = warp;
            if (t0 == 0) {
#pragma unroll
                for (int u = 0; u < COMBINE_EARLY; ++u, s += NW)
                    if (s < n) o += wt[s] * early[u];
            }
#pragma unroll 4
            for (; s < n; s += NW) o += wt[s] * rec[(t0 + s) * stride + 2 + d];
        }
    }
    sum = warp_sum(sum);
    __syncthreads();
    red[warp][lane] = o;
    if (lane == 0) red[warp][32] = sum;
    __syncthreads();
    if (warp == 0 && d < dh) {
        float x = 0.0f, total = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) x += red[w][lane], total += red[w][32];
        st(out, (((long)b * S + i) * H + h) * dh + d, x / total);
    }
}

// Split-key decode shared by the query heads of a KV head, for Dh ∈ {64, 128}: block (split, b·G + g, z) reads keys
// [split·chunk, +chunk) of KV head g once for the NQ queries n = z·NQ + [0, NQ) of the group's (H/G)·S, query n being
// head g·(H/G) + n / S, position n % S. Lane groups of LK = Dh/EPT threads hold one key row in 16-byte pieces (EPT
// elements each), so a warp reads 32/LK consecutive rows and the block 4·32/LK; U keys per thread are loaded before
// they are used. Online softmax per thread over its keys (one rescale per U keys), then merged over the lane groups
// and warps into the same partial records as `decode`, part[row][split], which `combine` reads.
// `load` reads a piece of a cached key or value: `ld_once` for bf16 and f16; a plain load for f32, whose Dh 64 form of
// two queries has no register to spare for the cache policy at its 128-register bound.
template <typename E> struct Piece {
    static constexpr int EPT = 8;
    __device__ static uint4 load(const E *p) { return ld_once(reinterpret_cast<const uint4 *>(p)); }
    __device__ static void unpack(const uint4 &r, float (&x)[8]) { unpackv<E>(r, x); }
};
template <> struct Piece<float> {
    static constexpr int EPT = 4;
    __device__ static uint4 load(const float *p) { return *reinterpret_cast<const uint4 *>(p); }
    __device__ static void unpack(const uint4 &r, float (&x)[4]) {
        x[0] = __uint_as_float(r.x), x[1] = __uint_as_float(r.y), x[2] = __uint_as_float(r.z), x[3] = __uint_as_float(r.w);
    }
};

// exp(x) for x ≤ 0 or -inf: expf for f32, ex2.approx for bf16 and f16, whose output rounding (2⁻⁹, 2⁻¹²) dwarfs its
// error.
template <typename E> __device__ __forceinline__ float decode_exp(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x * 1.4426950408889634f));
    return r;
}
template <> __device__ __forceinline__ float decode_exp<float>(float x) { return expf(x); }

template <typename E, int DH, int NQ>
__device__ void decode_gqa(const E *q, const E *k, const E *v, float *part, const Mask mk, const int G,
                           const float scale, const int chunk, const long long *pos) {
    constexpr int NT = 128, NW = NT / 32, EPT = Piece<E>::EPT, LK = DH / EPT, KPW = 32 / LK, KPB = NW * KPW;
    constexpr int U = NQ >= 8 ? 2 : 4;
    static_assert(DH % EPT == 0 && LK <= 32 && 32 % LK == 0, "head dimension");
    __shared__ float sm_m[NW][NQ], sm_l[NW][NQ], sm_acc[NW][NQ][DH];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, c = lane % LK;
    const int ks = warp * KPW + lane / LK;
    const int S = mk.S, T = mk.T, H = mk.H, per = H / G;
    const int b = blockIdx.y / G, g = blockIdx.y % G, n0 = blockIdx.z * NQ, nq = min(NQ, per * S - n0);
    const int j0 = blockIdx.x * chunk, j1 = min(T, j0 + chunk);
    const long kv0 = ((long)b * G + g) * T * DH + c * EPT;

    // Mask heads: hq[n] when Hm = H, else the one of the whole group (Hm ∈ {0, G}, as validated).
    const bool hm_per_head = mk.Hm == H;
    const int hm_group = mk.mask_head(g * per);
    int hq[NQ], iq[NQ], hm[NQ];
#pragma unroll
    for (int n = 0; n < NQ; ++n) {
        const int nn = min(n0 + n, per * S - 1);
        hq[n] = g * per + nn / S;
        iq[n] = nn % S;
        hm[n] = hm_per_head ? hq[n] : hm_group;
    }

    // One tile of U·KPB keys from `base`: K and V rows (`Piece::load`) and each key's mask inputs, every load issued
    // before any is used; `only` ≥ 0 loads key `only` alone (the others keep their values).
    uint4 kr[U], vr[U];
    long long am[U];
    float kx[NQ][U];
    auto load = [&](int base, int only) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int j = base + u * KPB + ks;
            if (only >= 0 && j != only) continue;
            kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            am[u] = -1;
#pragma unroll
            for (int n = 0; n < NQ; ++n) kx[n][u] = 0.0f;
            if (j < j1) {
                kr[u] = Piece<E>::load(k + kv0 + (long)j * DH);
                vr[u] = Piece<E>::load(v + kv0 + (long)j * DH);
                am[u] = mk.attn_mask[(long)b * T + j];
#pragma unroll
                for (int n = 0; n < NQ; ++n) kx[n][u] = mk.key_value(b, hq[n], hm[n], j);
            }
        }
    };
    // With `pos` (a recorded decode step: only slot *pos of the caches and attention mask is written by the kernels
    // before this one) and NQ ≤ 2 (registers to spare), the first tile is loaded before the grid's wait, and its key
    // at *pos again after it.
    const bool early = NQ <= 2 && pos != nullptr;
    const int fresh = early ? (int)*pos : -1;
    if (early) load(j0, -1);
    grid_entry();
    if (early && fresh >= j0 && fresh < j0 + U * KPB) load(j0, fresh);

    int wlast[NQ];
    unsigned wvk[NQ];
    float qf[NQ][EPT], acc[NQ][EPT], m[NQ], l[NQ], tq[NQ];
#pragma unroll
    for (int n = 0; n < NQ; ++n) {
        tq[n] = mk.tau_of(b, hm[n]);
        wvk[n] = 0u;
        wlast[n] = 0;
        if (mk.keep != nullptr) {
            const long kr_row = ((long)b * mk.Hm + hm[n]) * S + iq[n];
            wvk[n] = mk.keep[2 * kr_row];
            wlast[n] = (int)mk.keep[2 * kr_row + 1];
        }
        const uint4 raw = *reinterpret_cast<const uint4 *>(q + (((long)b * S + iq[n]) * H + hq[n]) * DH + c * EPT);
        Piece<E>::unpack(raw, qf[n]);
        m[n] = MASKED;
        l[n] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPT; ++e) acc[n][e] = 0.0f;
    }

    for (int base = j0; base < j1; base += U * KPB) {
        if (base != j0 || !early) load(base, -1);
        float sc[NQ][U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int j = base + u * KPB + ks;
            float kf[EPT];
            Piece<E>::unpack(kr[u], kf);
#pragma unroll
            for (int n = 0; n < NQ; ++n) {
                float dot = 0.0f;
#pragma unroll
                for (int e = 0; e < EPT; ++e) dot = fmaf(qf[n][e], kf[e], dot);
#pragma unroll
                for (int o = 1; o < LK; o <<= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                sc[n][u] = neg_inf();
                if (j < j1 && n < nq && am[u] >= 0) {
                    float bias = j <= T - S + iq[n] ? mk.key_bias_of(am[u], kx[n][u], tq[n]) : MASKED;
                    if (mk.keep != nullptr) bias = Mask::kept(bias, j, wvk[n], wlast[n]);
                    sc[n][u] = __fadd_rn(__fmul_rn(dot, scale), bias);
                }
            }
        }
#pragma unroll
        for (int n = 0; n < NQ; ++n) {
            float mx = m[n];
#pragma unroll
            for (int u = 0; u < U; ++u) mx = fmaxf(mx, sc[n][u]);
            const float alpha = decode_exp<E>(m[n] - mx);
            m[n] = mx;
            l[n] *= alpha;
#pragma unroll
            for (int e = 0; e < EPT; ++e) acc[n][e] *= alpha;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const float p = decode_exp<E>(sc[n][u] - mx);
                float vf[EPT];
                Piece<E>::unpack(vr[u], vf);
                l[n] += p;
#pragma unroll
                for (int e = 0; e < EPT; ++e) acc[n][e] = fmaf(p, vf[e], acc[n][e]);
            }
        }
    }

    // Merge the KPW lane groups of the warp, then the warps.
#pragma unroll
    for (int n = 0; n < NQ; ++n) {
#pragma unroll
        for (int o = LK; o < 32; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[n], o), lo = __shfl_xor_sync(0xffffffffu, l[n], o);
            const float mx = fmaxf(m[n], mo), wa = decode_exp<E>(m[n] - mx), wb = decode_exp<E>(mo - mx);
            l[n] = l[n] * wa + lo * wb;
#pragma unroll
            for (int e = 0; e < EPT; ++e) acc[n][e] = acc[n][e] * wa + __shfl_xor_sync(0xffffffffu, acc[n][e], o) * wb;
            m[n] = mx;
        }
        if (lane < LK) {
            if (lane == 0) sm_m[warp][n] = m[n], sm_l[warp][n] = l[n];
#pragma unroll
            for (int e = 0; e < EPT; ++e) sm_acc[warp][n][c * EPT + e] = acc[n][e];
        }
    }
    __syncthreads();
    for (int f = tid; f < nq * (DH + 2); f += NT) {
        const int n = f / (DH + 2), d = f % (DH + 2);
        float mx = MASKED;
#pragma unroll
        for (int w = 0; w < NW; ++w) mx = fmaxf(mx, sm_m[w][n]);
        float x = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            const float wt = decode_exp<E>(sm_m[w][n] - mx);
            x += (d == 0 ? 0.0f : d == 1 ? sm_l[w][n] : sm_acc[w][n][d - 2]) * wt;
        }
        const int nn = n0 + n, h = g * per + nn / S, i = nn % S;
        const long row = ((long)b * H + h) * S + i;
        part[(row * gridDim.x + blockIdx.x) * (long)(DH + 2) + d] = d == 0 ? mx : x;
    }
}

#define DECODE_GQA(E, NAME, DH, NQ)                                                                                    \
    extern "C" __global__ void __launch_bounds__(128, NQ <= 2 ? 4 : 1)                                                \
        masked_attention_##NAME##_decode_gqa_d##DH##_q##NQ(                                                            \
        const E *q, const E *k, const E *v, float *part, MASK_PARAMS, const int G, const float scale,                   \
        const int chunk, const long long *pos) {                                                                       \
        decode_gqa<E, DH, NQ>(q, k, v, part, MASK_INIT, G, scale, chunk, pos);                                         \
    }
#define DECODE_GQA_ALL(E, NAME)                                                                                        \
    DECODE_GQA(E, NAME, 64, 1)                                                                                         \
    DECODE_GQA(E, NAME, 64, 2)                                                                                         \
    DECODE_GQA(E, NAME, 64, 4)                                                                                         \
    DECODE_GQA(E, NAME, 64, 8)                                                                                         \
    DECODE_GQA(E, NAME, 128, 1)                                                                                        \
    DECODE_GQA(E, NAME, 128, 2)                                                                                        \
    DECODE_GQA(E, NAME, 128, 4)                                                                                        \
    DECODE_GQA(E, NAME, 128, 8)
DECODE_GQA_ALL(float, f32)
DECODE_GQA_ALL(bf16_t, bf16)
DECODE_GQA_ALL(f16_t, f16)

#define PREFILL(E, NAME, DH, BQ)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_prefill_d##DH(                         \
        const E *q, const E *k, const E *v, E *out, MASK_PARAMS, const int G, const int dh, const float scale) {       \
        grid_entry();                                                                                                  \
        prefill<E, DH, BQ>(q, k, v, out, MASK_INIT, G, dh, scale);                                                     \
    }
#define DECODE(E, NAME, DH)                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_decode_d##DH(                          \
        const E *q, const E *k, const E *v, float *part, MASK_PARAMS, const int G, const int dh, const float scale,    \
        const int chunk) {                                                                                             \
        grid_entry();                                                                                                  \
        decode<E, DH>(q, k, v, part, MASK_INIT, G, dh, scale, chunk);                                                  \
    }
// Query tile BQ per head-dimension capacity DH (cuda.rs has the same table): shared memory stays under 48 KB.
#define ALL(E, NAME)                                                                                                   \
    PREFILL(E, NAME, 16, 64)                                                                                           \
    PREFILL(E, NAME, 32, 64)                                                                                           \
    PREFILL(E, NAME, 64, 64)                                                                                           \
    PREFILL(E, NAME, 96, 32)                                                                                           \
    PREFILL(E, NAME, 128, 32)                                                                                          \
    PREFILL(E, NAME, 256, 8)                                                                                           \
    DECODE(E, NAME, 16)                                                                                                \
    DECODE(E, NAME, 32)                                                                                                \
    DECODE(E, NAME, 64)                                                                                                \
    DECODE(E, NAME, 96)                                                                                                \
    DECODE(E, NAME, 128)                                                                                               \
    DECODE(E, NAME, 256)                                                                                               \
    extern "C" __global__ void __launch_bounds__(COMBINE_THREADS) masked_attention_##NAME##_combine(                   \
        const float *part, E *out, const int S, const int H, const int dh, const int splits) {                         \
        grid_entry();                                                                                                  \
        combine<E>(part, out, S, H, dh, splits);                                                                       \
    }

ALL(float, f32)
ALL(bf16_t, bf16)
ALL(f16_t, f16)

// ---------------------------------------------------------------------------------------------------------------------
// Tensor-core prefill for E = bf16 or f16, Dh ∈ {64, 128}: mma.sync m16n8k16 (E inputs, f32 accumulators), any mode;
// the ratio threshold comes from `ratio_threshold`, the keep window from `keep_until` below.
// Block: 4 warps, 64·MT queries of one head; warp w takes queries i0 + 16·MT·w + [0, 16·MT) as MT row tiles of 16, so
// each K and V fragment it loads from shared memory feeds MT products (MT = 1 holds the warp's Q fragments in
// registers; MT = 2 loads them per key tile). Key tiles of 64 keys run through a two-stage cp.async pipeline (K, V and
// the per-key bias of tile n + 1 load while tile n computes); tiles past the block's last causal key are skipped
// unless a row of the block is still fully masked, in which case every remaining tile is visited as `prefill` does.
// The probabilities are rounded to E for the P·V product, and the row sums add those rounded values: for MT = 1 on
// the ALUs, for MT = 2 as P times a column of ones on the tensor cores (in P·V's order), which measured faster there
// and slower with one row tile. Grid (B·H, ⌈S/(64·MT)⌉): query tiles from the last (most keys) to the first, so the
// heaviest blocks start first.
// Shared memory (dynamic, bytes): Q [64·MT][Dh + 8], K and V [2][64][Dh + 8] (E, rows padded by 16 bytes so the
// eight rows of an ldmatrix fall in distinct banks), key bias f32 and keep-until position [2][64]; cuda.rs has the
// same formula.

// The keep window per key instead of per row, for `Additive`. With bias m_j (after padding and the ratio) and the
// order `j' beats j` ⇔ (order_key(m_j'), -j') > (order_key(m_j), -j), row i (position p = T − S + i) keeps visible key
// j exactly when fewer than W keys j' ≤ p beat j (invisible keys carry MIN and beat no key above MIN). That count
// grows with p, so key j is kept for the positions p < until_j, the position of the W-th key that beats j (INT_MAX
// when fewer than W do). Keys with m_j ≤ MIN get until_j = 0: MIN stays MIN either way; a -inf bias, which the row
// order puts below every MIN, becomes MIN as well (the reference keeps it at -inf only when fewer than W of the
// row's T biases are above -inf).
// order_keys: key[bhm][j] = order_key(bias of key j); grid (⌈T/256⌉, B·Hm), 256 threads.
extern "C" __global__ void __launch_bounds__(256) masked_attention_order_keys(const float *key_m,
                                                                             const long long *attn_mask,
                                                                             const float *tau, unsigned *key,
                                                                             const int T, const int Hm) {
    grid_entry();
    const int j = blockIdx.x * 256 + threadIdx.x;
    const long bhm = blockIdx.y;
    if (j >= T) return;
    const float m = key_m[bhm * T + j];
    const bool dropped = attn_mask[bhm / Hm * T + j] == 0 || (tau != nullptr && m < tau[bhm]);
    key[bhm * T + j] = order_key(dropped ? MASKED : m);
}

// keep_until: block (key block, bhm) of 32 keys × 8 segments of [0, T), each of 8 parts; the warp of segment s
// counts, for each of its 32 keys j and each part, the keys x of the part that beat j (x < j: key[x] ≥ key[j]; x > j:
// key[x] > key[j]), 16 keys a step in 16-byte loads; the thread whose segment holds the W-th beater of j, in index
// order, scans the part that holds it again to place it. Grid (⌈T/32⌉, B·Hm), 256 threads.
constexpr int UNTIL_KEYS = 32, UNTIL_SEGS = 8, UNTIL_PARTS = 8, UNTIL_STEP = 16;

// Keys x in [a, b) with key[x] ≥ k: single keys up to a multiple of 4, then 16-byte loads, UNTIL_STEP keys a step.
__device__ __forceinline__ unsigned count_at_least(const unsigned *key, long a, const long b, const unsigned k) {
    unsigned c = 0;
    for (; a < b && (a & 3) != 0; ++a) c += key[a] >= k;
    for (; a + UNTIL_STEP <= b; a += UNTIL_STEP) {
        uint4 x[UNTIL_STEP / 4];
#pragma unroll
        for (int u = 0; u < UNTIL_STEP / 4; ++u) x[u] = *reinterpret_cast<const uint4 *>(key + a + 4 * u);
#pragma unroll
        for (int u = 0; u < UNTIL_STEP / 4; ++u) c += (x[u].x >= k) + (x[u].y >= k) + (x[u].z >= k) + (x[u].w >= k);
    }
    for (; a < b; ++a) c += key[a] >= k;
    return c;
}

extern "C" __global__ void __launch_bounds__(256) masked_attention_keep_until(const unsigned *key, int *until,
                                                                             const int T, const int W) {
    grid_entry();
    __shared__ unsigned cnt[UNTIL_SEGS][UNTIL_KEYS];
    __shared__ unsigned part_cnt[UNTIL_SEGS][UNTIL_PARTS][UNTIL_KEYS];
    const int jl = threadIdx.x % UNTIL_KEYS, sg = threadIdx.x / UNTIL_KEYS, j = blockIdx.x * UNTIL_KEYS + jl;
    const unsigned *row = key + (long)blockIdx.y * T;
    // Segments of UNTIL_PARTS parts of plen keys, a multiple of the step (the last ones short or empty).
    const int plen = ((T + UNTIL_SEGS * UNTIL_PARTS - 1) / (UNTIL_SEGS * UNTIL_PARTS) + UNTIL_STEP - 1) /
                     UNTIL_STEP * UNTIL_STEP;
    const int x0 = min(T, sg * UNTIL_PARTS * plen), x1 = min(T, x0 + UNTIL_PARTS * plen);
    const bool live = j < T;
    const unsigned kj = live ? row[j] : 0u;
    const bool scan = live && kj > MASKED_KEY && W > 0;
    // Beaters of j in [a, b): at least kj below j, above kj after it (none above the largest key).
    const long r0 = (long)blockIdx.y * T;
    auto beaters = [&](int a, int b) {
        const int m = min(max(a, j), b);
        unsigned c = count_at_least(key, r0 + a, r0 + m, kj);
        if (kj != 0xffffffffu) c += count_at_least(key, r0 + m, r0 + b, kj + 1);
        return c;
    };
    unsigned c = 0;
    for (int u = 0; u < UNTIL_PARTS; ++u) {
        const int a = min(x1, x0 + u * plen), b = min(x1, a + plen);
        const unsigned cu = scan ? beaters(a, b) : 0u;
        part_cnt[sg][u][jl] = cu;
        c += cu;
    }
    cnt[sg][jl] = c;
    __syncthreads();
    if (!live) return;
    unsigned before = 0, total = 0;
#pragma unroll
    for (int s = 0; s < UNTIL_SEGS; ++s) {
        before += s < sg ? cnt[s][jl] : 0u;
        total += cnt[s][jl];
    }
    int *const out = until + (long)blockIdx.y * T + j;
    if (!scan || total < (unsigned)W) {
        if (sg == 0) *out = scan ? 0x7fffffff : 0;
        return;
    }
    if (!(before < (unsigned)W && (unsigned)W <= before + c)) return;
    // The need-th beater of j in [x0, x1): whole parts while they hold fewer, then one key at a time.
    unsigned need = (unsigned)W - before;
    int u = 0;
    for (; u + 1 < UNTIL_PARTS && part_cnt[sg][u][jl] < need; ++u) need -= part_cnt[sg][u][jl];
    int x = min(x1, x0 + u * plen);
    const int xe = min(x1, x + plen);
    for (; x < xe; ++x) {
        const unsigned kx = row[x];
        if (kx > kj || (kx == kj && x < j)) {
            if (--need == 0) break;
        }
    }
    *out = x;
}

// The keep window from ranks, for T ≤ RANK_MAX_KEYS. rank_j is key j's place in the order `beats` over the keys of its
// (b, hm), 0 for the best; theta_p is the rank of the W-th best key among positions [0, p] (T while fewer than W keys
// are there). theta_p never grows with p, and key j is kept at p ≥ j exactly when rank_j ≤ theta_p, so until_j is the
// first p ≥ j with theta_p < rank_j (j itself when j is never kept, INT_MAX when it stays), 0 for keys at or below MIN
// and for W = 0: the same windows as keep_until.
constexpr int RANK_MAX_KEYS = 65536, RANK_CHUNK = 2048, THETA_ROWS = 64, LIST_TILE = 64;

// keep_sort: block (c, bhm) sorts the composite keys (key_j, -j) of its RANK_CHUNK keys j ∈ c·RANK_CHUNK + [0,
// RANK_CHUNK) descending (bitonic; 0 past T, below every key) into sorted[bhm][c]. Thread t holds elements
// SORT_PER·t + [0, SORT_PER) in registers for the strides below SORT_PER; the longer strides go through shared memory,
// one element in SORT_PER + 1 left out so that both access patterns spread over the banks. Grid (⌈T/RANK_CHUNK⌉,
// B·Hm), RANK_CHUNK / SORT_PER threads.
constexpr int SORT_PER = 8, SORT_THREADS = RANK_CHUNK / SORT_PER;
__device__ __forceinline__ int sort_slot(int e) { return e + e / SORT_PER; }
__device__ __forceinline__ void sort_pair(unsigned long long &x, unsigned long long &y, bool desc) {
    if ((x < y) == desc) {
        const unsigned long long z = x;
        x = y;
        y = z;
    }
}

extern "C" __global__ void __launch_bounds__(SORT_THREADS) masked_attention_keep_sort(const unsigned *key,
                                                                                     unsigned long long *sorted,
                                                                                     const int T) {
    grid_entry();
    __shared__ unsigned long long v[RANK_CHUNK + RANK_CHUNK / SORT_PER];
    const long o = (long)blockIdx.y * T;
    const int t = threadIdx.x, j0 = blockIdx.x * RANK_CHUNK, own = SORT_PER * t;
#pragma unroll
    for (int i = 0; i < SORT_PER; ++i) {
        const int e = i * SORT_THREADS + t, j = j0 + e;
        v[sort_slot(e)] = j < T ? beat_key(key[o + j], j) : 0ull;
    }
    __syncthreads();
    unsigned long long r[SORT_PER];
#pragma unroll
    for (int i = 0; i < SORT_PER; ++i) r[i] = v[sort_slot(own + i)];
#pragma unroll
    for (int size = 2; size <= SORT_PER; size <<= 1) {
#pragma unroll
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
#pragma unroll
            for (int i = 0; i < SORT_PER; ++i)
                if ((i & stride) == 0) sort_pair(r[i], r[i + stride], ((own + i) & size) == 0);
        }
    }
    for (int size = 2 * SORT_PER; size <= RANK_CHUNK; size <<= 1) {
#pragma unroll
        for (int i = 0; i < SORT_PER; ++i) v[sort_slot(own + i)] = r[i];
        __syncthreads();
        for (int stride = size >> 1; stride >= SORT_PER; stride >>= 1) {
#pragma unroll
            for (int q = 0; q < SORT_PER / 2; ++q) {
                const int u = q * SORT_THREADS + t, a = 2 * u - (u & (stride - 1)), c = a + stride;
                unsigned long long x = v[sort_slot(a)], y = v[sort_slot(c)];
                sort_pair(x, y, (a & size) == 0);
                v[sort_slot(a)] = x;
                v[sort_slot(c)] = y;
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < SORT_PER; ++i) r[i] = v[sort_slot(own + i)];
        const bool desc = (own & size) == 0;
#pragma unroll
        for (int stride = SORT_PER / 2; stride > 0; stride >>= 1) {
#pragma unroll
            for (int i = 0; i < SORT_PER; ++i)
                if ((i & stride) == 0) sort_pair(r[i], r[i + stride], desc);
        }
    }
#pragma unroll
    for (int i = 0; i < SORT_PER; ++i) v[sort_slot(own + i)] = r[i];
    __syncthreads();
    unsigned long long *const out = sorted + ((long)blockIdx.y * gridDim.x + blockIdx.x) * RANK_CHUNK;
#pragma unroll
    for (int i = 0; i < SORT_PER; ++i) out[i * SORT_THREADS + t] = v[sort_slot(i * SORT_THREADS + t)];
}

// keep_rank: rank_j = the number of composite keys above j's over the sorted chunks (a binary search in each).
// Grid (⌈T/256⌉, B·Hm), 256 threads.
extern "C" __global__ void __launch_bounds__(256) masked_attention_keep_rank(const unsigned *key,
                                                                            const unsigned long long *sorted,
                                                                            int *rank, const int T) {
    grid_entry();
    const int j = blockIdx.x * 256 + threadIdx.x, chunks = (T + RANK_CHUNK - 1) / RANK_CHUNK;
    const long o = (long)blockIdx.y * T;
    if (j >= T) return;
    const unsigned long long mine = beat_key(key[o + j], j);
    const unsigned long long *const row = sorted + (long)blockIdx.y * chunks * RANK_CHUNK;
    int r = 0;
    for (int c = 0; c < chunks; ++c) {
        const unsigned long long *const v = row + (long)c * RANK_CHUNK;
        int a = 0, b = RANK_CHUNK;
        while (a < b) {
            const int m = (a + b) >> 1;
            if (v[m] > mine) a = m + 1;
            else b = m;
        }
        r += a;
    }
    rank[o + j] = r;
}

// keep_theta: block (c, bhm) takes the THETA_ROWS positions p from s = c·THETA_ROWS. With top = min(W, s) and the
// prefix ranks {rank_x : x < s} as a bitmap, the keys below p that can be theta_p are the prefix's ranks of order
// top − THETA_ROWS … top (ascending, `near`) and the ranks of x ∈ [s, p] below bound (the top-th smallest prefix rank
// when s ≥ W, else T); with n_p = top + |those x|, theta_p is the (n_p − W + 1)-th largest of them (n_p ≥ W).
// Grid (⌈T/THETA_ROWS⌉, B·Hm), THETA_ROWS threads; W ≥ 1.
extern "C" __global__ void __launch_bounds__(THETA_ROWS, 16) masked_attention_keep_theta(const int *rank, int *theta,
                                                                                     const int T, const int W) {
    grid_entry();
    constexpr int C = THETA_ROWS, WORDS = RANK_MAX_KEYS / 32;
    __shared__ unsigned bits[WORDS], wsum[32];
    __shared__ int near[C + 1], chunk[C], cand[2 * C + 1], cand_pos[2 * C + 1];
    const int tid = threadIdx.x, s = blockIdx.x * C, words = (T + 31) / 32;
    const int *const rk = rank + (long)blockIdx.y * T;
    for (int w = tid; w < words; w += C) bits[w] = 0;
    __syncthreads();
    for (int x = tid; x < s; x += C) {
        const int r = rk[x];
        atomicOr(&bits[r >> 5], 1u << (r & 31));
    }
    __syncthreads();
    // Set bits of consecutive words per thread, numbered from 1 in rank order.
    const int per = (words + C - 1) / C, w0 = min(words, tid * per), w1 = min(words, w0 + per);
    unsigned in_words = 0, total;
    for (int w = w0; w < w1; ++w) in_words += __popc(bits[w]);
    unsigned ord = block_exclusive_sum(in_words, wsum, &total);
    const int top = min(W, s), lo = max(1, top - C), n_near = top >= lo ? top - lo + 1 : 0;
    for (int w = w0; w < w1 && (int)ord < top; ++w) {
        unsigned x = bits[w];
        if ((int)(ord + __popc(x)) < lo) {
            ord += __popc(x);
            continue;
        }
        for (; x != 0; x &= x - 1) {
            if (++ord >= (unsigned)lo && ord <= (unsigned)top) near[ord - lo] = w * 32 + __ffs(x) - 1;
        }
    }
    __syncthreads();
    const int bound = s >= W ? near[n_near - 1] : T;
    const int p = s + tid, r = p < T ? rk[p] : T;
    const bool in = p < T && r < bound;
    chunk[tid] = in ? r : -1;
    const int n_in = __syncthreads_count(in);
    // Candidates by descending rank: the number of candidates above each one is its place.
    auto above_in_chunk = [&](int v) {
        int c = 0;
#pragma unroll 8
        for (int i = 0; i < C; ++i) c += chunk[i] > v;
        return c;
    };
    if (in) {
        int a = 0, b = n_near;
        while (a < b) {
            const int m = (a + b) >> 1;
            if (near[m] > r) b = m;
            else a = m + 1;
        }
        const int at = n_near - a + above_in_chunk(r);
        cand[at] = r;
        cand_pos[at] = p;
    }
    for (int i = tid; i < n_near; i += C) {
        const int at = n_near - 1 - i + above_in_chunk(near[i]);
        cand[at] = near[i];
        cand_pos[at] = -1;
    }
    __syncthreads();
    if (p >= T) return;
    int n_p = top;
    for (int i = 0; i <= tid; ++i) n_p += chunk[i] >= 0;
    int th = T;
    for (int i = 0, k = n_p - W + 1; k > 0 && i < n_near + n_in; ++i) {
        if (cand_pos[i] <= p && --k == 0) th = cand[i];
    }
    theta[(long)blockIdx.y * T + p] = th;
}

// keep_until_ranked: until_j from rank and theta (binary search over p ∈ [j, T)). Grid (⌈T/256⌉, B·Hm), 256 threads.
extern "C" __global__ void __launch_bounds__(256) masked_attention_keep_until_ranked(const unsigned *key,
                                                                                    const int *rank,
                                                                                    const int *theta, int *until,
                                                                                    const int T, const int W) {
    grid_entry();
    const int j = blockIdx.x * 256 + threadIdx.x;
    const long o = (long)blockIdx.y * T;
    if (j >= T) return;
    if (W <= 0 || key[o + j] <= MASKED_KEY) {
        until[o + j] = 0;
        return;
    }
    const int r = rank[o + j];
    int a = j, b = T;
    while (a < b) {
        const int m = (a + b) >> 1;
        if (theta[o + m] < r) b = m;
        else a = m + 1;
    }
    until[o + j] = a < T ? a : 0x7fffffff;
}

// keep_lists: block (query tile qt, bhm) lists, in index order, the keys kept at some position of the tile's rows
// [p0, p1] (p0 = T − S + qt·rows): the j ≤ p1 with until_j > max(j, p0), at most min(T, W + rows) of them since a
// position keeps at most W keys. count[bhm·tiles + qt] is their number, or -1 when they exceed cap or when a row of
// the tile keeps no key (no j ≤ p0 has until_j > j: rows before the first key above MIN, uniform over all keys), for
// which the attention visits every key, and -2 otherwise when p1 < W: every key above MIN that its rows see is kept,
// and the attention runs without the keep window. A list takes `stride` entries (cap rounded up to LIST_TILE, and
// LIST_TILE more), -1 after the keys up to the end of the tile of LIST_TILE after theirs. Grid (⌈S/rows⌉, B·Hm), 256
// threads, 4 keys a thread a step.
extern "C" __global__ void __launch_bounds__(256) masked_attention_keep_lists(const int *until, int *list, int *count,
                                                                             const int S, const int T,
                                                                             const int rows, const int cap,
                                                                             const int stride, const int W) {
    grid_entry();
    __shared__ unsigned wsum[32];
    const long tile = (long)blockIdx.y * gridDim.x + blockIdx.x;
    const int p0 = T - S + blockIdx.x * rows, p1 = min(T - 1, p0 + rows - 1);
    const int *const u = until + (long)blockIdx.y * T;
    int *const out = list + tile * stride;
    unsigned n = 0;
    bool any = false;
    for (int base = 0; base <= p1; base += 4 * 256) {
        const int j0 = base + 4 * threadIdx.x;
        bool take[4];
        unsigned c = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int j = j0 + e, uj = j <= p1 ? u[j] : 0;
            take[e] = j <= p1 && uj > max(j, p0);
            any |= j <= p0 && uj > j;
            c += take[e];
        }
        unsigned total;
        unsigned at = n + block_exclusive_sum(c, wsum, &total);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (take[e] && at < (unsigned)cap) out[at] = j0 + e;
            at += take[e];
        }
        n += total;
    }
    const bool listed = __syncthreads_or(any) && n <= (unsigned)cap;
    if (threadIdx.x == 0) count[tile] = !listed ? -1 : p1 < W ? -2 : (int)n;
    if (!listed || p1 < W) return;
    const int pad_end = min(stride, (int)(n + LIST_TILE - 1) / LIST_TILE * LIST_TILE + LIST_TILE);
    for (int e = n + threadIdx.x; e < pad_end; e += 256) out[e] = -1;
}

#if __CUDA_ARCH__ >= 800
namespace tc {
constexpr int BQ = 64, BK = 64;
static_assert(BK == LIST_TILE, "keep_lists pads to key tiles");
constexpr float LOG2E = 1.4426950408889634f;

__host__ __device__ constexpr int smem_bytes(int dh, int mt) {
    return (BQ * mt + 4 * BK) * (dh + 8) * 2 + 2 * BK * 8 + 3 * BK * 4;
}

// A compile-time flag for generic lambdas.
template <bool B> struct Flag {
    static constexpr bool value = B;
};

// How far a row's maximum may grow past the m its probabilities are taken against before o and l are rescaled, in
// units of log2 e (the warpgroup softmax's, whose scores and maxima are s·log2e): 8, so a probability is at most 2⁸
// (its bf16 rounding is relative, so no precision is lost). RESCALE_SLACK is the same slack in natural units.
constexpr float RESCALE_SLACK_L2 = 8.0f;
constexpr float RESCALE_SLACK = RESCALE_SLACK_L2 / LOG2E;
// The warpgroup softmax's tile step first takes the probabilities against the running maximum m as it stands; it
// keeps them when every thread's partial row sums stay below SPEC_BOUND, so that no score of the warp exceeds m by
// the rescale slack (each probability is below 2⁷ < 2⁸) and the step with the tile's maximum would not have moved m.
constexpr float SPEC_BOUND = 128.0f;

// The online softmax's step for one row, whose scores the four threads of a quad hold: mx, this thread's maximum
// with the running maximum m, becomes the row's m when it exceeds m by more than RESCALE_SLACK (always from -inf,
// never while both are MASKED); returns alpha = exp(m − mx) then, else 1. With L2 the scores, mx and m are in units
// of log2 e (RESCALE_SLACK_L2, alpha = 2^(m − mx)).
template <bool L2 = false> __device__ __forceinline__ float quad_max_step(float mx, float &m) {
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    if (!(mx - m > (L2 ? RESCALE_SLACK_L2 : RESCALE_SLACK))) return 1.0f;
    const float alpha = exp2_approx(L2 ? m - mx : (m - mx) * LOG2E);
    m = mx;
    return alpha;
}

// x summed over the quad.
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// exp(s − m) = 2^(s·log2e − m·log2e), one fma per score given ml = m·log2e, when every row maximum of the warp is
// below 4096 in magnitude: the rounding of m·log2e then moves p by under 2.5e-4 relative, an eighth of p's bf16
// rounding, and a score of MIN or -inf still gives 0. Otherwise exp_shifted, 2^((s − m)·log2e), which also gives a
// row whose maximum is MIN exp(MIN − MIN) = 1.
__device__ __forceinline__ float exp_scaled(float s, float ml) { return exp2_approx(fmaf(s, LOG2E, -ml)); }
__device__ __forceinline__ float exp_shifted(float s, float m) { return exp2_approx((s - m) * LOG2E); }

// The raw per-key inputs of Mask::key_bias, loaded before they are needed (no branch on loaded values).
struct KeyRaw {
    long long am;
    float x;
    int until;
};

// bhm = b·Hm + hm, the mask row of head h, which the caller computes once rather than per key tile.
__device__ __forceinline__ KeyRaw key_raw(const Mask &mk, const int *until, int b, int h, long bhm, int j) {
    KeyRaw r{mk.attn_mask[(long)b * mk.T + j], mk.key_value(b, h, (int)(bhm - (long)b * mk.Hm), j), 0x7fffffff};
    if (until != nullptr) r.until = until[bhm * mk.T + j];
    return r;
}

// With LIST (KEEP only), the block visits the `listed` keys of keep_lists in tiles of BK: their positions in ix_s,
// three stages (tile n's for its scores, n + 1's for its loads, n + 2's arriving with n + 1's keys), -1 past the list.
template <typename E, int DH, int MT, bool KEEP, bool LIST>
__device__ void prefill_mma(const E *q, const E *k, const E *v, E *out, const Mask mk, const int G,
                            const float scale, const int *until, const int *list, const int listed) {
    constexpr int NT = 128, LD = DH + 8, KD = DH / 16, NS = BK / 8, ND = DH / 8, CH = DH / 8, BQM = BQ * MT;
    static_assert(DH % 16 == 0 && ND % 2 == 0 && (MT == 1 || MT == 2), "head dimension, row tiles");
    extern __shared__ __align__(16) unsigned char smem[];
    E *const Qs = reinterpret_cast<E *>(smem);
    E *const Ks = Qs + BQM * LD;
    E *const Vs = Ks + 2 * BK * LD;
    float *const kb_s = reinterpret_cast<float *>(Vs + 2 * BK * LD);
    int *const ku_s = reinterpret_cast<int *>(kb_s + 2 * BK);
    int *const ix_s = ku_s + 2 * BK;

    // warp: one of the block's 4 (masked, so the compiler knows its range).
    const int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, gr = lane >> 2, tg = lane & 3;
    const int S = mk.S, T = mk.T, H = mk.H;
    const int b = blockIdx.x / H, h = blockIdx.x % H, g = h / (H / G);
    const int i0 = (gridDim.y - 1 - blockIdx.y) * BQM;
    const E *const kg = k + ((long)b * G + g) * T * DH;
    const E *const vg = v + ((long)b * G + g) * T * DH;

    // Q tile: 64·MT queries, zeros past S.
    for (int c = tid; c < BQM * CH; c += NT) {
        const int r = c / CH, col = c % CH * 8, i = i0 + r;
        cp_async16(Qs + r * LD + col, q + (((long)b * S + min(i, S - 1)) * H + h) * DH + col, i < S ? 16 : 0);
    }

    // The position of key r of tile n.
    auto key_at = [&](int n, int r) { return LIST ? ix_s[n % 3 * BK + r] : n * BK + r; };

    // The per-key bias of one tile: thread tid < 64 takes key tid.
    const bool kb_thread = tid < BK;
    const long kb_bhm = (long)b * mk.Hm + (long)h * mk.Hm / H;
    float tau_v = neg_inf();
    if (kb_thread && mk.mode == ADDITIVE && mk.tau != nullptr) tau_v = mk.tau[kb_bhm];
    auto fetch_bias = [&](int n) {
        const int j = kb_thread ? key_at(n, tid) : -1;
        return j >= 0 && j < T ? key_raw(mk, until, b, h, kb_bhm, j) : KeyRaw{1, 0.0f, 0};
    };
    auto store_bias = [&](int st, KeyRaw r) {
        if (!kb_thread) return;
        kb_s[st * BK + tid] = mk.key_bias_of(r.am, r.x, tau_v);
        ku_s[st * BK + tid] = r.until;
    };
    // K and V of tile n into stage st: thread tid takes 16 bytes at column kv_col of rows kv_row + (NT/CH)·u.
    static_assert(BK * CH % NT == 0 && NT % CH == 0, "tile loads");
    const int kv_row = tid / CH, kv_col = tid % CH * 8;
    auto load_kv = [&](int n, int st) {
#pragma unroll
        for (int u = 0; u < BK * CH / NT; ++u) {
            const int r = kv_row + NT / CH * u, j = key_at(n, r);
            const long off = (long)min(max(j, 0), T - 1) * DH + kv_col;
            const int bytes = j >= 0 && j < T ? 16 : 0;
            cp_async16(Ks + (st * BK + r) * LD + kv_col, kg + off, bytes);
            cp_async16(Vs + (st * BK + r) * LD + kv_col, vg + off, bytes);
        }
    };

    // This warp's rows of Qs start at wrow, its queries at iw; this thread's rows of row tile mt are queries
    // iw + 16·mt + gr + 8·r, which see the keys j ≤ lim0 + 16·mt + 8·r.
    const int wrow = 16 * MT * warp, iw = i0 + wrow;
    const int warp_lim = T - S + iw;  // the smallest limit of the warp's rows
    const int lim0 = warp_lim + gr;

    // Row sums of rows gr and gr + 8 in l[mt][0] and l[mt][2]: with MT = 2 an accumulator of P·1 (every column holds
    // the sum), with MT = 1 this thread's part of the sum, added over the quad at the end.
    float m[MT][2], l[MT][4], o[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m[mt][0] = m[mt][1] = neg_inf();
        l[mt][0] = l[mt][1] = l[mt][2] = l[mt][3] = 0.0f;
#pragma unroll
        for (int t = 0; t < ND; ++t) o[mt][t][0] = o[mt][t][1] = o[mt][t][2] = o[mt][t][3] = 0.0f;
    }
    // The Q fragments of one row tile start at qrow + 16·mt·LD; with one row tile they are held in qf.
    const E *const qrow = Qs + (wrow + (lane & 15)) * LD + (lane >> 4) * 8;
    unsigned qf[MT == 1 ? KD : 1][4];

    const int kend = min(T, T - S + min(i0 + BQM, S));
    const int n_all = LIST ? (listed + BK - 1) / BK : (T + BK - 1) / BK;
    int n = 0, n_end = LIST ? n_all : (kend + BK - 1) / BK;
    bool q_ready = false, extended = false;
    if (LIST) {
        if (kb_thread) ix_s[tid] = list[tid], ix_s[BK + tid] = list[BK + tid];
        __syncthreads();
    }

    load_kv(0, 0);
    store_bias(0, fetch_bias(0));
    cp_async_commit();
    for (;;) {
        for (; n < n_end; ++n) {
            const int st = n & 1, k0 = n * BK;
            const bool more = n + 1 < n_end;
            // One barrier per tile: after it tile n is visible and every warp is done with stage st ^ 1 (tile n − 1),
            // which tile n + 1 then fills while tile n computes.
            cp_async_wait<0>();
            __syncthreads();
            KeyRaw next{1, 0.0f, 0};
            if (more) {
                load_kv(n + 1, st ^ 1);
                if (LIST && kb_thread) cp_async4(ix_s + (n + 2) % 3 * BK + tid, list + (n + 2) * BK + tid, 4);
                cp_async_commit();
                next = fetch_bias(n + 1);
            }
            const E *const Kt = Ks + st * BK * LD;
            const E *const Vt = Vs + st * BK * LD;

            // s = q·kᵀ for the warp's 16·MT rows × 64 keys: n-tile t holds keys 8t + 2·tg + {0, 1}.
            float s[MT][NS][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int t = 0; t < NS; ++t) s[mt][t][0] = s[mt][t][1] = s[mt][t][2] = s[mt][t][3] = 0.0f;
            }
            const E *const krow = Kt + ((lane >> 4) * 8 + (lane & 7)) * LD + ((lane >> 3) & 1) * 8;
            if constexpr (MT == 1) {
                if (!q_ready) {
#pragma unroll
                    for (int kd = 0; kd < KD; ++kd) ldmatrix_x4(qf[kd], qrow + kd * 16);
                    q_ready = true;
                }
#pragma unroll
                for (int np = 0; np < NS / 2; ++np) {
#pragma unroll
                    for (int kd = 0; kd < KD; ++kd) {
                        unsigned kf[4];
                        ldmatrix_x4(kf, krow + np * 16 * LD + kd * 16);
                        mma<E>(s[0][2 * np], qf[kd], kf[0], kf[1]);
                        mma<E>(s[0][2 * np + 1], qf[kd], kf[2], kf[3]);
                    }
                }
            } else {
#pragma unroll 2
                for (int kd = 0; kd < KD; ++kd) {
                    unsigned qa[MT][4];
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(qa[mt], qrow + 16 * mt * LD + kd * 16);
#pragma unroll
                    for (int np = 0; np < NS / 2; ++np) {
                        unsigned kf[4];
                        ldmatrix_x4(kf, krow + np * 16 * LD + kd * 16);
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) {
                            mma<E>(s[mt][2 * np], qa[mt], kf[0], kf[1]);
                            mma<E>(s[mt][2 * np + 1], qa[mt], kf[2], kf[3]);
                        }
                    }
                }
            }

            // Scores with the bias: fl(q·k·scale + bias) (one rounding, where `prefill` rounds twice), -inf past T.
            const int *const ix_t = ix_s + n % 3 * BK;
            const bool full = k0 + BK - 1 <= warp_lim && k0 + BK <= T;
            const float *const kb_t = kb_s + st * BK;
            const int *const ku_t = ku_s + st * BK;
            // The per-score causal and end-of-keys tests are compiled only into the copy for partial tiles (`full` is
            // the same for the whole warp); listed keys take the causal test everywhere (a copy without it spills).
            float mx[MT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) mx[mt][0] = m[mt][0], mx[mt][1] = m[mt][1];
            auto add_bias = [&](auto partial) {
                constexpr bool PARTIAL = decltype(partial)::value;
#pragma unroll
                for (int t = 0; t < NS; ++t) {
                    const int jl = 8 * t + 2 * tg;
                    const float2 kb2 = *reinterpret_cast<const float2 *>(kb_t + jl);
                    int2 ku2 = make_int2(0, 0), ix2 = make_int2(0, 0);
                    if (KEEP) ku2 = *reinterpret_cast<const int2 *>(ku_t + jl);
                    if (LIST && PARTIAL) ix2 = *reinterpret_cast<const int2 *>(ix_t + jl);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int r = e >> 1, j = LIST ? ((e & 1) ? ix2.y : ix2.x) : k0 + jl + (e & 1);
                            float bias = (e & 1) ? kb2.y : kb2.x;
                            const int lim = lim0 + 16 * mt + 8 * r;
                            if (PARTIAL && j > lim) bias = MASKED;
                            if (KEEP && lim >= ((e & 1) ? ku2.y : ku2.x)) bias = MASKED;
                            float sc = fmaf(s[mt][t][e], scale, bias);
                            if (PARTIAL && !LIST && j >= T) sc = neg_inf();
                            s[mt][t][e] = sc;
                            mx[mt][r] = fmaxf(mx[mt][r], sc);
                        }
                    }
                }
            };
            if (full && !LIST) add_bias(Flag<false>{});
            else add_bias(Flag<true>{});

            // Online softmax: the four threads of a quad share a row.
            float alpha[MT][2];
            bool rescale = false;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    alpha[mt][r] = quad_max_step(mx[mt][r], m[mt][r]);
                    rescale |= alpha[mt][r] != 1.0f;
                }
            }
            // While no row maximum of the warp grows past its m by RESCALE_SLACK, alpha is 1 and nothing is rescaled.
            if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    l[mt][0] *= alpha[mt][0];
                    l[mt][1] *= alpha[mt][0];
                    l[mt][2] *= alpha[mt][1];
                    l[mt][3] *= alpha[mt][1];
#pragma unroll
                    for (int t = 0; t < ND; ++t) {
                        o[mt][t][0] *= alpha[mt][0];
                        o[mt][t][1] *= alpha[mt][0];
                        o[mt][t][2] *= alpha[mt][1];
                        o[mt][t][3] *= alpha[mt][1];
                    }
                }
            }
            // P as the A operand of P·V: key step kk covers n-tiles 2kk and 2kk + 1.
            // The exponent form: exp_scaled when every row maximum of the warp is below 4096, else exp_shifted.
            unsigned pf[MT][BK / 16][4];
            auto probabilities = [&](auto ex) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                    for (int t = 0; t < NS; ++t) {
                        const unsigned p01 = pack2<E>(ex(s[mt][t][0], mt, 0), ex(s[mt][t][1], mt, 0));
                        const unsigned p23 = pack2<E>(ex(s[mt][t][2], mt, 1), ex(s[mt][t][3], mt, 1));
                        if constexpr (MT == 1) {
                            l[mt][0] += word_lo<E>(p01) + word_hi<E>(p01);
                            l[mt][2] += word_lo<E>(p23) + word_hi<E>(p23);
                        }
                        pf[mt][t / 2][(t & 1) * 2] = p01;
                        pf[mt][t / 2][(t & 1) * 2 + 1] = p23;
                    }
                }
            };
            bool small = true;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) small &= fabsf(m[mt][0]) < 4096.0f && fabsf(m[mt][1]) < 4096.0f;
            if (__all_sync(0xffffffffu, small)) {
                float ml[MT][2];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ml[mt][0] = m[mt][0] * LOG2E, ml[mt][1] = m[mt][1] * LOG2E;
                probabilities([&](float x, int mt, int r) { return exp_scaled(x, ml[mt][r]); });
            } else {
                probabilities([&](float x, int mt, int r) { return exp_shifted(x, m[mt][r]); });
            }

            // o += P·V: d-tile pair dp covers dims 16·dp + [0, 16); with MT = 2, l += P·1 (bf16 ones).
#pragma unroll
            for (int kk = 0; kk < BK / 16; ++kk) {
                if constexpr (MT == 2) {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) mma<E>(l[mt], pf[mt][kk], ones2<E>(), ones2<E>());
                }
                const E *vrow = Vt + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + (lane >> 4) * 8;
#pragma unroll
                for (int dp = 0; dp < ND / 2; ++dp) {
                    unsigned vf[4];
                    ldmatrix_x4_trans(vf, vrow + dp * 16);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma<E>(o[mt][2 * dp], pf[mt][kk], vf[0], vf[1]);
                        mma<E>(o[mt][2 * dp + 1], pf[mt][kk], vf[2], vf[3]);
                    }
                }
            }

            if (more) store_bias(st ^ 1, next);
        }
        if (extended) break;
        // A row whose every score so far is MASKED sees MASKED for the remaining keys too: it becomes uniform over
        // all T keys, so the remaining tiles are visited (rare: padding or masks that hide a whole causal prefix).
        int fully = 0;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int r = 0; r < 2; ++r) fully |= iw + 16 * mt + gr + 8 * r < S && m[mt][r] == MASKED;
        }
        if (!__syncthreads_or(fully) || n_end == n_all) break;
        extended = true;
        n_end = n_all;
        load_kv(n, n & 1);
        store_bias(n & 1, fetch_bias(n));
        cp_async_commit();
    }
    cp_async_wait<0>();

    // out = o / l, staged through the warp's own rows of Qs for 16-byte stores.
    E *const Ow = Qs + wrow * LD;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l[mt][r] = 1.0f / (MT == 1 ? quad_sum(l[mt][2 * r]) : l[mt][2 * r]);
        }
        E *const Om = Ow + 16 * mt * LD;
#pragma unroll
        for (int t = 0; t < ND; ++t) {
            const int d = 8 * t + 2 * tg;
            *reinterpret_cast<unsigned *>(Om + gr * LD + d) = pack2<E>(o[mt][t][0] * l[mt][0], o[mt][t][1] * l[mt][0]);
            *reinterpret_cast<unsigned *>(Om + (gr + 8) * LD + d) =
                pack2<E>(o[mt][t][2] * l[mt][1], o[mt][t][3] * l[mt][1]);
        }
    }
    __syncwarp();
    for (int c = lane; c < 16 * MT * CH; c += 32) {
        const int r = c / CH, col = c % CH * 8, i = iw + r;
        if (i < S)
            *reinterpret_cast<uint4 *>(out + (((long)b * S + i) * H + h) * DH + col) =
                *reinterpret_cast<const uint4 *>(Ow + r * LD + col);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Warpgroup form (sm_90a): two warpgroups of 64 queries share each key tile of BK keys; S = Q·Kᵀ takes Q from
// registers (loaded once) and K from shared memory, O += P·V takes P from registers. Tiles are stored in 128-byte
// swizzled rows (sw128_desc), 64 columns a block; the scores, the keep window (KEEP: keep_until's positions, every key
// visited), the softmax and the stores follow prefill_mma's formulas.
constexpr int WG_BQ = 128, WG_NT = 256, WG_STAGES = 4;

__host__ __device__ constexpr int wg_smem_bytes(int dh, int bk) {
    return (WG_BQ + 2 * WG_STAGES * bk) * dh * 2 + WG_STAGES * bk * 8 + 1024;
}

// Byte offset of the 16-byte piece c of row r in a tile of R rows: 64-column blocks of R·128 bytes.
template <int R> __device__ __forceinline__ int sw128_at(int r, int c) {
    return (c >> 3) * R * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

template <typename E, int BK> struct WgScores;
template <typename E> struct WgScores<E, 64> {
    static __device__ __forceinline__ void mma(float (&d)[32], const unsigned (&a)[4], unsigned long long b, int acc) {
        wgmma_rs_n64<E>(d, a, b, acc);
    }
};
template <typename E> struct WgScores<E, 128> {
    static __device__ __forceinline__ void mma(float (&d)[64], const unsigned (&a)[4], unsigned long long b, int acc) {
        wgmma_rs_n128<E>(d, a, b, acc);
    }
};

// The online-softmax state of a warpgroup thread's two rows (gr and gr + 8 of its warp's 16 queries): the running
// maxima m (in units of log2 e, as wg_softmax's scores), this thread's part of the row sums l, and o[a], dims
// 64a + [0, 64) of both rows (prefill_mma's layout).
template <int DH> struct WgRows {
    static constexpr int DA = DH / 64;
    float m[2], l[2], o[DA][32];
    __device__ __forceinline__ WgRows() : m{neg_inf(), neg_inf()}, l{0.0f, 0.0f} {
#pragma unroll
        for (int a = 0; a < DA; ++a) {
#pragma unroll
            for (int e = 0; e < 32; ++e) o[a][e] = 0.0f;
        }
    }
};

// Issues s = q·kᵀ for one key tile (k_desc: the tile's first 64-column block of BK rows): n-tile t of s holds keys
// 8t + 2·tg + {0, 1} of rows gr (s[4t], s[4t + 1]) and gr + 8. The caller commits and waits.
template <typename E, int DH, int BK>
__device__ __forceinline__ void wg_scores(float (&s)[BK / 2], const unsigned (&qf)[DH / 16][4],
                                          unsigned long long k_desc) {
    wgmma_fence();
#pragma unroll
    for (int kd = 0; kd < DH / 16; ++kd) {
        const int blk = kd >> 2, kin = (kd & 3) * 32;
        WgScores<E, BK>::mma(s, qf[kd], desc_advance(k_desc, blk * BK * 128 + kin), kd > 0);
    }
}

// A key's bias (Mask::key_bias_of) in units of log2 e, as the warpgroup kernels keep it: MASKED and ±inf stay as they
// are, and a finite bias saturates at ±L2_BIAS_MAX (one unit below MASKED's magnitude) rather than overflow. SELECT
// computes the conversion for every bias and then picks, without a branch.
constexpr float L2_BIAS_MAX = 3.4028232635611926e+38f;
template <bool SELECT = false>
__device__ __forceinline__ float wg_key_bias(float bias) {
    const bool as_is = bias == MASKED || isinf(bias);
    if (!SELECT && as_is) return bias;
    const float l2 = fminf(fmaxf(bias * LOG2E, -L2_BIAS_MAX), L2_BIAS_MAX);
    return as_is ? bias : l2;
}

// One key tile's step of the online softmax, in units of log2 e: the scores s·scale_l2 (scale·log2e) with their bias
// (kb_t / ku_t: the tile's wg_key_bias and keep-until positions from this thread's first key 2·tg; k0 the tile's
// first key), the new row maxima, o and l rescaled, and P = 2^(s − m) (rounded to E, the A operand of P·V: key
// step kk covers n-tiles 2kk and 2kk + 1); a score of MASKED or -inf gives 0, and a row whose maximum is MASKED gives
// 2^(MASKED − MASKED) = 1. The masks and the rescaling rule are prefill_mma's; l adds the f32 probabilities, as the
// reference's softmax divides by the sum before rounding. The tile's maximum is only computed when a thread's partial
// row sum of the probabilities against the running one reaches SPEC_BOUND (those are then computed again).
template <typename E, int DH, int BK, bool KEEP>
__device__ __forceinline__ void wg_softmax(WgRows<DH> &w, float (&s)[BK / 2], unsigned (&pf)[BK / 16][4],
                                           const float *kb_t, const int *ku_t, const int k0, const int warp_lim,
                                           const int lim0, const int T, const float scale_l2, const int tg) {
    constexpr int NS = BK / 8;
    const bool full = k0 + BK - 1 <= warp_lim && k0 + BK <= T;
    auto add_bias = [&](auto partial) {
        constexpr bool PARTIAL = decltype(partial)::value;
#pragma unroll
        for (int t = 0; t < NS; ++t) {
            const int jl = 8 * t + 2 * tg;
            const float2 kb2 = *reinterpret_cast<const float2 *>(kb_t + 8 * t);
            int2 ku2 = make_int2(0, 0);
            if (KEEP) ku2 = *reinterpret_cast<const int2 *>(ku_t + 8 * t);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e >> 1, j = k0 + jl + (e & 1), lim = lim0 + 8 * r;
                float bias = (e & 1) ? kb2.y : kb2.x;
                if (PARTIAL && j > lim) bias = MASKED;
                if (KEEP && lim >= ((e & 1) ? ku2.y : ku2.x)) bias = MASKED;
                float sc = fmaf(s[4 * t + e], scale_l2, bias);
                if (PARTIAL && j >= T) sc = neg_inf();
                s[4 * t + e] = sc;
            }
        }
    };
    if (full) add_bias(Flag<false>{});
    else add_bias(Flag<true>{});

    // The probabilities against m as it stands, their sums added into `sum`.
    auto weigh = [&](float (&sum)[2]) {
#pragma unroll
        for (int t = 0; t < NS; ++t) {
            const float e0 = exp2_approx(s[4 * t] - w.m[0]), e1 = exp2_approx(s[4 * t + 1] - w.m[0]),
                        e2 = exp2_approx(s[4 * t + 2] - w.m[1]), e3 = exp2_approx(s[4 * t + 3] - w.m[1]);
            sum[0] += e0 + e1;
            sum[1] += e2 + e3;
            pf[t / 2][(t & 1) * 2] = pack2<E>(e0, e1);
            pf[t / 2][(t & 1) * 2 + 1] = pack2<E>(e2, e3);
        }
    };
    {
        float part[2] = {0.0f, 0.0f};
        weigh(part);
        if (__all_sync(0xffffffffu, part[0] < SPEC_BOUND && part[1] < SPEC_BOUND)) {
            w.l[0] += part[0];
            w.l[1] += part[1];
            return;
        }
    }
    float mx[2] = {w.m[0], w.m[1]};
#pragma unroll
    for (int i = 0; i < BK / 2; ++i) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);

    float alpha[2];
    bool rescale = false;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        alpha[r] = quad_max_step<true>(mx[r], w.m[r]);
        rescale |= alpha[r] != 1.0f;
    }
    if (__any_sync(0xffffffffu, rescale)) {
        w.l[0] *= alpha[0];
        w.l[1] *= alpha[1];
#pragma unroll
        for (int a = 0; a < WgRows<DH>::DA; ++a) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                w.o[a][4 * t] *= alpha[0];
                w.o[a][4 * t + 1] *= alpha[0];
                w.o[a][4 * t + 2] *= alpha[1];
                w.o[a][4 * t + 3] *= alpha[1];
            }
        }
    }
    weigh(w.l);
}

// Issues o += P·V for one key tile (v_desc: the tile's first 64-column block): V's rows are keys, so it is the N-major
// B operand, one 64-dim block a product. The caller commits, waits and holds o.
template <typename E, int DH, int BK>
__device__ __forceinline__ void wg_pv(WgRows<DH> &w, const unsigned (&pf)[BK / 16][4], unsigned long long v_desc) {
#pragma unroll
    for (int a = 0; a < WgRows<DH>::DA; ++a) wgmma_hold(w.o[a]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
        for (int a = 0; a < WgRows<DH>::DA; ++a)
            wgmma_rs_n64<E, 1>(w.o[a], pf[kk], desc_advance(v_desc, a * BK * 128 + kk * 16 * 128), 1);
    }
}

// As in prefill_mma: whether row r of this thread (query iw + gr + 8r) is below S and has seen only MASKED scores so
// far; wg_fully_masked: either of its two rows.
template <int DH> __device__ __forceinline__ bool wg_row_masked(const WgRows<DH> &w, int r, int iw, int gr, int S) {
    return iw + gr + 8 * r < S && w.m[r] == MASKED;
}
template <int DH> __device__ __forceinline__ int wg_fully_masked(const WgRows<DH> &w, int iw, int gr, int S) {
    int fully = 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) fully |= wg_row_masked(w, r, iw, gr, S);
    return fully;
}

// out = o / l for the warp's 16 queries iw + [0, 16) (rows past S skipped), 64 dims at a time through the warp's own
// 2 KiB of shared memory `stage` (16 swizzled rows of 128 bytes) for 16-byte stores.
template <typename E, int DH>
__device__ __forceinline__ void wg_store(WgRows<DH> &w, unsigned char *stage, E *out, int iw, int b, int h, int S,
                                         int H, int lane) {
    const int gr = lane >> 2, tg = lane & 3;
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) inv[r] = 1.0f / quad_sum(w.l[r]);
#pragma unroll
    for (int a = 0; a < WgRows<DH>::DA; ++a) {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            *reinterpret_cast<unsigned *>(stage + sw128_at<16>(gr, t) + 4 * tg) =
                pack2<E>(w.o[a][4 * t] * inv[0], w.o[a][4 * t + 1] * inv[0]);
            *reinterpret_cast<unsigned *>(stage + sw128_at<16>(gr + 8, t) + 4 * tg) =
                pack2<E>(w.o[a][4 * t + 2] * inv[1], w.o[a][4 * t + 3] * inv[1]);
        }
        __syncwarp();
#pragma unroll
        for (int c = lane; c < 16 * 8; c += 32) {
            const int r = c >> 3, col = c & 7, i = iw + r;
            if (i < S)
                *reinterpret_cast<uint4 *>(out + (((long)b * S + i) * H + h) * DH + 64 * a + col * 8) =
                    *reinterpret_cast<const uint4 *>(stage + sw128_at<16>(r, col));
        }
        __syncwarp();
    }
}

// The key tiles of bk keys up to the last key that a block of queries i0 + [0, WG_BQ) sees causally.
__device__ __forceinline__ int wg_tiles_to_causal_end(int S, int T, int i0, int bk) {
    return (min(T, T - S + min(i0 + WG_BQ, S)) + bk - 1) / bk;
}

// The warp's 16 rows of a 128-row swizzled Q tile as the A operand of S = Q·Kᵀ: key step kd covers dims 16kd + [0, 16).
template <int DH>
__device__ __forceinline__ void wg_load_q(unsigned (&qf)[DH / 16][4], const unsigned char *Qs, int row0, int lane) {
#pragma unroll
    for (int kd = 0; kd < DH / 16; ++kd)
        ldmatrix_x4(qf[kd], Qs + sw128_at<WG_BQ>(row0 + (lane & 15), 2 * kd + (lane >> 4)));
}

template <typename E, int DH, int BK, bool KEEP, bool FLAT>
__device__ void prefill_wgmma(const E *q, const E *k, const E *v, E *out, const Mask mk,
                              const int G, const float scale, const int *until) {
    constexpr int CH = DH / 8, KD = DH / 16, TILE = BK * DH * 2, NST = WG_STAGES;
    static_assert(DH % 64 == 0 && (BK == 64 || BK == 128), "head dimension, key tile");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    unsigned char *const Qs = smem_raw + ((1024u - (saddr(smem_raw) & 1023u)) & 1023u);
    unsigned char *const Ks = Qs + WG_BQ * DH * 2;
    unsigned char *const Vs = Ks + NST * TILE;
    float *const kb_s = reinterpret_cast<float *>(Vs + NST * TILE);
    int *const ku_s = reinterpret_cast<int *>(kb_s + NST * BK);

    // wg: the thread's warpgroup, warp: its warp within it (masked, so the compiler knows the ranges).
    const int tid = threadIdx.x, wg = (tid >> 7) & 1, lane = tid & 31, warp = (tid >> 5) & 3, gr = lane >> 2,
              tg = lane & 3;
    const int S = mk.S, T = mk.T, H = mk.H;
    const int b = blockIdx.x / H, h = blockIdx.x % H, g = h / (H / G);
    const int i0 = (gridDim.y - 1 - blockIdx.y) * WG_BQ;
    const E *const kg = k + ((long)b * G + g) * T * DH;
    const E *const vg = v + ((long)b * G + g) * T * DH;
    const float scale_l2 = scale * LOG2E;

    for (int c = tid; c < WG_BQ * CH; c += WG_NT) {
        const int r = c / CH, col = c % CH, i = i0 + r;
        cp_async16(Qs + sw128_at<WG_BQ>(r, col), q + (((long)b * S + min(i, S - 1)) * H + h) * DH + col * 8,
                   i < S ? 16 : 0);
    }

    const bool kb_thread = tid < BK;
    const int kb_hm = mk.mask_head(h);
    const long kb_bhm = (long)b * mk.Hm + kb_hm;
    const float tau_v = kb_thread ? mk.tau_of(b, kb_hm) : neg_inf();
    auto fetch_bias = [&](int n) {
        const int j = n * BK + tid;
        return kb_thread && j < T ? key_raw(mk, KEEP ? until : nullptr, b, h, kb_bhm, j) : KeyRaw{1, 0.0f, 0};
    };
    auto store_bias = [&](int st, KeyRaw r) {
        if (!kb_thread) return;
        const float bias = FLAT ? mk.key_bias_flat(r.am, r.x, tau_v) : mk.key_bias_of(r.am, r.x, tau_v);
        kb_s[st * BK + tid] = wg_key_bias(bias);
        if (KEEP) ku_s[st * BK + tid] = r.until;
    };
    // Thread tid loads the 16-byte piece lc of rows lr + RP·u of each tile: every piece sits at a fixed offset from
    // the first (RP a multiple of 8 keeps the swizzle's row phase), so a tile wholly below T takes no clamp and no
    // per-piece address arithmetic.
    constexpr int RP = WG_NT / CH;
    static_assert(BK * CH % WG_NT == 0 && WG_NT % CH == 0 && RP % 8 == 0, "tile loads");
    const int lr = tid / CH, lc = tid % CH;
    const int piece_at = sw128_at<BK>(lr, lc);
    const E *const kp = kg + lr * DH + lc * 8, *const vp = vg + lr * DH + lc * 8;  // the piece in key row lr
    auto load_kv = [&](int n, int st) {
        const int at = st * TILE + piece_at;
        if ((n + 1) * BK <= T) {
            const long off = (long)n * BK * DH;
#pragma unroll
            for (int u = 0; u < BK / RP; ++u) {
                cp_async16(Ks + at + u * RP * 128, kp + off + u * RP * DH, 16);
                cp_async16(Vs + at + u * RP * 128, vp + off + u * RP * DH, 16);
            }
            return;
        }
#pragma unroll
        for (int u = 0; u < BK / RP; ++u) {
            const int j = n * BK + lr + u * RP;
            const long off = (long)(min(j, T - 1) - lr) * DH;
            const int bytes = j < T ? 16 : 0;
            cp_async16(Ks + at + u * RP * 128, kp + off, bytes);
            cp_async16(Vs + at + u * RP * 128, vp + off, bytes);
        }
    };

    // This thread's rows are queries iw + gr and iw + gr + 8, which see the keys j ≤ lim0 and j ≤ lim0 + 8.
    const int row0 = 64 * wg + 16 * warp, iw = i0 + row0;
    const int warp_lim = T - S + iw, lim0 = warp_lim + gr;
    WgRows<DH> w;
    const unsigned long long k_desc = sw128_desc(Ks, 16), v_desc = sw128_desc(Vs, 1024);

    const int n_all = (T + BK - 1) / BK;
    int n = 0, n_end = wg_tiles_to_causal_end(S, T, i0, BK);
    // Tile n sits in stage n % NST. Tiles n0 … n0 + NST − 3 go out first, a cp.async group each (empty past n_end);
    // tile n's turn then starts the copies of tile n + NST − 2, another group, so that NST − 2 tiles are in flight.
    // The stage it takes is tile n − 2's: P·V of tile n − 1 may still be reading its own.
    auto prime = [&](int n0) {
        for (int u = 0; u < NST - 2; ++u) {
            if (n0 + u < n_end) {
                load_kv(n0 + u, (n0 + u) % NST);
                store_bias((n0 + u) % NST, fetch_bias(n0 + u));
            }
            cp_async_commit();
        }
    };

    prime(0);
    unsigned qf[KD][4];
    cp_async_wait<NST - 3>();
    __syncthreads();
    wg_load_q<DH>(qf, Qs, row0, lane);
    for (;;) {
        for (; n < n_end; ++n) {
            const int st = static_cast<unsigned>(n) % NST, k0 = n * BK, nn = n + NST - 2,
                      nst = static_cast<unsigned>(nn) % NST;
            const bool more = nn < n_end;
            // After the barrier tile n is visible to the products and every warpgroup has waited for its P·V of tile
            // n − 2 (with its scores of tile n − 1), whose stage tile nn takes.
            cp_async_wait<NST - 3>();
            fence_proxy_async();
            __syncthreads();
            KeyRaw next{1, 0.0f, 0};
            if (more) {
                load_kv(nn, nst);
                next = fetch_bias(nn);
            }
            cp_async_commit();

            // P·V of tile n − 1 is still running: this wait ends it with the scores.
            float s[BK / 2];
            wg_scores<E, DH, BK>(s, qf, desc_advance(k_desc, st * TILE));
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_hold(s);
#pragma unroll
            for (int a = 0; a < WgRows<DH>::DA; ++a) wgmma_hold(w.o[a]);
            unsigned pf[BK / 16][4];
            wg_softmax<E, DH, BK, KEEP>(w, s, pf, kb_s + st * BK + 2 * tg, ku_s + st * BK + 2 * tg, k0, warp_lim, lim0,
                                     T, scale_l2, tg);
            wg_pv<E, DH, BK>(w, pf, desc_advance(v_desc, st * TILE));
            wgmma_commit();

            if (more) store_bias(nst, next);
        }
        wgmma_wait<0>();
#pragma unroll
        for (int a = 0; a < WgRows<DH>::DA; ++a) wgmma_hold(w.o[a]);
        // As in prefill_mma: a row whose every score so far is MASKED becomes uniform over all T keys, in one more pass
        // at most (it ends at n_all). The barrier also ends every warpgroup's products before the stores below.
        if (!__syncthreads_or(wg_fully_masked(w, iw, gr, S)) || n_end == n_all) break;
        n_end = n_all;
        prime(n);
    }
    cp_async_wait<0>();
    wg_store<E, DH>(w, Qs + row0 * 128, out, iw, b, h, S, H, lane);
}

// The pipelined, persistent form for Dh 128 (sm_90a). Each block (one a multiprocessor) walks its share of the work
// items, 128 queries of one head each (tma_item). K and V tiles of 128 keys arrive by the copy engine (tensor maps)
// in three stages, each published on an mbarrier (`full`) with the keys' biases, which warpgroup 1 writes; warpgroup 0
// frees a stage on `empty` when done with it, and warpgroup 1, once done with it too, refills it with the tile three
// ahead in the block's sequence of tiles, which runs on from one item into the next (copies first, then the biases,
// loaded during the tile before). After the start no barrier of the whole block runs: the two warpgroups take turns at
// the tensor cores (named barriers 1 and 2, warpgroup 0 first), so that one computes its softmax while the other's
// products run, across items too. Q goes from global memory straight into registers; each warp stages its output in
// shared memory of its own. The scores, the keep window and the softmax are prefill_wgmma's.
constexpr int TMA_STAGES = 3;

__host__ __device__ constexpr int tma_smem_bytes() {
    return TMA_STAGES * (2 * 128 * 128 * 2 + 2 * 128 * 4) + 2 * TMA_STAGES * 8 + WG_NT / 32 * 2048 + 1024;
}

// The warp's 16 rows iw + [0, 16) of head h as the A operand of S = Q·Kᵀ (wg_load_q's layout), from q [B, S, H, DH];
// rows past S are zeros.
template <typename E, int DH>
__device__ __forceinline__ void wg_load_q_global(unsigned (&qf)[DH / 16][4], const E *q, int b, int h, int iw,
                                                 int S, int H, int lane) {
    const int gr = lane >> 2, tg = lane & 3;
    const unsigned *rows[2];
    bool in[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = iw + gr + 8 * r;
        in[r] = i < S;
        rows[r] = reinterpret_cast<const unsigned *>(q + (((long)b * S + min(i, S - 1)) * H + h) * DH) + tg;
    }
#pragma unroll
    for (int kd = 0; kd < DH / 16; ++kd) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const unsigned x = __ldg(rows[e & 1] + 8 * kd + 4 * (e >> 1));
            qf[kd][e] = in[e & 1] ? x : 0u;
        }
    }
}

// A work item of the persistent form: queries i0 + [0, WG_BQ) of head h of sequence b (KV head bg), which see the key
// tiles [0, n_end) of 128 keys.
struct TmaItem {
    int b, h, bg, i0, n_end;
};

// Item r (r = 0, 1, …) of this block, or false past its last. The items u = 0 … B·H·⌈S/128⌉ − 1 (an int: wgmma_fits)
// run from the last query tile to the first (B·H heads each), so from the most key tiles to the fewest; round r deals
// u = rP … rP + P − 1 to the P blocks, in reverse order in odd rounds, which evens out the causal triangle's work.
__device__ __forceinline__ bool tma_item(int r, int B, int S, int T, int H, int G, TmaItem &it) {
    const int P = gridDim.x, p = blockIdx.x, heads = B * H, nq = (S + WG_BQ - 1) / WG_BQ;
    const long ul = (long)r * P + ((r & 1) ? P - 1 - p : p);
    if (ul >= (long)heads * nq) return false;
    const int u = (int)ul, bh = u % heads;
    it.b = bh / H;
    it.h = bh % H;
    it.bg = it.b * G + it.h / (H / G);
    it.i0 = (nq - 1 - u / heads) * WG_BQ;
    it.n_end = wg_tiles_to_causal_end(S, T, it.i0, 128);
    return true;
}

// The rows of this thread (queries iw + gr and iw + gr + 8 below S) whose every score is MASKED: as in prefill_mma's
// extension pass, each of the T keys then has probability 1, so o becomes Σ_j V_j of KV head bg (v [B·G, T, DH]) and
// l T (a quarter in each thread of the quad). The warp sums V when any of its rows needs it, lane dims 4·lane + [0, 4).
template <typename E, int DH>
__device__ __forceinline__ void wg_uniform_rows(WgRows<DH> &w, const E *v, int bg, int T, int iw, int S,
                                                int lane) {
    static_assert(DH == 128, "one lane a group of four dims");
    const int gr = lane >> 2, tg = lane & 3;
    const bool uni[2] = {wg_row_masked(w, 0, iw, gr, S), wg_row_masked(w, 1, iw, gr, S)};
    if (!__any_sync(0xffffffffu, uni[0] || uni[1])) return;
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const uint2 *col = reinterpret_cast<const uint2 *>(v + (long)bg * T * DH) + lane;
#pragma unroll 8
    for (int j = 0; j < T; ++j) {
        const uint2 x = __ldg(col + (long)j * (DH / 4));
        sum[0] += word_lo<E>(x.x);
        sum[1] += word_hi<E>(x.x);
        sum[2] += word_lo<E>(x.y);
        sum[3] += word_hi<E>(x.y);
    }
    // o[a][4t + 2r + e] holds dim 64a + 8t + 2tg + e: sum[2(tg & 1) + e] of lane 16a + 2t + (tg >> 1).
#pragma unroll
    for (int a = 0; a < WgRows<DH>::DA; ++a) {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            const int src = 16 * a + 2 * t + (tg >> 1);
            const float s0 = __shfl_sync(0xffffffffu, sum[0], src), s1 = __shfl_sync(0xffffffffu, sum[1], src);
            const float s2 = __shfl_sync(0xffffffffu, sum[2], src), s3 = __shfl_sync(0xffffffffu, sum[3], src);
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                if (!uni[r]) continue;
                w.o[a][4 * t + 2 * r] = (tg & 1) ? s2 : s0;
                w.o[a][4 * t + 2 * r + 1] = (tg & 1) ? s3 : s1;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (uni[r]) w.l[r] = 0.25f * (float)T;
    }
}

template <typename E, bool KEEP>
__device__ void prefill_tma(const E *q, const E *v, const TensorMap &k_map, const TensorMap &v_map,
                            E *out, const Mask mk, const int B, const int G, const float scale, const int *until) {
    constexpr int DH = 128, BK = 128, KD = DH / 16, TILE = BK * DH * 2, NST = TMA_STAGES;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    unsigned char *const Ks = smem_raw + ((1024u - (saddr(smem_raw) & 1023u)) & 1023u);
    unsigned char *const Vs = Ks + NST * TILE;
    float *const kb_s = reinterpret_cast<float *>(Vs + NST * TILE);
    int *const ku_s = reinterpret_cast<int *>(kb_s + NST * BK);
    unsigned long long *const full = reinterpret_cast<unsigned long long *>(ku_s + NST * BK);
    unsigned long long *const empty = full + NST;

    const int tid = threadIdx.x, wg = (tid >> 7) & 1, lane = tid & 31, warp = (tid >> 5) & 3, gr = lane >> 2,
              tg = lane & 3, pt = tid & 127;
    const int S = mk.S, T = mk.T, H = mk.H;
    const int row0 = 64 * wg + 16 * warp;
    const float scale_l2 = scale * LOG2E;
    unsigned char *const out_stage = reinterpret_cast<unsigned char *>(empty + NST) + (row0 / 16) * 2048;

    // Warpgroup 1 produces the block's tiles in order: tile pn of item pi (round pr) is the next one, while pi_live.
    // Thread 0 of it starts the copies of a tile, then every thread pt writes the bias of key pt and arrives.
    TmaItem pi;
    int pr = 0, pn = 0;
    bool pi_live = false;
    int p_bhm = 0;
    float p_tau = neg_inf();
    auto producer_mask = [&]() {
        const int hm = mk.mask_head(pi.h);
        p_bhm = pi.b * mk.Hm + hm;
        p_tau = mk.tau_of(pi.b, hm);
    };
    auto advance = [&]() {
        if (++pn < pi.n_end) return;
        pn = 0;
        pi_live = tma_item(++pr, B, S, T, H, G, pi);
        if (pi_live) producer_mask();
    };
    auto fetch_bias = [&]() {
        const int j = pn * BK + pt;
        return j < T ? key_raw(mk, KEEP ? until : nullptr, pi.b, pi.h, p_bhm, j) : KeyRaw{1, 0.0f, 0};
    };
    auto start_copies = [&](int st) {
        if (pt != 0) return;
        mbar_expect_tx(&full[st], 2 * TILE);
#pragma unroll
        for (int c = 0; c < DH / 64; ++c) {
            tma_load_3d(Ks + st * TILE + c * BK * 128, k_map, &full[st], 64 * c, pn * BK, pi.bg);
            tma_load_3d(Vs + st * TILE + c * BK * 128, v_map, &full[st], 64 * c, pn * BK, pi.bg);
        }
    };
    // Without branches (key_bias_flat, SELECT): warpgroup 1 writes these between its turns at the tensor cores, on the
    // path that the two warpgroups' alternation follows.
    auto publish_bias = [&](int st, KeyRaw r, float tau_v) {
        kb_s[st * BK + pt] = wg_key_bias<true>(mk.key_bias_flat(r.am, r.x, tau_v));
        if (KEEP) ku_s[st * BK + pt] = r.until;
        mbar_arrive(&full[st]);
    };

    TmaItem ci;
    int cr = 0;
    bool ci_live = tma_item(0, B, S, T, H, G, ci);
    unsigned qf[KD][4];
    if (ci_live) wg_load_q_global<E, DH>(qf, q, ci.b, ci.h, ci.i0 + row0, S, H, lane);

    // The producing thread initialises the barriers and starts the first tiles' copies before the block's barrier,
    // so that they are in flight with Q's and the biases' loads; the biases are published after it.
    KeyRaw r0[NST];
    float tau0[NST];
    int first = 0;
    if (wg == 1) {
        if (pt == 0) {
            for (int st = 0; st < NST; ++st) {
                mbar_init(&full[st], 128);
                mbar_init(&empty[st], 128);
            }
            mbar_init_fence();
        }
        pi = ci;
        pi_live = ci_live;
        if (pi_live) producer_mask();
#pragma unroll
        for (int t = 0; t < NST; ++t) {
            if (!pi_live) break;
            start_copies(t);
            r0[t] = fetch_bias();
            tau0[t] = p_tau;
            first = t + 1;
            advance();
        }
    }
    __syncthreads();
    if (wg == 1) {
#pragma unroll
        for (int t = 0; t < NST; ++t) {
            if (t < first) publish_bias(t, r0[t], tau0[t]);
        }
        bar_arrive(1, WG_NT);
    }

    const unsigned long long k_desc = sw128_desc(Ks, 16), v_desc = sw128_desc(Vs, 1024);
    int g = 0;
    while (ci_live) {
        // This thread's rows are queries iw + gr and iw + gr + 8, which see the keys j ≤ lim0 and j ≤ lim0 + 8.
        const int iw = ci.i0 + row0, warp_lim = T - S + iw, lim0 = warp_lim + gr;
        WgRows<DH> w;
        for (int n = 0; n < ci.n_end; ++n, ++g) {
            const int st = g % NST, k0 = n * BK;
            const unsigned phase = (g / NST) & 1;
            const bool refill = wg == 1 && pi_live;
            mbar_wait(&full[st], phase);

            float s[BK / 2];
            bar_sync(1 + wg, WG_NT);
            wg_scores<E, DH, BK>(s, qf, desc_advance(k_desc, st * TILE));
            wgmma_commit();
            bar_arrive(2 - wg, WG_NT);
            KeyRaw next{1, 0.0f, 0};
            if (refill) next = fetch_bias();
            wgmma_wait<0>();
            wgmma_hold(s);
            unsigned pf[BK / 16][4];
            wg_softmax<E, DH, BK, KEEP>(w, s, pf, kb_s + st * BK + 2 * tg, ku_s + st * BK + 2 * tg, k0, warp_lim, lim0,
                                     T, scale_l2, tg);
            bar_sync(1 + wg, WG_NT);
            wg_pv<E, DH, BK>(w, pf, desc_advance(v_desc, st * TILE));
            wgmma_commit();
            bar_arrive(2 - wg, WG_NT);
            wgmma_wait<0>();
#pragma unroll
            for (int a = 0; a < WgRows<DH>::DA; ++a) wgmma_hold(w.o[a]);

            if (wg == 0) {
                mbar_arrive(&empty[st]);
            } else if (refill) {
                bar_sync(3, 128);
                mbar_wait(&empty[st], phase);
                start_copies(st);
                publish_bias(st, next, p_tau);
                advance();
            }
        }
        // The next item's Q loads go out before this one's stores.
        const TmaItem done = ci;
        ci_live = tma_item(++cr, B, S, T, H, G, ci);
        if (ci_live) wg_load_q_global<E, DH>(qf, q, ci.b, ci.h, ci.i0 + row0, S, H, lane);
        wg_uniform_rows<E, DH>(w, v, done.bg, T, iw, S, lane);
        wg_store<E, DH>(w, out_stage, out, iw, done.b, done.h, S, H, lane);
    }
    if (wg == 0) bar_sync(1, WG_NT);
}

#endif
}  // namespace tc

// `keep` is unused (null); `until` is keep_until's [B, Hm, T], or null without a keep window; `list` and `count` are
// keep_lists' for query tiles of 64·MT (`stride` entries each), or null: a tile of count -2 sees no key the window
// drops, one of -1 every key.
#define PREFILL_MMA(E, NAME, DH, MT)                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_prefill_mma_d##DH##_m##MT(             \
        const E *q, const E *k, const E *v, E *out, MASK_PARAMS, const int G, const float scale,   \
        const int *until, const int *list, const int *count, const int stride) {                                       \
        grid_entry();                                                                                                  \
        const Mask mk = MASK_INIT;                                                                                     \
        const long tile = ((long)blockIdx.x / H * Hm + (long)blockIdx.x % H * Hm / H) * gridDim.y + gridDim.y - 1 -    \
                          blockIdx.y;                                                                                  \
        const int listed = list != nullptr ? count[tile] : -1;                                                         \
        if (until == nullptr || listed == -2)                                                                          \
            tc::prefill_mma<E, DH, MT, false, false>(q, k, v, out, mk, G, scale, until, list, 0);                         \
        else if (listed < 0) tc::prefill_mma<E, DH, MT, true, false>(q, k, v, out, mk, G, scale, until, list, 0);         \
        else tc::prefill_mma<E, DH, MT, true, true>(q, k, v, out, mk, G, scale, until, list + tile * stride, listed);     \
    }
#define PREFILL_MMA_ALL(E, NAME)                                                                                       \
    PREFILL_MMA(E, NAME, 64, 1)                                                                                        \
    PREFILL_MMA(E, NAME, 64, 2)                                                                                        \
    PREFILL_MMA(E, NAME, 128, 1)                                                                                       \
    PREFILL_MMA(E, NAME, 128, 2)
PREFILL_MMA_ALL(bf16_t, bf16)
PREFILL_MMA_ALL(f16_t, f16)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The warpgroup form (`tc::prefill_wgmma`): 128 queries of one head a block, BK keys a tile; `keep` is unused (null);
// `until` is keep_until's [B, Hm, T] in the `_keep` kernels (a kernel of its own, so that the plain one keeps its
// registers), unused (null) in the others. FLAT (the `_flat` kernel) takes the keys' biases through
// Mask::key_bias_flat, without a branch on the mode: the form for every mode but the causal one, whose branches in
// Mask::key_bias_of return first.
#define PREFILL_WGMMA(E, NAME, DH, BK, MINB, KEEP, FLAT, SUFFIX)                                                       \
    extern "C" __global__ void __launch_bounds__(tc::WG_NT, MINB)                                                      \
        masked_attention_##NAME##_prefill_wgmma_d##DH##_k##BK##SUFFIX(                                                 \
            const E *q, const E *k, const E *v, E *out, MASK_PARAMS, const int G,                  \
            const float scale, const int *until) {                                                                     \
        grid_entry();                                                                                                  \
        tc::prefill_wgmma<E, DH, BK, KEEP, FLAT>(q, k, v, out, MASK_INIT, G, scale, until);                               \
    }
#define PREFILL_WGMMA_ALL(E, NAME)                                                                                     \
    PREFILL_WGMMA(E, NAME, 64, 64, 2, false, false, )                                                                  \
    PREFILL_WGMMA(E, NAME, 64, 64, 2, false, true, _flat)                                                              \
    PREFILL_WGMMA(E, NAME, 64, 64, 2, true, false, _keep)
PREFILL_WGMMA_ALL(bf16_t, bf16)
PREFILL_WGMMA_ALL(f16_t, f16)

// The pipelined, persistent form (`tc::prefill_tma`) for Dh 128: K and V through the tensor maps `k_map` and `v_map`
// of k and v ([B·G, T, 128] of E, boxes of 64 dims × 128 keys, 128-byte swizzle); `v` is read too, for rows whose
// every key is masked, `k` is not. Any grid width covers the B·H·⌈S/128⌉ items; one block a multiprocessor at most
// keeps every block's share even.
#define PREFILL_TMA(E, NAME, KEEP, SUFFIX)                                                                             \
    extern "C" __global__ void __launch_bounds__(tc::WG_NT, 1) masked_attention_##NAME##_prefill_tma_d128##SUFFIX(    \
        const E *q, const E *k, const E *v, E *out, MASK_PARAMS, const int G, const float scale,   \
        const int *until, const __grid_constant__ TensorMap k_map, const __grid_constant__ TensorMap v_map,           \
        const int B) {                                                                                                 \
        grid_entry();                                                                                                  \
        tc::prefill_tma<E, KEEP>(q, v, k_map, v_map, out, MASK_INIT, B, G, scale, until);                                 \
    }
PREFILL_TMA(bf16_t, bf16, false, )
PREFILL_TMA(bf16_t, bf16, true, _keep)
PREFILL_TMA(f16_t, f16, false, )
PREFILL_TMA(f16_t, f16, true, _keep)
#endif
#endif
