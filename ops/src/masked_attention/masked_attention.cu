// out[b,i,h,:] = Σ_j softmax_j(fl(q·k_j·scale) + bias[b,h,i,j])·v_j, online over key tiles; bias as in mod.rs (MIN = f32::MIN).
// Layout: q, out [B,S,H,Dh]; k, v [B,G,T,Dh]; key_m [B,Hm,T]; learned [H,T]; attn_mask i64 [B,T]; row r = (b·H + h)·S + i.
// Launch (128 threads): prefill grid (B·H, ⌈S/BQ⌉); decode grid (B·H·S, splits), then combine grid B·H·S.
// Before them (256 threads) when the mode needs it: ratio_threshold grid B·Hm -> tau; keep_window grid B·H·S -> keep.
constexpr float MASKED = -3.40282346638528859811704183484516925e+38f;

template <typename E> __device__ __forceinline__ float ld(const E *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <typename E> __device__ __forceinline__ void st(E *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }

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

enum { CAUSAL = 0, BOOLEAN = 1, ADDITIVE = 2, LEARNED = 3 };

struct Mask {
    const float *key_m, *learned;
    const long long *attn_mask;
    const float *tau;      // [B, Hm] ratio thresholds, or null when the ratio is inactive
    const unsigned *keep;  // [rows][2] keep-window (order key, last kept index), or null
    int mode, S, T, H, Hm;

    // The bias of key j before the causal mask and the keep window: padding, then the mode.
    __device__ float key_bias(int b, int h, int j) const {
        if (attn_mask[(long)b * T + j] == 0) return MASKED;
        if (mode == CAUSAL) return 0.0f;
        if (mode == LEARNED) return learned[(long)h * T + j] != 0.0f ? 0.0f : MASKED;
        const long bhm = (long)b * Hm + (long)h * Hm / H;
        const float m = key_m[bhm * T + j];
        if (mode == BOOLEAN) return m < 1.0f ? MASKED : 0.0f;
        return tau != nullptr && m < tau[bhm] ? MASKED : m;
    }

    // The full bias of key j for query i of row `row`, given kb = key_bias(b, h, j).
    __device__ float row_bias(float kb, long row, int i, int j) const {
        float bias = j <= T - S + i ? kb : MASKED;
        if (keep != nullptr) {
            const unsigned ok = order_key(bias), vk = keep[2 * row];
            const int last = (int)keep[2 * row + 1];
            if (!(ok > vk || (ok == vk && j <= last))) bias = MASKED;
        }
        return bias;
    }
};

#define MASK_PARAMS                                                                                                    \
    const float *key_m, const float *learned, const long long *attn_mask, const float *tau, const unsigned *keep,      \
        const int mode, const int S, const int T, const int H, const int Hm
#define MASK_INIT Mask{key_m, learned, attn_mask, tau, keep, mode, S, T, H, Hm}

// The rank-th smallest (0-based) of key_of(j) over the j in [0, n) that key_of takes; the count of taken keys must
// exceed rank. *rest = rank minus the number of taken keys below the result. Radix select, 8 bits a pass.
template <typename KeyOf>
__device__ unsigned radix_select(const int n, unsigned rank, KeyOf key_of, unsigned *hist, unsigned *bcast,
                                 unsigned *rest) {
    unsigned prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            unsigned key;
            if (key_of(j, key) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned d = 0, below = 0;
            while (d < 255 && below + hist[d] <= rank) below += hist[d++];
            bcast[0] = prefix | (d << shift);
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

// Per row, the W-th largest bias in (value descending, index ascending) order, as (order key, index): a key is kept
// when it comes no later in that order. W = 0 keeps nothing.
extern "C" __global__ void __launch_bounds__(256)
    masked_attention_keep_window(MASK_PARAMS, unsigned *keep_out, const int W) {
    __shared__ unsigned hist[256], bcast[2];
    const Mask mk = MASK_INIT;
    const long row = blockIdx.x;
    const int i = (int)(row % S), h = (int)(row / S % H), b = (int)(row / S / H);
    if (W == 0) {
        if (threadIdx.x == 0) keep_out[2 * row] = keep_out[2 * row + 1] = 0xffffffffu;
        return;
    }
    auto okey = [&](int j) { return order_key(mk.row_bias(mk.key_bias(b, h, j), row, i, j)); };
    unsigned rest, unused;
    const unsigned vk = ~radix_select(
        T, (unsigned)(W - 1),
        [&](int j, unsigned &key) {
            key = ~okey(j);
            return true;
        },
        hist, bcast, &rest);
    const unsigned last = radix_select(
        T, rest,
        [&](int j, unsigned &key) {
            key = (unsigned)j;
            return okey(j) == vk;
        },
        hist, bcast, &unused);
    if (threadIdx.x == 0) {
        keep_out[2 * row] = vk;
        keep_out[2 * row + 1] = last;
    }
}

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
                    const float bias = i < S ? mk.row_bias(kb_s[lane], ((long)b * H + h) * S + i, i, j) : 0.0f;
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
        const long kj = kv0 + (long)j * dh;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < EL; ++e) {
            const int d = lane + 32 * e;
            if (d < dh) dot += qr[e] * ld(k, kj + d);
        }
        dot = warp_sum(dot);
        const float s = __fadd_rn(__fmul_rn(dot, scale), mk.row_bias(mk.key_bias(b, h, j), row, i, j));
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

// out[b,i,h,:] of row blockIdx.x from its `splits` partial records.
template <typename E>
__device__ void combine(const float *part, E *out, const int S, const int H, const int dh, const int splits) {
    const long row = blockIdx.x;
    const int i = (int)(row % S), h = (int)(row / S % H), b = (int)(row / S / H);
    const long stride = dh + 2;
    const float *rec = part + row * splits * stride;
    float mx = neg_inf(), sum = 0.0f;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, rec[s * stride]);
    for (int s = 0; s < splits; ++s) {
        const float ms = rec[s * stride];
        sum += ms == neg_inf() ? 0.0f : rec[s * stride + 1] * expf(ms - mx);
    }
    for (int d = threadIdx.x; d < dh; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float ms = rec[s * stride];
            o += ms == neg_inf() ? 0.0f : rec[s * stride + 2 + d] * expf(ms - mx);
        }
        st(out, (((long)b * S + i) * H + h) * dh + d, o / sum);
    }
}

#define PREFILL(E, NAME, DH, BQ)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_prefill_d##DH(                         \
        const E *q, const E *k, const E *v, E *out, MASK_PARAMS, const int G, const int dh, const float scale) {       \
        prefill<E, DH, BQ>(q, k, v, out, MASK_INIT, G, dh, scale);                                                     \
    }
#define DECODE(E, NAME, DH)                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_decode_d##DH(                          \
        const E *q, const E *k, const E *v, float *part, MASK_PARAMS, const int G, const int dh, const float scale,    \
        const int chunk) {                                                                                             \
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
    extern "C" __global__ void __launch_bounds__(128) masked_attention_##NAME##_combine(                               \
        const float *part, E *out, const int S, const int H, const int dh, const int splits) {                         \
        combine<E>(part, out, S, H, dh, splits);                                                                       \
    }

ALL(float, f32)
ALL(bf16_t, bf16)
