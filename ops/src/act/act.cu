// y[i] = T(T(act(gate[i]))·up[i]): the activation is rounded to T before the product (PyTorch's order for bf16).
// act 0..3 = silu x/(1+e^-x), relu, gelu 0.5·x·erfc(-x/√2), gelu_tanh 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))).
// Layout: gate, up, y contiguous with n elements. Launch: 1-D grid of 256-thread blocks striding over groups of 4
// elements (4-wide loads when the buffers are aligned).

template <typename T> __device__ void act_mul(const T *gate, const T *up, T *y, const long n, const int act) {
    const bool vec = aligned4(gate) && aligned4(up) && aligned4(y);
    for (long i = 4 * ((long)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += 4L * gridDim.x * blockDim.x) {
        if (vec && i + 4 <= n) {
            float g[4], u[4], v[4];
            ld4(gate, i, g);
            ld4(up, i, u);
            for (int t = 0; t < 4; ++t) v[t] = round_to<T>(activate(g[t], act)) * u[t];
            st4(y, i, v);
        } else {
            for (long t = i; t < min(i + 4, n); ++t) st(y, t, round_to<T>(activate(ld(gate, t), act)) * ld(up, t));
        }
    }
}

extern "C" __global__ void act_mul_f32(const float *gate, const float *up, float *y, const long n, const int act) {
    grid_entry();
    act_mul(gate, up, y, n, act);
}

extern "C" __global__ void act_mul_bf16(const bf16_t *gate, const bf16_t *up, bf16_t *y, const long n, const int act) {
    grid_entry();
    act_mul(gate, up, y, n, act);
}

extern "C" __global__ void act_mul_f16(const f16_t *gate, const f16_t *up, f16_t *y, const long n, const int act) {
    grid_entry();
    act_mul(gate, up, y, n, act);
}
