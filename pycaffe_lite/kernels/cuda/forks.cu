// The forks' layers: SSD's Permute, Fast R-CNN's ROIPooling, R-FCN's
// PSROIPooling, DeepLab's Interp and SegNet's Upsample. Each kernel has a
// numpy twin of the same arithmetic in kernels/cpu.py.

// y[index] = x at the permuted position; steps are row-major strides of
// the bottom (old) and the top (new), order the bottom axis of each top axis.
extern "C" __global__ void permute(const long long count, const float* x, const int* order, const int* old_steps,
                                   const int* new_steps, const int axes, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    long long rest = index, old = 0;
    for (int i = 0; i < axes; ++i) {
      const long long coord = rest / new_steps[i];
      rest -= coord * new_steps[i];
      old += coord * old_steps[order[i]];
    }
    y[index] = x[old];
  }
}

// C's round(): halves away from zero.
__device__ __forceinline__ float pcl_round(const float v) {
  return v < 0.f ? -floorf(-v + 0.5f) : floorf(v + 0.5f);
}

// One output (roi, c, ph, pw) of Fast R-CNN's max pooling; argmax holds the
// winning h * W + w (as a float), -1 for an empty bin.
extern "C" __global__ void roi_pool_forward(const long long count, const float* x, const float scale,
                                            const int channels, const int height, const int width,
                                            const int pooled_h, const int pooled_w, const float* rois, float* y,
                                            float* argmax) {
  CUDA_KERNEL_LOOP(index, count) {
    const int pw = index % pooled_w;
    const int ph = (index / pooled_w) % pooled_h;
    const int c = (index / pooled_w / pooled_h) % channels;
    const long long r = index / pooled_w / pooled_h / channels;
    const float* roi = rois + r * 5;
    const int batch = (int)roi[0];
    const int start_w = (int)pcl_round(roi[1] * scale), start_h = (int)pcl_round(roi[2] * scale);
    const int end_w = (int)pcl_round(roi[3] * scale), end_h = (int)pcl_round(roi[4] * scale);
    const float bin_h = (float)max(end_h - start_h + 1, 1) / (float)pooled_h;
    const float bin_w = (float)max(end_w - start_w + 1, 1) / (float)pooled_w;
    int hs = (int)floorf((float)ph * bin_h) + start_h, he = (int)ceilf((float)(ph + 1) * bin_h) + start_h;
    int ws = (int)floorf((float)pw * bin_w) + start_w, we = (int)ceilf((float)(pw + 1) * bin_w) + start_w;
    hs = min(max(hs, 0), height); he = min(max(he, 0), height);
    ws = min(max(ws, 0), width); we = min(max(we, 0), width);
    float best = (he <= hs || we <= ws) ? 0.f : -PCL_FLT_MAX;
    int arg = -1;
    const float* plane = x + ((long long)batch * channels + c) * height * width;
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w)
        if (plane[h * width + w] > best) { best = plane[h * width + w]; arg = h * width + w; }
    y[index] = best;
    argmax[index] = (float)arg;
  }
}

// dx (N, C, H, W): for each input, the diffs of the outputs it won.
extern "C" __global__ void roi_pool_backward(const long long count, const float* dy, const float* argmax,
                                             const int num_rois, const int channels, const int height,
                                             const int width, const int pooled_h, const int pooled_w,
                                             const float* rois, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int hw = index % (height * width);
    const int c = (index / height / width) % channels;
    const int n = index / height / width / channels;
    float sum = 0.f;
    for (int r = 0; r < num_rois; ++r) {
      if ((int)rois[r * 5] != n) continue;
      const long long base = ((long long)r * channels + c) * pooled_h * pooled_w;
      for (int k = 0; k < pooled_h * pooled_w; ++k)
        if ((int)argmax[base + k] == hw) sum += dy[base + k];
    }
    dx[index] = sum;
  }
}

// R-FCN's bin of one output (roi, ctop, i, j): the corners rounded, then
// scaled; the average of input channel (ctop * group + i) * group + j.
__device__ __forceinline__ void psroi_bin(const float* roi, const float scale, const int group, const int i,
                                          const int j, const int height, const int width, int* hs, int* he,
                                          int* ws, int* we) {
  const float sw = pcl_round(roi[1]) * scale, sh = pcl_round(roi[2]) * scale;
  const float ew = (pcl_round(roi[3]) + 1.f) * scale, eh = (pcl_round(roi[4]) + 1.f) * scale;
  const float bin_w = fmaxf(ew - sw, 0.1f) / (float)group, bin_h = fmaxf(eh - sh, 0.1f) / (float)group;
  *hs = min(max((int)floorf((float)i * bin_h + sh), 0), height);
  *he = min(max((int)ceilf((float)(i + 1) * bin_h + sh), 0), height);
  *ws = min(max((int)floorf((float)j * bin_w + sw), 0), width);
  *we = min(max((int)ceilf((float)(j + 1) * bin_w + sw), 0), width);
}

