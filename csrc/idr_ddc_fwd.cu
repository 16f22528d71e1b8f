// CUDA forward of IDR-DDC: y = act(conv(x, weight)), one CTA per (plane, tile); see idr_ddc_cuda.cuh.
#include "idr_ddc_cuda.cuh"

namespace kdsr_cuda {

template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    idr_ddc_fwd_kernel(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y, int64_t H,
                       int64_t W, bool has_act, double negative_slope, bool vec) {
  typedef typename AccOf<T>::type A;
  constexpr int TH = TileRows<A, K>::value;
  constexpr int RPT = TH / kThreadsY;
  __shared__ __align__(16) A tile[TH + 2 * (K / 2)][kSmemW];

  const int64_t plane = blockIdx.x;
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * TH;
  const int64_t w0 = static_cast<int64_t>(blockIdx.z) * kTileW;
  const int64_t offset = plane * H * W;  // 64-bit plane offset
  const A slope = static_cast<A>(negative_slope);
  stage_tile<T, A, K, TH>(tile, x + offset, nullptr, slope, H, W, h0, w0, vec);
  A w[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) w[t] = to_acc(weight[plane * K * K + t]);
  __syncthreads();

  const int tx = threadIdx.x;
  const int r0 = threadIdx.y * RPT;
  A acc[RPT];
  column_conv<A, K, RPT>(tile, w, r0, tx, acc);
  const int64_t col = w0 + tx;
  if (col >= W) return;
  T* out = y + offset + col;
#pragma unroll
  for (int q = 0; q < RPT; ++q) {
    const int64_t row = h0 + r0 + q;
    if (row < H) {
      A v = acc[q];
      if (has_act && !(v > A(0))) v *= slope;
      out[row * W] = store_cast(v, out);
    }
  }
}

template <typename T, int K>
static cudaError_t launch_forward(const IdrDdcParams& p, cudaStream_t stream) {
  typedef typename AccOf<T>::type A;
  dim3 grid;
  cudaError_t err = grid_for(p.planes, p.H, p.W, TileRows<A, K>::value, &grid);
  if (err != cudaSuccess) return err;
  const bool vec = p.W % (16 / sizeof(T)) == 0 && aligned16(p.x);
  auto kernel = idr_ddc_fwd_kernel<T, K>;
  KDSR_LAUNCH(kernel, grid, dim3(kTileW, kThreadsY), stream, static_cast<const T*>(p.x),
              static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.H, p.W, p.has_act != 0, p.negative_slope,
              vec);
  return cudaGetLastError();
}

template <typename T>
static cudaError_t forward_for_k(const IdrDdcParams& p, cudaStream_t stream) {
  switch (p.K) {
    case 1: return launch_forward<T, 1>(p, stream);
    case 3: return launch_forward<T, 3>(p, stream);
    case 5: return launch_forward<T, 5>(p, stream);
    case 7: return launch_forward<T, 7>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace kdsr_cuda

extern "C" int idr_ddc_cuda_forward(const IdrDdcParams* params, void* stream) {
  using namespace kdsr_cuda;
  const IdrDdcParams& p = *params;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.planes == 0 || p.H == 0 || p.W == 0) return 0;
  switch (p.dtype) {
    case IDR_DDC_FLOAT32: return static_cast<int>(forward_for_k<float>(p, s));
    case IDR_DDC_FLOAT64: return static_cast<int>(forward_for_k<double>(p, s));
    case IDR_DDC_FLOAT16: return static_cast<int>(forward_for_k<__half>(p, s));
    case IDR_DDC_BFLOAT16: return static_cast<int>(forward_for_k<__nv_bfloat16>(p, s));
    default: return -1;
  }
}

extern "C" int64_t idr_ddc_cuda_tiles(int64_t H, int64_t W, int32_t K, int32_t dtype) {
  const int64_t TH = kdsr_cuda::tile_rows_for(K, dtype);
  return ((H + TH - 1) / TH) * ((W + kdsr_cuda::kTileW - 1) / kdsr_cuda::kTileW);
}
