// Per row of `vocab` logits (T), the k largest by lt_key (NaN lowest, ±0 equal), equal keys by the lower id: values
// f32 and ids i64 [rows, k], largest first. A radix select over the key's four bytes finds the k-th key (kth) and how
// many of the k have it (need); one pass in id order gathers the keys above kth and the first `need` equal to it; the
// block ranks the k.
// Launch: one block of LT_THREADS threads per row; k ≤ LT_MAX_K; vocab < 2^31.
#define LT_THREADS 512
#define LT_MAX_K 1024
#define LT_WARPS (LT_THREADS / 32)

__device__ __forceinline__ unsigned lt_key(float v) {
    if (v != v) return 0u;
    const unsigned b = v == 0.0f ? 0u : __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Warp 0: the digit d of the k-th largest key among those counted in hist, and how many of them to take with digit d
// (need minus the count of larger digits). Lane l holds the bins 8l .. 8l + 7.
__device__ __forceinline__ void lt_digit(const unsigned *hist, unsigned need, unsigned *digit, unsigned *left) {
    const int lane = threadIdx.x;
    unsigned own = 0;
    for (int j = 0; j < 8; ++j) own += hist[8 * lane + j];
    unsigned above = own;  // lanes ≥ lane
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned v = __shfl_down_sync(0xffffffffu, above, o);
        if (lane + o < 32) above += v;
    }
    const unsigned reach = __ballot_sync(0xffffffffu, above >= need);
    if (lane == 31 - __clz(reach)) {
        unsigned acc = above - own;
        int d = 8 * lane + 7;
        for (; d > 8 * lane; --d) {
            if (acc + hist[d] >= need) break;
            acc += hist[d];
        }
        *digit = d;
        *left = need - acc;
    }
}

template <typename T>
__device__ void logits_topk(const T *logits, float *values, long long *ids, const int vocab, const int k) {
    __shared__ unsigned hist[256];
    __shared__ unsigned ckey[LT_MAX_K];
    __shared__ int cid[LT_MAX_K];
    __shared__ unsigned warp_gt[LT_WARPS], warp_eq[LT_WARPS];
    __shared__ unsigned s_digit, s_left;
    const T *row = logits + (long)blockIdx.x * vocab;
    unsigned kth = 0, mask = 0, need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += LT_THREADS) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += LT_THREADS) {
            const unsigned key = lt_key(ld(row, i));
            if ((key & mask) == kth) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x < 32) lt_digit(hist, need, &s_digit, &s_left);
        __syncthreads();
        kth |= s_digit << shift;
        need = s_left;
        mask |= 255u << shift;
    }
    const unsigned above = k - need;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned base_gt = 0, base_eq = 0;
    for (int c0 = 0; c0 < vocab && (base_gt < above || base_eq < need); c0 += LT_THREADS) {
        const int i = c0 + threadIdx.x;
        const unsigned key = i < vocab ? lt_key(ld(row, i)) : 0u;
        const bool gt = i < vocab && key > kth, eq = i < vocab && key == kth;
        const unsigned bgt = __ballot_sync(0xffffffffu, gt), beq = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) {
            warp_gt[warp] = __popc(bgt);
            warp_eq[warp] = __popc(beq);
        }
        __syncthreads();
        unsigned off_gt = 0, off_eq = 0, all_gt = 0, all_eq = 0;
        for (int w = 0; w < LT_WARPS; ++w) {
            const unsigned g = warp_gt[w], e = warp_eq[w];
            off_gt += w < warp ? g : 0u;
            off_eq += w < warp ? e : 0u;
            all_gt += g;
            all_eq += e;
        }
        const unsigned lower = (1u << lane) - 1u;
        if (gt) {
            const unsigned s = base_gt + off_gt + __popc(bgt & lower);
            ckey[s] = key;
            cid[s] = i;
        }
        if (eq) {
            const unsigned r = base_eq + off_eq + __popc(beq & lower);
            if (r < need) {
                ckey[above + r] = key;
                cid[above + r] = i;
            }
        }
        base_gt += all_gt;
        base_eq += all_eq;
        __syncthreads();
    }
    __syncthreads();
    for (int a = threadIdx.x; a < k; a += LT_THREADS) {
        const unsigned ka = ckey[a];
        const int ia = cid[a];
        int rank = 0;
        for (int b = 0; b < k; ++b) {
            const unsigned kb = ckey[b];
            rank += kb > ka || (kb == ka && cid[b] < ia);
        }
        values[(long)blockIdx.x * k + rank] = ld(row, ia);
        ids[(long)blockIdx.x * k + rank] = ia;
    }
}

extern "C" __global__ void __launch_bounds__(LT_THREADS)
    logits_topk_f32(const float *logits, float *values, long long *ids, const int vocab, const int k) {
    grid_entry();
    logits_topk(logits, values, ids, vocab, k);
}

extern "C" __global__ void __launch_bounds__(LT_THREADS)
    logits_topk_bf16(const bf16_t *logits, float *values, long long *ids, const int vocab, const int k) {
    grid_entry();
    logits_topk(logits, values, ids, vocab, k);
}
