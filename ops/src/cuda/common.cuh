// Shared by every kernel: element access, bf16/f16 conversions, warp/block reductions, the ranking order, asynchronous
// copies and the tensor-core pieces, written without the toolkit headers.
#pragma once

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned int)h) << 16); }

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// IEEE half precision, held as a signed 16-bit word so that overloads tell it from bf16_t.
typedef short f16_t;
template <typename T> struct IsF16 {
    static constexpr bool value = false;
};
template <> struct IsF16<f16_t> {
    static constexpr bool value = true;
};

__device__ __forceinline__ float f16_to_f32(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16_t f32_to_f16(float f) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// v rounded to T and back (identity for f32).
template <typename T> __device__ __forceinline__ float round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_to<bf16_t>(float v) { return bf16_to_f32(f32_to_bf16(v)); }
template <> __device__ __forceinline__ float round_to<f16_t>(float v) { return f16_to_f32(f32_to_f16(v)); }

// The two 16-bit values of T (bf16 or f16) in a 32-bit word, as f32: the low half, the high half.
template <typename T> __device__ __forceinline__ float word_lo(unsigned w);
template <typename T> __device__ __forceinline__ float word_hi(unsigned w);
template <> __device__ __forceinline__ float word_lo<bf16_t>(unsigned w) { return __uint_as_float(w << 16); }
template <> __device__ __forceinline__ float word_hi<bf16_t>(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
template <> __device__ __forceinline__ float word_lo<f16_t>(unsigned w) { return f16_to_f32((f16_t)(w & 0xffffu)); }
template <> __device__ __forceinline__ float word_hi<f16_t>(unsigned w) { return f16_to_f32((f16_t)(w >> 16)); }

// (lo, hi) rounded to T (bf16 or f16) in one 32-bit word, lo in the low half.
template <typename T> __device__ __forceinline__ unsigned pack2(float lo, float hi);
template <> __device__ __forceinline__ unsigned pack2<bf16_t>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ unsigned pack2<f16_t>(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// One element of rotate_half RoPE, the value stored as T: element i < dim/2 is own·cos − partner·sin with partner =
// x[i + dim/2], element i ≥ dim/2 is own·cos + partner·sin with partner = x[i − dim/2]; each product is rounded to T,
// then the sum (PyTorch's order in T; plain f32 for T = f32).
template <typename T>
__device__ __forceinline__ float rope_rotate(float own, float partner, float c, float s, bool lower) {
    return round_to<T>(
        __fadd_rn(round_to<T>(__fmul_rn(own, c)), round_to<T>(__fmul_rn(lower ? -partner : partner, s))));
}

// Element access in f32 to a buffer of T (f32, bf16 or f16): one element at index i, or (ld4, st4) the four at i, a
// multiple of 4, of a buffer that is aligned4.
template <typename T> __device__ __forceinline__ float ld(const T *p, long i);
template <> __device__ __forceinline__ float ld<float>(const float *p, long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16_t>(const bf16_t *p, long i) { return bf16_to_f32(p[i]); }
template <> __device__ __forceinline__ float ld<f16_t>(const f16_t *p, long i) { return f16_to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T *p, long i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16_t>(bf16_t *p, long i, float v) { p[i] = f32_to_bf16(v); }
template <> __device__ __forceinline__ void st<f16_t>(f16_t *p, long i, float v) { p[i] = f32_to_f16(v); }
__device__ __forceinline__ void ld4(const float *p, long i, float v[4]) {
    const float4 t = *reinterpret_cast<const float4 *>(p + i);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void ld4(const bf16_t *p, long i, float v[4]) {
    const uint2 t = *reinterpret_cast<const uint2 *>(p + i);
    v[0] = __uint_as_float(t.x << 16), v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16), v[3] = __uint_as_float(t.y & 0xffff0000u);
}
__device__ __forceinline__ void ld4(const f16_t *p, long i, float v[4]) {
    const uint2 t = *reinterpret_cast<const uint2 *>(p + i);
    v[0] = word_lo<f16_t>(t.x), v[1] = word_hi<f16_t>(t.x), v[2] = word_lo<f16_t>(t.y), v[3] = word_hi<f16_t>(t.y);
}
__device__ __forceinline__ void st4(float *p, long i, const float v[4]) {
    *reinterpret_cast<float4 *>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(bf16_t *p, long i, const float v[4]) {
    uint2 t;
    t.x = (unsigned int)f32_to_bf16(v[0]) | ((unsigned int)f32_to_bf16(v[1]) << 16);
    t.y = (unsigned int)f32_to_bf16(v[2]) | ((unsigned int)f32_to_bf16(v[3]) << 16);
    *reinterpret_cast<uint2 *>(p + i) = t;
}
__device__ __forceinline__ void st4(f16_t *p, long i, const float v[4]) {
    *reinterpret_cast<uint2 *>(p + i) = make_uint2(pack2<f16_t>(v[0], v[1]), pack2<f16_t>(v[2], v[3]));
}
// Whether p may be read or written four elements at a time.
template <typename T> __device__ __forceinline__ bool aligned4(const T *p) {
    return ((unsigned long long)p & (4 * sizeof(T) - 1)) == 0;
}

// (va, ia) ranks before (vb, ib): the larger value first, NaN largest, equal values by the lower index.
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
    const bool na = va != va, nb = vb != vb;
    if (na || nb) return na && (!nb || ia < ib);
    return va > vb || (va == vb && ia < ib);
}

// The order key of (v, idx), decreasing in ranks_before's order: larger values first (NaN the largest, ±0 equal),
// then the lower idx.
__device__ __forceinline__ unsigned long long order_key(float v, int idx) {
    unsigned int b = v == 0.0f ? 0u : __float_as_uint(v);
    b = v != v ? 0xffffffffu : (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)b << 32) | (0xffffffffu - (unsigned int)idx);
}

// The activations by number (act::cuda::code): 0 silu x/(1+e^-x), 1 relu, 2 gelu 0.5·x·erfc(-x/√2), 3 gelu_tanh
// 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))).
__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
    case 0: return x / (1.0f + expf(-x));
    case 1: return x < 0.0f ? 0.0f : x;
    case 2: return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    default: return 0.5f * x * (1.0f + tanhf(0.7978846f * (x + 0.044715f * (x * x * x))));
    }
}

// The first statement of every kernel, or the first after loads of memory no kernel before it writes: constants
// (weights and keys; the GEMVs and pk_topk), the step's position (written by a copy before a decode step), or in a
// decode step the cache slots other than the step's own (the keep window and the GQA decode, which read that slot
// again after it). Under a programmatic dependency (the kernels of a
// recorded decode step, from sm_90) it waits until the kernels before this one have finished and their writes are
// visible, then lets the next kernel's blocks be scheduled while this one runs; after an ordinary launch both
// instructions return at once.
#ifdef CHEEMS_TRACE
// Trace builds (the crate's `cuda::trace`): the host points cheems_trace_buf at a buffer whose word 0 counts the
// records; thread 0 of block (0, 0, 0) of each kernel writes record i, words 4 + 4i ..: %globaltimer when it reached
// grid_entry() and when the grid's wait let it go, the module's tag (high half) with the threads of a block, and the
// grid (x, then y and z in 16 bits each). Records past cheems_trace_cap are counted, not written.
extern "C" {
__device__ unsigned long long *cheems_trace_buf = nullptr;
__device__ unsigned cheems_trace_tag = 0, cheems_trace_cap = 0;
}

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __noinline__ void trace_record(unsigned long long reached) {
    if (cheems_trace_buf == nullptr || (threadIdx.x | threadIdx.y | threadIdx.z | blockIdx.x | blockIdx.y | blockIdx.z))
        return;
    const unsigned long long released = global_ns();
    const unsigned long long i = atomicAdd(cheems_trace_buf, 1ull);
    if (i >= cheems_trace_cap) return;
    unsigned long long *r = cheems_trace_buf + 4 + 4 * i;
    r[0] = reached;
    r[1] = released;
    r[2] = (unsigned long long)cheems_trace_tag << 32 | blockDim.x * blockDim.y * blockDim.z;
    r[3] = gridDim.x | (unsigned long long)gridDim.y << 32 | (unsigned long long)gridDim.z << 48;
}
#endif

__device__ __forceinline__ void grid_entry() {
#ifdef CHEEMS_TRACE
    const unsigned long long reached = global_ns();
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
#ifdef CHEEMS_TRACE
    trace_record(reached);
#endif
}

// 16-byte loads of data a decode step reads once (weights, cached keys and values), marked first to leave L2 and not
// allocated in L1, so that what the step's kernels read again stays in L2 (logs/h200-2026-11-30zzz: 3 % of a decode
// step). `ld_once_const` for data no kernel writes, through the read-only path. Plain loads before sm_80.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define LD_ONCE(NC)                                                                                                    \
    uint4 v;                                                                                                           \
    asm volatile("{\n\t.reg .b64 pol;\n\tcreatepolicy.fractional.L2::evict_first.b64 pol, 1.0;\n\t"                    \
                 "ld.global" NC ".L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], pol;\n\t}"            \
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)                                                          \
                 : "l"(p));                                                                                            \
    return v;
#else
#define LD_ONCE(NC) return *p;
#endif
__device__ __forceinline__ uint4 ld_once(const uint4 *p) { LD_ONCE("") }
__device__ __forceinline__ uint4 ld_once_const(const uint4 *p) { LD_ONCE(".nc") }
#undef LD_ONCE

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; `scratch` holds 32 floats; every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -3.402823466e38f;
    return warp_max(v);
}

