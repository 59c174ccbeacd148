// Per row of `vocab` logits (T), the k largest by lt_key (NaN lowest, ±0 equal), equal keys by the lower id: values
// f32 and ids i64 [rows, k], largest first. k = 1: a block reduction. Otherwise a radix select over the key's four
// bytes finds the k-th key (kth) and how many of the k have it (need); the keys above kth and the first `need` equal
// to it, in id order, are gathered and sorted.
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

// The best (key, then lower id) of a row as one word: the key above ~id, so the larger word ranks first.
__device__ __forceinline__ unsigned long long lt_word(unsigned key, int id) {
    return ((unsigned long long)key << 32) | (0xffffffffu - (unsigned)id);
}

template <typename T> __device__ void lt_argmax(const T *row, float *values, long long *ids, const int vocab) {
    __shared__ unsigned long long warp_best[LT_WARPS];
    unsigned long long best = 0;
    for (int i = threadIdx.x; i < vocab; i += LT_THREADS) best = max(best, lt_word(lt_key(ld(row, i)), i));
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < LT_WARPS; ++w) best = max(best, warp_best[w]);
        const int id = (int)(0xffffffffu - (unsigned)best);
        values[blockIdx.x] = ld(row, id);
        ids[blockIdx.x] = id;
    }
}

template <typename T>
__device__ void logits_topk(const T *logits, float *values, long long *ids, const int vocab, const int k) {
    __shared__ unsigned hist[256];
    __shared__ unsigned long long cand[LT_MAX_K];
    __shared__ unsigned warp_gt[LT_WARPS], warp_eq[LT_WARPS];
    __shared__ unsigned s_digit, s_left;
    const T *row = logits + (long)blockIdx.x * vocab;
    if (k == 1) {
        lt_argmax(row, values, ids, vocab);
        return;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
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
    // Each warp gathers from its own run of ids, the runs in warp order, so the keys equal to kth come lowest id
    // first: one sweep counts, the counts of the warps before place the warp's writes, a second sweep writes.
    const unsigned above = k - need;
    const int span = ((vocab + LT_WARPS - 1) / LT_WARPS + 31) & ~31;
    const int lo = min(warp * span, vocab), hi = min(lo + span, vocab);
    unsigned n_gt = 0, n_eq = 0;
    for (int c = lo; c < hi; c += 32) {
        const int i = c + lane;
        const unsigned key = i < hi ? lt_key(ld(row, i)) : 0u;
        n_gt += __popc(__ballot_sync(0xffffffffu, i < hi && key > kth));
        n_eq += __popc(__ballot_sync(0xffffffffu, i < hi && key == kth));
    }
    if (lane == 0) {
        warp_gt[warp] = n_gt;
        warp_eq[warp] = n_eq;
    }
    __syncthreads();
    unsigned base_gt = 0, base_eq = 0;
    for (int w = 0; w < warp; ++w) {
        base_gt += warp_gt[w];
        base_eq += warp_eq[w];
    }
    const unsigned lower = (1u << lane) - 1u;
    for (int c = lo; c < hi && (n_gt > 0 || (n_eq > 0 && base_eq < need)); c += 32) {
        const int i = c + lane;
        const unsigned key = i < hi ? lt_key(ld(row, i)) : 0u;
        const bool gt = i < hi && key > kth, eq = i < hi && key == kth;
        const unsigned bgt = __ballot_sync(0xffffffffu, gt), beq = __ballot_sync(0xffffffffu, eq);
        if (gt) cand[base_gt + __popc(bgt & lower)] = lt_word(key, i);
        const unsigned r = base_eq + __popc(beq & lower);
        if (eq && r < need) cand[above + r] = lt_word(key, i);
        base_gt += __popc(bgt);
        base_eq += __popc(beq);
        n_gt -= __popc(bgt);
        n_eq -= __popc(beq);
    }
    // A bitonic sort of the k words, padded with zeros (below every word) to a power of two, largest first.
    int pow2 = 2;
    while (pow2 < k) pow2 <<= 1;
    for (int j = k + threadIdx.x; j < pow2; j += LT_THREADS) cand[j] = 0;
    __syncthreads();
    for (int size = 2; size <= pow2; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < pow2 / 2; t += LT_THREADS) {
                const int a = 2 * t - (t & (stride - 1)), b = a + stride;
                const unsigned long long x = cand[a], y = cand[b];
                if ((x < y) == ((a & size) == 0)) {
                    cand[a] = y;
                    cand[b] = x;
                }
            }
            __syncthreads();
        }
    }
    for (int j = threadIdx.x; j < k; j += LT_THREADS) {
        const int id = (int)(0xffffffffu - (unsigned)cand[j]);
        values[(long)blockIdx.x * k + j] = ld(row, id);
        ids[(long)blockIdx.x * k + j] = id;
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

extern "C" __global__ void __launch_bounds__(LT_THREADS)
    logits_topk_f16(const f16_t *logits, float *values, long long *ids, const int vocab, const int k) {
    grid_entry();
    logits_topk(logits, values, ids, vocab, k);
}
