// Compiled twins of three numpy kernels (MAX-pool backward, im2col, col2im),
// only to measure what a compiled kernel would save on a whole CaffeNet
// iteration: benchmarks/bench_compiled_estimate.py. Not part of the package.
#include <string.h>
#include <float.h>
extern "C" {
void max_pool_backward(const float* x, const float* y, const float* dy, float* dx, long nc, int H, int W,
                       int kh, int kw, int sh, int sw, int ph, int pw, int oh, int ow) {
  #pragma omp parallel for schedule(static)
  for (long p = 0; p < nc; ++p) {
    const float* xp = x + p * H * W; const float* dyp = dy + p * oh * ow; float* dxp = dx + p * H * W;
    memset(dxp, 0, sizeof(float) * H * W);
    for (int r = 0; r < oh; ++r) for (int t = 0; t < ow; ++t) {
      int hs = r * sh - ph, ws = t * sw - pw;
      int he = hs + kh < H ? hs + kh : H, we = ws + kw < W ? ws + kw : W;
      if (hs < 0) hs = 0; if (ws < 0) ws = 0;
      float best = -FLT_MAX; int idx = -1;
      for (int i = hs; i < he; ++i) for (int j = ws; j < we; ++j)
        if (xp[i * W + j] > best) { best = xp[i * W + j]; idx = i * W + j; }
      if (idx >= 0) dxp[idx] += dyp[r * ow + t];
    }
  }
}
// cols layout (C, kh, kw, N, oh, ow)
void im2col(const float* x, float* cols, int N, int C, int H, int W, int kh, int kw, int ph, int pw,
            int sh, int sw, int dh, int dw, int oh, int ow) {
  #pragma omp parallel for collapse(2) schedule(static)
  for (int c = 0; c < C; ++c) for (int i = 0; i < kh; ++i) for (int j = 0; j < kw; ++j) for (int n = 0; n < N; ++n) {
    float* out = cols + ((((long)c * kh + i) * kw + j) * N + n) * oh * ow;
    const float* xp = x + ((long)n * C + c) * H * W;
    for (int r = 0; r < oh; ++r) {
      int hi = r * sh - ph + i * dh;
      for (int t = 0; t < ow; ++t) {
        int wi = t * sw - pw + j * dw;
        out[r * ow + t] = (hi >= 0 && hi < H && wi >= 0 && wi < W) ? xp[hi * W + wi] : 0.f;
      }
    }
  }
}
void col2im(const float* cols, float* x, int N, int C, int H, int W, int kh, int kw, int ph, int pw,
            int sh, int sw, int dh, int dw, int oh, int ow) {
  #pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < N; ++n) for (int c = 0; c < C; ++c) {
    float* xp = x + ((long)n * C + c) * H * W;
    memset(xp, 0, sizeof(float) * H * W);
    for (int i = 0; i < kh; ++i) for (int j = 0; j < kw; ++j) {
      const float* in = cols + ((((long)c * kh + i) * kw + j) * N + n) * oh * ow;
      for (int r = 0; r < oh; ++r) {
        int hi = r * sh - ph + i * dh;
        if (hi < 0 || hi >= H) continue;
        for (int t = 0; t < ow; ++t) {
          int wi = t * sw - pw + j * dw;
          if (wi >= 0 && wi < W) xp[hi * W + wi] += in[r * ow + t];
        }
      }
    }
  }
}
}
