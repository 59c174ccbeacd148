// Shared by every kernel: warp/block reductions and bf16/f16 conversions written without the toolkit headers.
#pragma once

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned int)h) << 16); }

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// v rounded to T and back (identity for f32).
template <typename T> __device__ __forceinline__ float round_to(float v);
template <> __device__ __forceinline__ float round_to<float>(float v) { return v; }
template <> __device__ __forceinline__ float round_to<bf16_t>(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// One element of rotate_half RoPE, the value stored as T: element i < dim/2 is own·cos − partner·sin with partner =
// x[i + dim/2], element i ≥ dim/2 is own·cos + partner·sin with partner = x[i − dim/2]; each product is rounded to T,
// then the sum (PyTorch's order in T; plain f32 for T = f32).
template <typename T>
__device__ __forceinline__ float rope_rotate(float own, float partner, float c, float s, bool lower) {
    return round_to<T>(
        __fadd_rn(round_to<T>(__fmul_rn(own, c)), round_to<T>(__fmul_rn(lower ? -partner : partner, s))));
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

// The first statement of every kernel, or the first after loads of constants (weights and keys no kernel writes; the
// GEMVs and pk_topk). Under a programmatic dependency (the kernels of a recorded decode step, from sm_90) it waits
// until the kernels before this one have finished and their writes are visible, then lets the next kernel's blocks be
// scheduled while this one runs; after an ordinary launch both instructions return at once.
__device__ __forceinline__ void grid_entry() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

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

// d += a·b for a 16×16 row-major A, a 16×8 column-major B and a 16×8 f32 D.
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (lo, hi) rounded to bf16 in one register, lo in the low half.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float exp2_approx(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
}