__device__ __forceinline__ float softplus_f32(float z) { return z > 20.0f ? z : log1pf(expf(z)); }

// Expert weights (the CDMoE mix and the product-key top-k that weighs its experts).
// Down packs a lane of down_dot loads before it consumes the first.
#define EM_BATCH 4

__device__ __forceinline__ void ldv(const float *p, long i, float (&v)[1]) { v[0] = p[i]; }
__device__ __forceinline__ void ldv(const bf16_t *p, long i, float (&v)[1]) { v[0] = bf16_to_f32(p[i]); }
__device__ __forceinline__ void ldv(const float *p, long i, float (&v)[4]) {
    const float4 t = *reinterpret_cast<const float4 *>(p + i);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void ldv(const bf16_t *p, long i, float (&v)[4]) {
    const uint2 t = *reinterpret_cast<const uint2 *>(p + i);
    v[0] = __uint_as_float(t.x << 16), v[1] = __uint_as_float(t.x & 0xffff0000u);
    v[2] = __uint_as_float(t.y << 16), v[3] = __uint_as_float(t.y & 0xffff0000u);
}
__device__ __forceinline__ void ldv(const bf16_t *p, long i, float (&v)[8]) {
    const uint4 t = *reinterpret_cast<const uint4 *>(p + i);
    const unsigned int w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        v[2 * j] = __uint_as_float(w[j] << 16);
        v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
}
__device__ __forceinline__ void ldv(const f16_t *p, long i, float (&v)[1]) { v[0] = f16_to_f32(p[i]); }
__device__ __forceinline__ void ldv(const f16_t *p, long i, float (&v)[4]) { ld4(p, i, v); }
__device__ __forceinline__ void ldv(const f16_t *p, long i, float (&v)[8]) {
    const uint4 t = *reinterpret_cast<const uint4 *>(p + i);
    const unsigned int w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) v[2 * j] = word_lo<f16_t>(w[j]), v[2 * j + 1] = word_hi<f16_t>(w[j]);
}
template <typename T> __device__ __forceinline__ bool aligned16(const T *p) {
    return ((unsigned long long)p & 15) == 0;
}

