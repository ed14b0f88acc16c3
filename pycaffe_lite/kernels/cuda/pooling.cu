// MAX and AVE pooling with Caffe's window rules: a window starts at
// p * stride - pad; MAX looks only at real pixels, AVE divides by the window
// clipped to the padded extent [-pad, size + pad).

// The real pixels [hstart, hend) x [wstart, wend) of output (yo, xo)'s window.
__device__ __forceinline__ void max_window(int yo, int xo, int H, int W, int kh, int kw, int ph, int pw, int sh,
                                           int sw, int* hstart, int* hend, int* wstart, int* wend) {
  *hstart = yo * sh - ph;
  *wstart = xo * sw - pw;
  *hend = min(*hstart + kh, H);
  *wend = min(*wstart + kw, W);
  *hstart = max(*hstart, 0);
  *wstart = max(*wstart, 0);
}

extern "C" __global__ void max_pool_forward(const long long count, const float* x, const int C, const int H,
                                            const int W, const int kh, const int kw, const int ph,
                                            const int pw, const int sh, const int sw, const int oh,
                                            const int ow, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const int xo = index % ow;
    const int yo = (index / ow) % oh;
    const long long plane = index / ((long long)ow * oh);
    int hstart, hend, wstart, wend;
    max_window(yo, xo, H, W, kh, kw, ph, pw, sh, sw, &hstart, &hend, &wstart, &wend);
    const float* img = x + plane * H * W;
    float best = -PCL_FLT_MAX;
    for (int h = hstart; h < hend; ++h)
      for (int w = wstart; w < wend; ++w)
        if (img[h * W + w] > best) best = img[h * W + w];
    y[index] = best;
  }
}

// Where each max came from (h * W + w): the first pixel in row-major window
// order equal to the max, which is the one Caffe's strict '>' keeps.
extern "C" __global__ void max_pool_argmax(const long long count, const float* x, const float* y,
                                           const int C, const int H, const int W, const int kh, const int kw,
                                           const int ph, const int pw, const int sh, const int sw,
                                           const int oh, const int ow, int* index_out) {
  CUDA_KERNEL_LOOP(index, count) {
    const int xo = index % ow;
    const int yo = (index / ow) % oh;
    const long long plane = index / ((long long)ow * oh);
    int hstart, hend, wstart, wend;
    max_window(yo, xo, H, W, kh, kw, ph, pw, sh, sw, &hstart, &hend, &wstart, &wend);
    const float* img = x + plane * H * W;
    int found = -1;
    for (int h = hstart; h < hend && found < 0; ++h)
      for (int w = wstart; w < wend; ++w)
        if (img[h * W + w] == y[index]) { found = h * W + w; break; }
    index_out[index] = found;
  }
}

// One thread per input pixel: the diffs of the outputs whose max it was.
extern "C" __global__ void max_pool_backward(const long long count, const float* dy, const int* argmax,
                                             const int C, const int H, const int W, const int kh,
                                             const int kw, const int ph, const int pw, const int sh,
                                             const int sw, const int oh, const int ow, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int w = index % W;
    const int h = (index / W) % H;
    const long long plane = index / ((long long)W * H);
    const int phstart = (h + ph < kh) ? 0 : (h + ph - kh) / sh + 1;
    const int phend = min((h + ph) / sh + 1, oh);
    const int pwstart = (w + pw < kw) ? 0 : (w + pw - kw) / sw + 1;
    const int pwend = min((w + pw) / sw + 1, ow);
    const int me = h * W + w;
    float grad = 0.f;
    const long long off = plane * oh * ow;
    for (int py = phstart; py < phend; ++py)
      for (int px = pwstart; px < pwend; ++px)
        if (argmax[off + py * ow + px] == me) grad += dy[off + py * ow + px];
    dx[index] = grad;
  }
}

extern "C" __global__ void ave_pool_forward(const long long count, const float* x, const int C, const int H,
                                            const int W, const int kh, const int kw, const int ph,
                                            const int pw, const int sh, const int sw, const int oh,
                                            const int ow, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const int xo = index % ow;
    const int yo = (index / ow) % oh;
    const long long plane = index / ((long long)ow * oh);
    int hstart = yo * sh - ph, wstart = xo * sw - pw;
    int hend = min(hstart + kh, H + ph), wend = min(wstart + kw, W + pw);
    const int pool_size = (hend - hstart) * (wend - wstart);
    hstart = max(hstart, 0);
    wstart = max(wstart, 0);
    hend = min(hend, H);
    wend = min(wend, W);
    const float* img = x + plane * H * W;
    float sum = 0.f;
    for (int h = hstart; h < hend; ++h)
      for (int w = wstart; w < wend; ++w) sum += img[h * W + w];
    y[index] = sum / pool_size;
  }
}

extern "C" __global__ void ave_pool_backward(const long long count, const float* dy, const int C, const int H,
                                             const int W, const int kh, const int kw, const int ph,
                                             const int pw, const int sh, const int sw, const int oh,
                                             const int ow, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int w = index % W + pw;
    const int h = (index / W) % H + ph;
    const long long plane = index / ((long long)W * H);
    const int phstart = (h < kh) ? 0 : (h - kh) / sh + 1;
    const int phend = min(h / sh + 1, oh);
    const int pwstart = (w < kw) ? 0 : (w - kw) / sw + 1;
    const int pwend = min(w / sw + 1, ow);
    const float* d = dy + plane * oh * ow;
    float grad = 0.f;
    for (int py = phstart; py < phend; ++py) {
      for (int px = pwstart; px < pwend; ++px) {
        int hstart = py * sh - ph, wstart = px * sw - pw;
        const int hend = min(hstart + kh, H + ph), wend = min(wstart + kw, W + pw);
        const int pool_size = (hend - hstart) * (wend - wstart);
        grad += d[py * ow + px] / pool_size;
      }
    }
    dx[index] = grad;
  }
}
