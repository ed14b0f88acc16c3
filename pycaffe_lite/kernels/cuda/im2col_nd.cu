// im2col / col2im over any number of spatial axes (up to PCL_MAX_AXES), with
// the layout of the 2-D kernels: columns (C*prod(kernel), N*prod(out)), row
// (c, tap) with the taps in row-major order over the kernel axes. Shapes come
// as small int arrays: size (input), kernel, pad, stride, dilation, out.
#define PCL_MAX_AXES 8

// Elements of the output, of one input plane, and kernel taps.
__device__ __forceinline__ void nd_counts(int axes, const int* size, const int* kernel, const int* out,
                                          long long* area, long long* in_area, long long* taps) {
  *area = *in_area = *taps = 1;
  for (int a = 0; a < axes; ++a) {
    *area *= out[a];
    *in_area *= size[a];
    *taps *= kernel[a];
  }
}

// The per-axis coordinates of a row-major flat position within `dims`.
__device__ __forceinline__ void nd_unravel(long long pos, int axes, const int* dims, int* coord) {
  for (int a = axes - 1; a >= 0; --a) {
    coord[a] = pos % dims[a];
    pos /= dims[a];
  }
}

// One thread per (c, n, output position); it writes every tap.
extern "C" __global__ void im2col_nd(const long long count, const float* x, const int N, const int C,
                                     const int axes, const int* size, const int* kernel, const int* pad,
                                     const int* stride, const int* dilation, const int* out, float* cols) {
  CUDA_KERNEL_LOOP(index, count) {
    long long area, in_area, taps;
    nd_counts(axes, size, kernel, out, &area, &in_area, &taps);
    const long long pos = index % area;
    const int n = (index / area) % N;
    const int c = index / (area * N);
    int opos[PCL_MAX_AXES];
    nd_unravel(pos, axes, out, opos);
    const float* img = x + ((long long)n * C + c) * in_area;
    const long long L = (long long)N * area;
    for (long long t = 0; t < taps; ++t) {
      long long tr = t, offset = 0, step = 1;
      bool inside = true;
      for (int a = axes - 1; a >= 0; --a) {
        const int k = tr % kernel[a];
        tr /= kernel[a];
        const int at = opos[a] * stride[a] - pad[a] + k * dilation[a];
        if (at < 0 || at >= size[a]) inside = false;
        offset += (long long)at * step;
        step *= size[a];
      }
      cols[((long long)c * taps + t) * L + (long long)n * area + pos] = inside ? img[offset] : 0.f;
    }
  }
}

// One thread per input element: the sum of the column entries that read it,
// in tap order.
extern "C" __global__ void col2im_nd(const long long count, const float* cols, const int N, const int C,
                                     const int axes, const int* size, const int* kernel, const int* pad,
                                     const int* stride, const int* dilation, const int* out, float* x) {
  CUDA_KERNEL_LOOP(index, count) {
    long long area, in_area, taps;
    nd_counts(axes, size, kernel, out, &area, &in_area, &taps);
    const long long ipos = index % in_area;
    const int c = (index / in_area) % C;
    const int n = index / (in_area * C);
    int coord[PCL_MAX_AXES];
    nd_unravel(ipos, axes, size, coord);
    const long long L = (long long)N * area;
    float val = 0.f;
    for (long long t = 0; t < taps; ++t) {
      long long tr = t, opos = 0, step = 1;
      bool hit = true;
      for (int a = axes - 1; a >= 0; --a) {
        const int k = tr % kernel[a];
        tr /= kernel[a];
        const int s = coord[a] + pad[a] - k * dilation[a];
        if (s < 0 || s % stride[a] != 0 || s / stride[a] >= out[a]) {
          hit = false;
          break;
        }
        opos += (long long)(s / stride[a]) * step;
        step *= out[a];
      }
      if (hit) val += cols[((long long)c * taps + t) * L + (long long)n * area + opos];
    }
    x[index] = val;
  }
}
