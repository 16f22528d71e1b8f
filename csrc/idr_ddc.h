// IDR-DDC (per-sample depthwise dynamic convolution): the parameters every kernel receives.
//
// Plain C++ with no torch or CUDA headers, so the .cu kernels compile on their own (nvcc -c) and the bindings
// (idr_ddc_cpu.cpp, idr_ddc_cuda.cpp) are the only files that know about at::Tensor.
//
//   out[p, h, w]   = act( sum_{i,j<K} weight[p, i, j] * x[p, h+i-P, w+j-P] )      P = K/2, zero padding
//   g              = act'(out) * grad_out                      (act' = 1 if out > 0 else negative_slope)
//   grad_x[p,h,w]  = sum_{i,j} weight[p, i, j] * g[p, h-i+P, w-j+P]
//   grad_w[p,i,j]  = sum_{h,w} g[p, h, w] * x[p, h+i-P, w+j-P]
// with p = b*C + c one of the B*C planes. Two memory layouts (`channels_last`), all tensors dense:
//   NCHW (0): x, out, grad_out, grad_x (B, C, H, W) contiguous; weight (B, C, K, K)
//   NHWC (1): x, out, grad_out, grad_x (B, H, W, C) in memory (torch.channels_last); weight repacked by the
//             binding to (B, K, K, C), so the taps of one pixel are contiguous along C like the pixels
// grad_w is (B, C, K, K) in both. When a plane is split into several pieces (CPU: row bands, CUDA: tiles) the
// grad_w partial sums of the pieces go to a float64 workspace (planes, pieces, K*K) and are reduced over the
// pieces in a fixed order, so results do not depend on scheduling or thread count.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum IdrDdcDtype { IDR_DDC_FLOAT32 = 0, IDR_DDC_FLOAT64 = 1, IDR_DDC_FLOAT16 = 2, IDR_DDC_BFLOAT16 = 3 };

typedef struct IdrDdcParams {
  const void* x;         // (B, C, H, W) | (B, H, W, C)
  const void* weight;    // (B, C, K, K) | (B, K, K, C)
  const void* grad_out;  // like x, backward only
  const void* out;       // saved forward output, like x; read by the backward when has_act
  void* y;               // forward: the output; unused by the backward
  void* grad_x;          // like x, or NULL when not needed
  void* grad_w;          // (B, C, K, K) or NULL when not needed
  double* workspace;     // (planes, pieces, K*K) float64 grad_w partials (CPU: always; CUDA: when pieces > 1)
  int64_t planes, H, W;
  int32_t K;
  int32_t bands;         // CPU: row bands per plane (NHWC: per sample); band b covers rows [b*band_rows, min(H, (b+1)*band_rows))
  int32_t band_rows;     // CPU only (the CUDA launchers pick their own tiles)
  int32_t dtype;         // IdrDdcDtype
  int32_t has_act;       // 1: LeakyReLU(negative_slope) fused
  double negative_slope;
  int64_t C;             // channels (planes = B * C)
  int32_t channels_last; // 1: the NHWC layout above
} IdrDdcParams;

// CUDA launchers (idr_ddc_fwd.cu, idr_ddc_bwd.cu). `stream` is a cudaStream_t. Return 0 on success, otherwise
// a cudaError_t value (or -1 for an unsupported K / dtype) that the binding turns into an exception.
int idr_ddc_cuda_forward(const IdrDdcParams* params, void* stream);
int idr_ddc_cuda_backward(const IdrDdcParams* params, void* stream);
// Tiles per H x W plane the CUDA kernels use for this K, dtype and layout (the workspace's middle dimension).
int64_t idr_ddc_cuda_tiles(int64_t H, int64_t W, int32_t K, int32_t dtype, int32_t channels_last);

#ifdef __cplusplus
}
#endif
