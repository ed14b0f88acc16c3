// Shared by every kernel file: Caffe's grid-stride loop. On the GPU this
// header is prepended by kernels/gpu.py; the CPU emulation harness prepends
// its own prelude (threads as loops) and then this header.
#ifndef PYCAFFE_LITE_COMMON_CUH
#define PYCAFFE_LITE_COMMON_CUH
#define CUDA_KERNEL_LOOP(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)
#define PCL_FLT_MAX 3.402823466e+38F
#define PCL_FLT_MIN 1.175494351e-38F
#endif
