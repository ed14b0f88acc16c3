// Index arithmetic of the Tile, BatchReindex, Embed and ArgMax layers.
// Indices arrive as floats holding whole numbers (they live in blobs).

// y (outer, tiles, inner) from x (outer, inner): np.tile order.
extern "C" __global__ void tile_forward(const long long count, const float* x, const int inner, const int tiles,
                                        float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const int i = index % inner;
    const long long o = index / ((long long)inner * tiles);
    y[index] = x[o * inner + i];
  }
}

// dx (outer, inner): the sum of the `tiles` copies, in copy order.
extern "C" __global__ void tile_backward(const long long count, const float* dy, const int inner, const int tiles,
                                         float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int i = index % inner;
    const long long o = index / inner;
    float sum = 0.f;
    for (int t = 0; t < tiles; ++t) sum += dy[(o * tiles + t) * inner + i];
    dx[index] = sum;
  }
}

// y (M, D) = x[index[m]] rows.
extern "C" __global__ void batch_reindex_forward(const long long count, const float* x, const float* index_data,
                                                 const int dim, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long m = index / dim;
    const int d = index % dim;
    y[index] = x[(long long)index_data[m] * dim + d];
  }
}

// dx (N, D): for each row n, the sum of the dy rows whose index is n, in order.
extern "C" __global__ void batch_reindex_backward(const long long count, const float* dy, const float* index_data,
                                                  const int picks, const int dim, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long n = index / dim;
    const int d = index % dim;
    float sum = 0.f;
    for (int m = 0; m < picks; ++m)
      if ((long long)index_data[m] == n) sum += dy[(long long)m * dim + d];
    dx[index] = sum;
  }
}

// y (M, D) = weight[index[m]] + bias; an index outside [0, K) gives a NaN row.
extern "C" __global__ void embed_forward(const long long count, const float* index_data, const float* weight,
                                         const float* bias, const int rows, const int dim, float* y) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long m = index / dim;
    const int d = index % dim;
    const float v = index_data[m];
    const int k = (int)v;
    if (k < 0 || k >= rows || (float)k != v) {
      y[index] = nanf("");
    } else {
      y[index] = weight[(long long)k * dim + d] + bias[d];
    }
  }
}

// weight_diff[index[m]] += dy[m]: repeated indices meet in one row.
extern "C" __global__ void embed_backward(const long long count, const float* dy, const float* index_data,
                                          const int rows, const int dim, float* weight_diff) {
  CUDA_KERNEL_LOOP(index, count) {
    const long long m = index / dim;
    const int d = index % dim;
    const int k = (int)index_data[m];
    if (k >= 0 && k < rows) atomicAdd(weight_diff + (long long)k * dim + d, dy[index]);
  }
}

// For each (o, i) of x (outer, dim, inner): the top_k entries along dim by
// value, a tie going to the larger index (Caffe ranks (value, index) pairs).
// Each pick is the largest pair below the previous pick.
extern "C" __global__ void argmax_topk(const long long count, const float* x, const int dim, const int inner,
                                       const int top_k, float* index_out, float* value_out) {
  CUDA_KERNEL_LOOP(index, count) {
    const int i = index % inner;
    const long long o = index / inner;
    const float* col = x + o * dim * inner + i;
    float prev_v = 0.f;
    int prev_j = -1;
    for (int k = 0; k < top_k; ++k) {
      int best_j = -1;
      float best_v = 0.f;
      for (int j = 0; j < dim; ++j) {
        const float v = col[(long long)j * inner];
        const bool below = prev_j < 0 || v < prev_v || (v == prev_v && j < prev_j);
        const bool above = best_j < 0 || v > best_v || (v == best_v && j > best_j);
        if (below && above) {
          best_j = j;
          best_v = v;
        }
      }
      const long long at = (o * top_k + k) * inner + i;
      index_out[at] = (float)best_j;
      value_out[at] = best_v;
      prev_j = best_j;
      prev_v = best_v;
    }
  }
}