// The softmax of one head's k scores, taken by one warp: p_j = e^{s_j − m}/sum, divided by total = Σ_j p_j when norm.
struct HeadSoftmax {
    float m, sum, total;
};
__device__ __forceinline__ HeadSoftmax head_softmax(const float *s, const int k, const int lane) {
    float m = __int_as_float(0xff800000);
    for (int j = lane; j < k; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j < k; j += 32) sum += expf(s[j] - m);
    sum = warp_sum(sum);
    float total = 0.0f;
    for (int j = lane; j < k; j += 32) total += expf(s[j] - m) / sum;
    return {m, sum, warp_sum(total)};
}
__device__ __forceinline__ float head_prob(const HeadSoftmax &hs, const float *s, const int j, const int norm) {
    const float p = expf(s[j] - hs.m) / hs.sum;
    return norm ? p / hs.total : p;
}

// A 16-byte pack of T as floats: four f32, or eight bf16 or f16.
template <typename T> __device__ __forceinline__ void unpackv(const uint4 &t, float (&v)[16 / sizeof(T)]) {
    const unsigned int w[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) v[2 * j] = word_lo<T>(w[j]), v[2 * j + 1] = word_hi<T>(w[j]);
}
template <> __device__ __forceinline__ void unpackv<float>(const uint4 &t, float (&v)[4]) {
    v[0] = __uint_as_float(t.x), v[1] = __uint_as_float(t.y), v[2] = __uint_as_float(t.z), v[3] = __uint_as_float(t.w);
}

