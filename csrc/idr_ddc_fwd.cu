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

// Channels_last: x, y (B, H, W, C); weight repacked (B, K, K, C). See idr_ddc_cuda.cuh.
template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    idr_ddc_fwd_nhwc_kernel(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y, int64_t C,
                            int64_t H, int64_t W, bool has_act, double negative_slope) {
  typedef typename AccOf<T>::type A;
  const int64_t blocks = (C + kNhwcLanes - 1) / kNhwcLanes;
  const int64_t b = blockIdx.x / blocks;
  const int64_t c = (blockIdx.x % blocks) * kNhwcLanes + threadIdx.x;
  if (c >= C) return;  // no barrier in this kernel
  const A slope = static_cast<A>(negative_slope);
  const int64_t HW = H * W;
  const T* xb = x + b * HW * C + c;
  T* yb = y + b * HW * C + c;
  A w[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) w[t] = to_acc(weight[(b * K * K + t) * C + c]);
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * kNhwcTilePixels;
  const int64_t p1 = p0 + kNhwcTilePixels < HW ? p0 + kNhwcTilePixels : HW;
  for (int64_t pix = p0 + threadIdx.y; pix < p1; pix += kNhwcWarps) {
    const int64_t h = pix / W;
    const int64_t col = pix % W;
    A acc = A(0);
    for_each_tap<K>(h, col, H, W, [&](int t, int64_t q) { acc += w[t] * to_acc(xb[q * C]); });
    if (has_act && !(acc > A(0))) acc *= slope;
    yb[pix * C] = store_cast(acc, yb);
  }
}

template <typename T, int K>
static cudaError_t launch_forward_nhwc(const IdrDdcParams& p, cudaStream_t stream) {
  dim3 grid;
  cudaError_t err = grid_for_nhwc(p.planes, p.C, p.H, p.W, &grid);
  if (err != cudaSuccess) return err;
  auto kernel = idr_ddc_fwd_nhwc_kernel<T, K>;
  KDSR_LAUNCH(kernel, grid, dim3(kNhwcLanes, kNhwcWarps), stream, static_cast<const T*>(p.x),
              static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.C, p.H, p.W, p.has_act != 0,
              p.negative_slope);
  return cudaGetLastError();
}

}  // namespace kdsr_cuda

extern "C" int idr_ddc_cuda_forward(const IdrDdcParams* params, void* stream) {
  using namespace kdsr_cuda;
  const IdrDdcParams& p = *params;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.planes == 0 || p.H == 0 || p.W == 0) return 0;
  int status = -1;
  kdsr_dispatch::with_dtype_and_k<__half, __nv_bfloat16>(p.dtype, p.K, [&](auto type, auto k) {
    using T = typename decltype(type)::type;
    constexpr int K = decltype(k)::value;
    status = static_cast<int>(p.channels_last ? launch_forward_nhwc<T, K>(p, s) : launch_forward<T, K>(p, s));
  });
  return status;
}

extern "C" int64_t idr_ddc_cuda_tiles(int64_t H, int64_t W, int32_t K, int32_t dtype, int32_t channels_last) {
  if (channels_last) return (H * W + kdsr_cuda::kNhwcTilePixels - 1) / kdsr_cuda::kNhwcTilePixels;
  const int64_t TH = kdsr_cuda::tile_rows_for(K, dtype);
  return ((H + TH - 1) / TH) * ((W + kdsr_cuda::kTileW - 1) / kdsr_cuda::kTileW);
}
