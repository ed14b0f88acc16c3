// Local response normalization across channels:
//   scale = k + alpha / size * (sum of x^2 over the size channels centred on c)
//   y = x * scale^-beta
// and its gradient. One thread per element; the window sums run in channel
// order like the numpy twin.

extern "C" __global__ void lrn_scale(const long long count, const float* x, const int C, const int HW,
                                     const int size, const float alpha_over_size, const float k, float* scale) {
  CUDA_KERNEL_LOOP(index, count) {
    const int s = index % HW;
    const int c = (index / HW) % C;
    const long long base = index - (long long)c * HW;
    const int pre = (size - 1) / 2;
    float acc = 0.f;
    for (int j = 0; j < size; ++j) {
      const int cc = c - pre + j;
      if (cc >= 0 && cc < C) {
        const float v = x[base + (long long)cc * HW];
        acc += v * v;
      }
    }
    scale[index] = acc * alpha_over_size + k;
    (void)s;
  }
}

extern "C" __global__ void lrn_output(const long long count, const float* x, const float* scale,
                                      const float neg_beta, float* y) {
  CUDA_KERNEL_LOOP(index, count) { y[index] = x[index] * powf(scale[index], neg_beta); }
}

extern "C" __global__ void lrn_diff(const long long count, const float* dy, const float* x, const float* y,
                                    const float* scale, const int C, const int HW, const int size,
                                    const float neg_beta, const float cache_ratio, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int c = (index / HW) % C;
    const long long base = index - (long long)c * HW;
    const int pre = (size - 1) / 2;
    float acc = 0.f;
    for (int j = 0; j < size; ++j) {
      const int cc = c - pre + j;
      if (cc >= 0 && cc < C) {
        const long long at = base + (long long)cc * HW;
        acc += dy[at] * y[at] / scale[at];
      }
    }
    dx[index] = dy[index] * powf(scale[index], neg_beta) - cache_ratio * x[index] * acc;
  }
}