// Σ_c x[c]·down[c] over dim columns by one warp (every lane gets the sum): lanes stride over 16-byte packs when dim
// and both rows allow (`down_packed`), each lane holding EM_BATCH packs of down (`ld_once_const`: rows a step reads
// once) before it consumes the first; else over elements. The first batch comes from `down_head`, which the caller
// issues before its other work (the head's softmax) so that the row's round trip overlaps it.
struct DownHead {
    uint4 d[EM_BATCH];
};
template <typename T> __device__ __forceinline__ bool down_packed(const T *xr, const T *dr, const int dim) {
    return dim % (16 / (int)sizeof(T)) == 0 && aligned16(xr) && aligned16(dr);
}
// Packs c0 + 32·t (below `packs`) of the down row.
template <typename T>
__device__ __forceinline__ void down_batch(DownHead &h, const T *dr, const int c0, const int packs) {
    const uint4 *d4 = reinterpret_cast<const uint4 *>(dr);
#pragma unroll
    for (int t = 0; t < EM_BATCH; ++t) {
        if (c0 + 32 * t < packs) h.d[t] = ld_once_const(d4 + c0 + 32 * t);
    }
}
template <typename T>
__device__ __forceinline__ DownHead down_head(const T *xr, const T *dr, const int dim, const int lane) {
    DownHead h;
    if (down_packed(xr, dr, dim)) down_batch(h, dr, lane, dim / (16 / (int)sizeof(T)));
    return h;
}
template <typename T>
__device__ __forceinline__ float down_dot(const T *xr, const T *dr, const int dim, const int lane, DownHead h) {
    constexpr int V = 16 / sizeof(T);
    float d = 0.0f;
    if (down_packed(xr, dr, dim)) {
        const int packs = dim / V;
        for (int c0 = lane; c0 < packs; c0 += 32 * EM_BATCH) {
            if (c0 != lane) down_batch(h, dr, c0, packs);
#pragma unroll
            for (int t = 0; t < EM_BATCH; ++t) {
                if (c0 + 32 * t >= packs) break;
                float a[V], b[V];
                ldv(xr, (long)(c0 + 32 * t) * V, a);
                unpackv<T>(h.d[t], b);
#pragma unroll
                for (int i = 0; i < V; ++i) d += a[i] * b[i];
            }
        }
    } else {
        for (int c = lane; c < dim; c += 32) {
            float a[1], b[1];
            ldv(xr, c, a);
            ldv(dr, c, b);
            d += a[0] * b[0];
        }
    }
    return warp_sum(d);
}

// An expert's routing weight from its down dot d and probability p: act(d·p) when `after`, else act(d)·p.
__device__ __forceinline__ float expert_weight(float d, float p, int act, int after) {
    return after ? activate(d * p, act) : activate(d, act) * p;
}

// Asynchronous copies global -> shared (sm_80 on), in groups committed and waited for by the issuing thread.
__device__ __forceinline__ unsigned saddr(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
// 16 bytes global -> shared; bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr(dst)), "l"(src), "r"(bytes));
}
// 4 bytes global -> shared; bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(saddr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Tensor-core pieces (sm_80 on): ldmatrix of four 8×8 bf16 matrices (rows of 16 bytes at 16-byte-aligned addresses,
// lane i giving row i % 8 of matrix i / 8), plain or transposed.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p)));
}

// d += a·b for a 16×16 row-major A, a 16×8 column-major B (both of E: bf16 or f16) and a 16×8 f32 D.
#define MMA_M16N8K16(TY)                                                                                               \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "         \
                 "{%8, %9}, {%0, %1, %2, %3};\n"                                                                        \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                        \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <typename E> __device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <> __device__ __forceinline__ void mma<bf16_t>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    MMA_M16N8K16("bf16");
}
template <> __device__ __forceinline__ void mma<f16_t>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    MMA_M16N8K16("f16");
}
#undef MMA_M16N8K16

// (1, 1) in E (bf16 or f16), one 32-bit word.
template <typename E> __device__ __forceinline__ constexpr unsigned ones2();
template <> __device__ __forceinline__ constexpr unsigned ones2<bf16_t>() { return 0x3f803f80u; }
template <> __device__ __forceinline__ constexpr unsigned ones2<f16_t>() { return 0x3c003c00u; }

__device__ __forceinline__ float exp2_approx(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
}

