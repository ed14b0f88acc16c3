// im2col / col2im for a whole batch. Columns are laid out (C*kh*kw, N*oh*ow):
// row (c, i, j) holds kernel tap (i, j) of channel c for every image and
// output position, so one GEMM per group convolves the whole batch.

// One thread per (c, n, output row, output col); it writes the kh*kw taps.
extern "C" __global__ void im2col(const long long count, const float* x, const int N, const int C,
                                  const int H, const int W, const int kh, const int kw, const int ph,
                                  const int pw, const int sh, const int sw, const int dh, const int dw,
                                  const int oh, const int ow, float* cols) {
  CUDA_KERNEL_LOOP(index, count) {
    const int xo = index % ow;
    const int yo = (index / ow) % oh;
    const int n = (index / ((long long)ow * oh)) % N;
    const int c = index / ((long long)ow * oh * N);
    const long long L = (long long)N * oh * ow;
    const long long pos = (long long)n * oh * ow + (long long)yo * ow + xo;
    const float* img = x + ((long long)n * C + c) * H * W;
    for (int i = 0; i < kh; ++i) {
      const int h = yo * sh - ph + i * dh;
      for (int j = 0; j < kw; ++j) {
        const int w = xo * sw - pw + j * dw;
        const float v = (h >= 0 && h < H && w >= 0 && w < W) ? img[(long long)h * W + w] : 0.f;
        cols[((long long)(c * kh + i) * kw + j) * L + pos] = v;
      }
    }
  }
}

// One thread per input pixel: the sum of every column entry that read it, in
// tap order (no atomics, the same order as the numpy twin).
extern "C" __global__ void col2im(const long long count, const float* cols, const int N, const int C,
                                  const int H, const int W, const int kh, const int kw, const int ph,
                                  const int pw, const int sh, const int sw, const int dh, const int dw,
                                  const int oh, const int ow, float* x) {
  CUDA_KERNEL_LOOP(index, count) {
    const int w = index % W;
    const int h = (index / W) % H;
    const int c = (index / ((long long)W * H)) % C;
    const int n = index / ((long long)W * H * C);
    const long long L = (long long)N * oh * ow;
    float val = 0.f;
    for (int i = 0; i < kh; ++i) {
      const int hs = h + ph - i * dh;
      if (hs < 0 || hs % sh != 0) continue;
      const int yo = hs / sh;
      if (yo >= oh) continue;
      for (int j = 0; j < kw; ++j) {
        const int ws = w + pw - j * dw;
        if (ws < 0 || ws % sw != 0) continue;
        const int xo = ws / sw;
        if (xo >= ow) continue;
        val += cols[((long long)(c * kh + i) * kw + j) * L + (long long)n * oh * ow + (long long)yo * ow + xo];
      }
    }
    x[index] = val;
  }
}