extern "C" __global__ void psroi_pool_forward(const long long count, const float* x, const float scale,
                                              const int channels, const int height, const int width,
                                              const int group, const int dim, const float* rois, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const int j = index % group, i = (index / group) % group, ctop = (index / group / group) % dim;
    const long long r = index / group / group / dim;
    const float* roi = rois + r * 5;
    int hs, he, ws, we;
    psroi_bin(roi, scale, group, i, j, height, width, &hs, &he, &ws, &we);
    const int c = (ctop * group + i) * group + j;
    const float* plane = x + ((long long)roi[0] * channels + c) * height * width;
    float sum = 0.f;
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w) sum += plane[h * width + w];
    y[index] = (he <= hs || we <= ws) ? 0.f : sum / (float)((he - hs) * (we - ws));
  }
}

// dx must be zero: each output spreads its diff over its bin.
extern "C" __global__ void psroi_pool_backward(const long long count, const float* dy, const float scale,
                                               const int channels, const int height, const int width,
                                               const int group, const int dim, const float* rois, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int j = index % group, i = (index / group) % group, ctop = (index / group / group) % dim;
    const long long r = index / group / group / dim;
    const float* roi = rois + r * 5;
    int hs, he, ws, we;
    psroi_bin(roi, scale, group, i, j, height, width, &hs, &he, &ws, &we);
    if (he <= hs || we <= ws) continue;
    const int c = (ctop * group + i) * group + j;
    float* plane = dx + ((long long)roi[0] * channels + c) * height * width;
    const float g = dy[index] / (float)((he - hs) * (we - ws));
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w) atomicAdd(plane + h * width + w, g);
  }
}

// DeepLab's interp2 taps along one axis (aligned corners), as the fork computes them in float.
__device__ __forceinline__ void interp_tap(const int pos, const int size_in, const int size_out, int* lo, int* step,
                                           float* w1) {
  const float r = size_out > 1 ? (float)(size_in - 1) / (float)(size_out - 1) : 0.f;
  const float p = r * (float)pos;
  *lo = (int)p;
  *step = *lo < size_in - 1 ? 1 : 0;
  *w1 = p - (float)*lo;
}

// y (planes, oh, ow) from the (eh, ew) window at (off, off) of x (planes, h, w).
extern "C" __global__ void interp_forward(const long long count, const float* x, const int height, const int width,
                                          const int off, const int eh, const int ew, const int oh, const int ow,
                                          float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const int ox = index % ow, oy = (index / ow) % oh;
    const long long plane = index / ow / oh;
    const float* src = x + plane * height * width + off * width + off;
    if (eh == oh && ew == ow) { y[index] = src[oy * width + ox]; continue; }
    int hl, hp, wl, wp;
    float h1, w1;
    interp_tap(oy, eh, oh, &hl, &hp, &h1);
    interp_tap(ox, ew, ow, &wl, &wp, &w1);
    const float h0 = 1.f - h1, w0 = 1.f - w1;
    const float* p = src + hl * width + wl;
    y[index] = h0 * (w0 * p[0] + w1 * p[wp]) + h1 * (w0 * p[hp * width] + w1 * p[hp * width + wp]);
  }
}

// dx must be zero: each output's diff goes back to its four taps.
extern "C" __global__ void interp_backward(const long long count, const float* dy, const int height,
                                           const int width, const int off, const int eh, const int ew, const int oh,
                                           const int ow, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int ox = index % ow, oy = (index / ow) % oh;
    const long long plane = index / ow / oh;
    float* dst = dx + plane * height * width + off * width + off;
    if (eh == oh && ew == ow) { dst[oy * width + ox] = dy[index]; continue; }
    int hl, hp, wl, wp;
    float h1, w1;
    interp_tap(oy, eh, oh, &hl, &hp, &h1);
    interp_tap(ox, ew, ow, &wl, &wp, &w1);
    const float h0 = 1.f - h1, w0 = 1.f - w1, d = dy[index];
    float* p = dst + hl * width + wl;
    atomicAdd(p, h0 * w0 * d);
    atomicAdd(p + wp, h0 * w1 * d);
    atomicAdd(p + hp * width, h1 * w0 * d);
    atomicAdd(p + hp * width + wp, h1 * w1 * d);
  }
}

