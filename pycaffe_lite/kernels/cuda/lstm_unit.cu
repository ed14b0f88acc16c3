// One LSTM step for N streams of H units. x holds the gate inputs (N, 4H) in
// the order i, f, o, g; f is multiplied by cont (0 starts a new sequence):
//   c = f * c_prev + i * g,  h = o * tanh(c)

__device__ __forceinline__ float pcl_sigmoid(float a) { return 1.f / (1.f + expf(-a)); }

extern "C" __global__ void lstm_unit_forward(const long long count, const float* c_prev, const float* x,
                                             const float* cont, const int H, float* c, float* h) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long n = index / H;
    const int d = index % H;
    const float* xn = x + n * 4 * H;
    const float i = pcl_sigmoid(xn[d]);
    const float f = pcl_sigmoid(xn[H + d]) * cont[n];
    const float o = pcl_sigmoid(xn[2 * H + d]);
    const float g = tanhf(xn[3 * H + d]);
    const float cv = f * c_prev[index] + i * g;
    c[index] = cv;
    h[index] = o * tanhf(cv);
  }
}

extern "C" __global__ void lstm_unit_backward(const long long count, const float* c_prev, const float* x,
                                              const float* cont, const float* c, const float* dc, const float* dh,
                                              const int H, float* dc_prev, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long n = index / H;
    const int d = index % H;
    const float* xn = x + n * 4 * H;
    float* dxn = dx + n * 4 * H;
    const float i = pcl_sigmoid(xn[d]);
    const float f = pcl_sigmoid(xn[H + d]) * cont[n];
    const float o = pcl_sigmoid(xn[2 * H + d]);
    const float g = tanhf(xn[3 * H + d]);
    const float tanh_c = tanhf(c[index]);
    const float dc_term = dc[index] + dh[index] * o * (1.f - tanh_c * tanh_c);
    dc_prev[index] = dc_term * f;
    dxn[d] = dc_term * g * i * (1.f - i);
    dxn[H + d] = dc_term * c_prev[index] * f * (1.f - f);
    dxn[2 * H + d] = dh[index] * tanh_c * o * (1.f - o);
    dxn[3 * H + d] = dc_term * i * (1.f - g * g);
  }
}
