// Softmax with loss on probabilities already computed, laid out
// (outer, classes, inner) with labels (outer, inner).

// Per position: -log(max(p_label, FLT_MIN)) and 1, or 0 and 0 where ignored.
extern "C" __global__ void softmax_loss_forward(const long long count, const float* prob, const float* label,
                                                const int classes, const int inner, const int has_ignore,
                                                const int ignore_label, float* loss, float* valid) {
  CUDA_KERNEL_LOOP(index, count) {
    const int i = index / inner;
    const int j = index % inner;
    const int lab = (int)label[index];
    if (has_ignore && lab == ignore_label) {
      loss[index] = 0.f;
      valid[index] = 0.f;
    } else if (lab < 0 || lab >= classes) {
      // A label that names no class makes the loss NaN, which the solver reports.
      loss[index] = nanf("");
      valid[index] = 1.f;
    } else {
      const float p = prob[((long long)i * classes + lab) * inner + j];
      loss[index] = -logf(fmaxf(p, PCL_FLT_MIN));
      valid[index] = 1.f;
    }
  }
}

// Per element: prob - 1 at the label, prob elsewhere, 0 at ignored positions.
extern "C" __global__ void softmax_loss_backward(const long long count, const float* prob, const float* label,
                                                 const int classes, const int inner, const int has_ignore,
                                                 const int ignore_label, float* dx) {
  CUDA_KERNEL_LOOP(index, count) {
    const int j = index % inner;
    const int c = (index / inner) % classes;
    const int i = index / ((long long)inner * classes);
    const int lab = (int)label[(long long)i * inner + j];
    if (has_ignore && lab == ignore_label) {
      dx[index] = 0.f;
    } else {
      dx[index] = prob[index] - (c == lab ? 1.f : 0.f);
    }
  }
}