// y must be zero: each input lands at its mask index of its plane; bad counts indices outside.
extern "C" __global__ void upsample_forward(const long long count, const float* x, const float* mask, const int area,
                                            const int out_area, float* y, float* bad) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long plane = index / area;
    const int k = (int)mask[index];
    if (k < 0 || k >= out_area) { atomicAdd(bad, 1.f); continue; }
    y[plane * out_area + k] = x[index];
  }
}

extern "C" __global__ void upsample_backward(const long long count, const float* dy, const float* mask, const int area,
                                             const int out_area, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long plane = index / area;
    dx[index] = dy[plane * out_area + (int)mask[index]];
  }
}

// SSD's DetectionOutput: one coordinate of one decoded box. loc is (N, P, C, 4)
// offsets, prior (2, P, 4) the PriorBox blob (boxes, then variances); code_type
// 1 CORNER, 2 CENTER_SIZE, 3 CORNER_SIZE. Centres and the final corners go
// through double as in the numpy twin (bbox.decode), the rest in float.
extern "C" __global__ void decode_bboxes(const long long count, const float* loc, const float* prior,
                                         const int code_type, const int variance_in_target, const int num_priors,
                                         const int loc_classes, float* out) {
  CUDA_KERNEL_LOOP(index, count) {
    const int k = index % 4;
    const long long box = index / 4;
    const int p = (int)((box / loc_classes) % num_priors);
    const float* pr = prior + 4 * (long long)p;
    const float* var = prior + 4 * ((long long)num_priors + p);
    const float* l = loc + 4 * box;
    const float v0 = variance_in_target ? 1.f : var[0], v1 = variance_in_target ? 1.f : var[1];
    const float v2 = variance_in_target ? 1.f : var[2], v3 = variance_in_target ? 1.f : var[3];
    const float vk = variance_in_target ? 1.f : var[k];
    const float pw = pr[2] - pr[0], ph = pr[3] - pr[1];
    if (code_type == 1) {
      out[index] = variance_in_target ? pr[k] + l[k] : pr[k] + vk * l[k];
    } else if (code_type == 3) {
      const float scale = (k % 2 == 0) ? pw : ph;
      out[index] = variance_in_target ? pr[k] + l[k] * scale : pr[k] + vk * l[k] * scale;
    } else {
      const float pcx = (float)((double)(pr[0] + pr[2]) / 2.0);
      const float pcy = (float)((double)(pr[1] + pr[3]) / 2.0);
      float c, half;
      if (k % 2 == 0) {
        c = variance_in_target ? l[0] * pw + pcx : v0 * l[0] * pw + pcx;
        half = variance_in_target ? expf(l[2]) * pw : expf(v2 * l[2]) * pw;
      } else {
        c = variance_in_target ? l[1] * ph + pcy : v1 * l[1] * ph + pcy;
        half = variance_in_target ? expf(l[3]) * ph : expf(v3 * l[3]) * ph;
      }
      out[index] = (float)(k < 2 ? (double)c - (double)half / 2.0 : (double)c + (double)half / 2.0);
    }
  }
}

// SSD's MultiBoxLoss mining: the confidence loss of one prior of one image for
// its label (conf is (N, P, C); labels (N, P)): softmax cross-entropy, or the
// sum over the classes of the logistic loss against the one-hot label.
extern "C" __global__ void mbox_conf_loss(const long long count, const float* conf, const int* labels,
                                          const int classes, const int softmax, float* loss) {
  CUDA_KERNEL_LOOP(index, count) {
    const float* x = conf + index * (long long)classes;
    const int label = labels[index];
    if (softmax) {
      float top = x[0];
      for (int c = 1; c < classes; ++c) top = fmaxf(top, x[c]);
      float sum = 0.f;
      for (int c = 0; c < classes; ++c) sum += expf(x[c] - top);
      const float prob = expf(x[label] - top) / sum;
      loss[index] = -logf(fmaxf(prob, 1.17549435e-38f));
    } else {
      float total = 0.f;
      for (int c = 0; c < classes; ++c) {
        const float pos = x[c] >= 0.f ? 1.f : 0.f;
        const float target = c == label ? 1.f : 0.f;
        total += -(x[c] * (target - pos) - log1pf(expf(x[c] - 2.f * x[c] * pos)));
      }
      loss[index] = total;
    }
  }
}