// Warpgroup tensor-core products (sm_90a): four warps issue one product together, asynchronously, on operands in
// shared memory (and A possibly in registers); results are in their registers once `wgmma_wait` returns.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The descriptor of a bf16 operand stored in 128-byte swizzled rows: the 16-byte piece c of row r lies at
// 128·r + 16·(c ^ (r % 8)) from its 8-row group, groups 1024 bytes apart (the stride byte offset), groups 1024-byte
// aligned. `lead` (the leading byte offset) separates 64-column blocks of an N-major operand; a K-major operand and a
// 64-column N-major one do not read it.
__device__ __forceinline__ unsigned long long sw128_desc(const void *p, unsigned lead) {
    return (unsigned long long)((saddr(p) & 0x3ffffu) >> 4) | (unsigned long long)((lead & 0x3ffffu) >> 4) << 16 |
           (unsigned long long)(1024 >> 4) << 32 | 1ull << 62;
}
// The descriptor of the operand `bytes` (a multiple of 16) past d's: the start address is d's low 14 bits in units of
// 16 bytes, and a shared-memory address stays below 2^18, so the addition never carries into the other fields.
__device__ __forceinline__ unsigned long long desc_advance(unsigned long long d, unsigned bytes) {
    return d + (bytes >> 4);
}
// A CUtensorMap (cuTensorMapEncodeTiled's 128 bytes), passed by value as a `const __grid_constant__` parameter.
struct alignas(64) TensorMap {
    unsigned long long raw[16];
};
// Copies the box at element coordinates (c0, c1, c2) of the 3-D tensor `map` describes into shared memory at dst, and
// counts its bytes on the mbarrier `bar` (cp.async.bulk.tensor; rows past the tensor's ends arrive as zeros).
__device__ __forceinline__ void tma_load_3d(void *dst, const TensorMap &map, unsigned long long *bar, int c0, int c1,
                                            int c2) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}],"
                 " [%2];\n" ::"r"(saddr(dst)),
                 "l"(&map), "r"(saddr(bar)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}
// Shared-memory barriers (mbarrier): a phase completes when `count` threads have arrived and every byte announced by
// `mbar_expect_tx` has landed. Arrivals release the thread's earlier shared-memory writes; `mbar_wait` acquires them.
__device__ __forceinline__ void mbar_init(unsigned long long *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(saddr(bar)), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the copy engine (then a __syncthreads before any use).
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive(unsigned long long *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(saddr(bar)) : "memory");
}
// Announces `bytes` more for the current phase without arriving (before the copies that deliver them).
__device__ __forceinline__ void mbar_expect_tx(unsigned long long *bar, unsigned bytes) {
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(saddr(bar)), "r"(bytes) : "memory");
}
// Until the phase of parity `parity` has completed (the k-th completion has parity k % 2).
__device__ __forceinline__ void mbar_wait(unsigned long long *bar, unsigned parity) {
    asm volatile("{\n.reg .pred done;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT;\n}\n" ::"r"(saddr(bar)),
                 "r"(parity)
                 : "memory");
}
// Named barriers 1–15 over `threads` threads (a multiple of 32): bar_sync waits for all of them, bar_arrive counts this
// thread's warp without waiting.
__device__ __forceinline__ void bar_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Before a product whose accumulators or A registers other instructions wrote.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Until at most N committed groups of products are pending.
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins the accumulators in place: no use of d moves across the issue or the wait of the products writing it.
template <int N> __device__ __forceinline__ void wgmma_hold(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Orders this thread's earlier shared-memory writes (stores, finished cp.async copies) before the products' reads.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// The accumulator operands of a product: the text of registers 0–31 and 32–63, and the constraints of d[i … i + 31].
#define WG_REGS_0_31                                                                                                   \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                           \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WG_REGS_32_63                                                                                                  \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                                 \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WG_D8(i)                                                                                                       \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]),        \
        "+f"(d[i + 7])
#define WG_D32(i) WG_D8(i), WG_D8(i + 8), WG_D8(i + 16), WG_D8(i + 24)

// d = a·b (acc 0) or d += a·b (acc 1) for m64n64k16 and m64n128k16, A (64×16) in registers in the layout of `mma`'s
// A (each warp 16 rows), B (64×16 or 128×16) in shared memory, K-major or (NMAJOR, m64n64k16 only) N-major; A and B of
// E (bf16 or f16).
#define WGMMA_N64(TY)                                                                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                          \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" WG_REGS_0_31                             \
                 "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"                                                      \
                 : WG_D32(0)                                                                                           \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc), "n"(NMAJOR))
#define WGMMA_N128(TY)                                                                                                 \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                          \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" WG_REGS_0_31 ", " WG_REGS_32_63         \
                 "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"                                                        \
                 : WG_D32(0), WG_D32(32)                                                                               \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc))
template <typename E, int NMAJOR = 0>
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const unsigned (&a)[4], unsigned long long b, int acc) {
    if constexpr (IsF16<E>::value) {
        WGMMA_N64("f16");
    } else {
        WGMMA_N64("bf16");
    }
}
template <typename E>
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const unsigned (&a)[4], unsigned long long b, int acc) {
    if constexpr (IsF16<E>::value) {
        WGMMA_N128("f16");
    } else {
        WGMMA_N128("bf16");
    }
}
#undef WGMMA_N64
#undef WGMMA_N128

#undef WG_REGS_0_31
#undef WG_REGS_32_63
#undef WG_D8
#undef WG_D32

#endif
