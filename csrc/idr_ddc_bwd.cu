// CUDA fused backward of IDR-DDC: grad_x and grad_w in one pass, one CTA per (plane, tile); see
// idr_ddc_cuda.cuh.
//
// The CTA stages g = LeakyReLU'(out) * grad_out (or grad_out) and x, both with halo, in shared memory. grad_x is
// the forward's column convolution over g with the flipped kernel. grad_w: every thread sums g * shifted x over
// its RPT outputs in K*K registers (sliding window down its column), then a butterfly warp reduction and a
// fixed-order sum over the 8 warps give one value per tap and tile -- stored straight into grad_w when the plane
// is one tile, else into a float64 workspace that a second kernel sums over tiles in tile order. No atomics, so
// grad_w is bitwise reproducible. Channels_last has its own fused kernel (idr_ddc_bwd_nhwc_kernel) with the same
// grad_w scheme over pixel runs.
#include "idr_ddc_cuda.cuh"

namespace kdsr_cuda {

template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    idr_ddc_bwd_kernel(const T* __restrict__ grad_out, const T* __restrict__ out, const T* __restrict__ x,
                       const T* __restrict__ weight, T* __restrict__ grad_x, T* __restrict__ grad_w,
                       double* __restrict__ workspace, int64_t H, int64_t W, bool has_act, double negative_slope,
                       bool vec) {
  typedef typename AccOf<T>::type A;
  constexpr int P = K / 2;
  constexpr int TH = TileRows<A, K>::value;
  constexpr int RPT = TH / kThreadsY;
  constexpr int KK = K * K;
  __shared__ __align__(16) A g_tile[TH + 2 * P][kSmemW];
  __shared__ __align__(16) A x_tile[TH + 2 * P][kSmemW];
  __shared__ A warp_sums[kWarps][KK];

  const int64_t plane = blockIdx.x;
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * TH;
  const int64_t w0 = static_cast<int64_t>(blockIdx.z) * kTileW;
  const int64_t offset = plane * H * W;  // 64-bit plane offset
  const A slope = static_cast<A>(negative_slope);
  const bool need_gx = grad_x != nullptr;
  const bool need_gw = grad_w != nullptr;
  stage_tile<T, A, K, TH>(g_tile, grad_out + offset, has_act ? out + offset : nullptr, slope, H, W, h0, w0, vec);
  if (need_gw) stage_tile<T, A, K, TH>(x_tile, x + offset, nullptr, slope, H, W, h0, w0, vec);
  __syncthreads();

  const int tx = threadIdx.x;
  const int r0 = threadIdx.y * RPT;
  const int64_t col = w0 + tx;
  if (need_gx) {
    A w_flipped[KK];
#pragma unroll
    for (int t = 0; t < KK; ++t) w_flipped[t] = to_acc(weight[plane * KK + (KK - 1 - t)]);
    A acc[RPT];
    column_conv<A, K, RPT>(g_tile, w_flipped, r0, tx, acc);
    if (col < W) {
      T* dst = grad_x + offset + col;
#pragma unroll
      for (int q = 0; q < RPT; ++q) {
        const int64_t row = h0 + r0 + q;
        if (row < H) dst[row * W] = store_cast(acc[q], dst);
      }
    }
  }
  if (!need_gw) return;  // uniform across the CTA

  // grad_w[i][j] += g[row q] * x[row q + i - P][col + j - P]; g is zero outside the plane, so no masks.
  A g[RPT];
#pragma unroll
  for (int q = 0; q < RPT; ++q) g[q] = g_tile[r0 + q + P][kHaloL + tx];
  A acc_w[KK];
#pragma unroll
  for (int t = 0; t < KK; ++t) acc_w[t] = A(0);
#pragma unroll
  for (int rr = 0; rr < RPT + K - 1; ++rr) {
    A v[K];
#pragma unroll
    for (int j = 0; j < K; ++j) v[j] = x_tile[r0 + rr][kHaloL - P + tx + j];
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int q = rr - i;
      if (q >= 0 && q < RPT) {
#pragma unroll
        for (int j = 0; j < K; ++j) acc_w[i * K + j] += g[q] * v[j];
      }
    }
  }
  const int lane = tx % 32;
  const int warp = (threadIdx.y * kTileW + tx) / 32;
#pragma unroll
  for (int t = 0; t < KK; ++t) {
    A v = acc_w[t];
#pragma unroll
    for (int step = 16; step > 0; step /= 2) v += __shfl_xor_sync(0xffffffffu, v, step);
    if (lane == 0) warp_sums[warp][t] = v;
  }
  __syncthreads();
  const int tid = threadIdx.y * kTileW + tx;
  if (tid < KK) {
    A sum = A(0);
#pragma unroll
    for (int k = 0; k < kWarps; ++k) sum += warp_sums[k][tid];
    if (gridDim.y * gridDim.z == 1) {
      grad_w[plane * KK + tid] = from_acc<T>(static_cast<double>(sum));
    } else {
      const int64_t tile = static_cast<int64_t>(blockIdx.y) * gridDim.z + blockIdx.z;
      workspace[(plane * gridDim.y * gridDim.z + tile) * KK + tid] = static_cast<double>(sum);
    }
  }
}

// grad_w[plane, t] = sum over tiles (in tile order) of workspace[plane, tile, t].
template <typename T>
__global__ void idr_ddc_reduce_tiles_kernel(const double* __restrict__ workspace, T* __restrict__ grad_w,
                                            int64_t planes, int64_t tiles, int taps) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= planes * taps) return;
  const int64_t plane = idx / taps;
  const int64_t t = idx % taps;
  const double* src = workspace + plane * tiles * taps + t;
  double sum = 0.0;
  for (int64_t tile = 0; tile < tiles; ++tile) sum += src[tile * taps];
  grad_w[idx] = from_acc<T>(sum);
}

// Launch the tile reduction: grad_w <- workspace summed over its `tiles` per plane.
template <typename T>
static cudaError_t reduce_tiles(const IdrDdcParams& p, int64_t tiles, int taps, cudaStream_t stream) {
  const int64_t n = p.planes * taps;
  const int threads = 256;
  auto reduce = idr_ddc_reduce_tiles_kernel<T>;
  KDSR_LAUNCH(reduce, dim3(static_cast<unsigned>((n + threads - 1) / threads)), dim3(threads), stream,
              static_cast<const double*>(p.workspace), static_cast<T*>(p.grad_w), p.planes, tiles, taps);
  return cudaGetLastError();
}

template <typename T, int K>
static cudaError_t launch_backward(const IdrDdcParams& p, cudaStream_t stream) {
  typedef typename AccOf<T>::type A;
  dim3 grid;
  cudaError_t err = grid_for(p.planes, p.H, p.W, TileRows<A, K>::value, &grid);
  if (err != cudaSuccess) return err;
  const int64_t tiles = static_cast<int64_t>(grid.y) * grid.z;
  if (p.grad_w != nullptr && tiles > 1 && p.workspace == nullptr) return cudaErrorInvalidValue;
  const bool vec = p.W % (16 / sizeof(T)) == 0 && aligned16(p.grad_out) && aligned16(p.x) &&
                   (p.has_act == 0 || aligned16(p.out));
  auto kernel = idr_ddc_bwd_kernel<T, K>;
  KDSR_LAUNCH(kernel, grid, dim3(kTileW, kThreadsY), stream, static_cast<const T*>(p.grad_out),
              static_cast<const T*>(p.out), static_cast<const T*>(p.x), static_cast<const T*>(p.weight),
              static_cast<T*>(p.grad_x), static_cast<T*>(p.grad_w), p.workspace, p.H, p.W, p.has_act != 0,
              p.negative_slope, vec);
  err = cudaGetLastError();
  if (err != cudaSuccess || p.grad_w == nullptr || tiles == 1) return err;
  return reduce_tiles<T>(p, tiles, K * K, stream);
}

// Channels_last fused backward: grad_out, out, x, grad_x (B, H, W, C); weight repacked (B, K, K, C). Each thread
// (lane = channel) walks its warp's pixels of the run: grad_x from the K*K gated grad_out taps with the flipped
// kernel, grad_w from the centre g times the K*K x taps; the per-thread sums are added over the 8 warps in warp
// order, one tap at a time, and stored like the NCHW kernel's (grad_w directly for one run, else the workspace).
template <typename T, int K>
__global__ void __launch_bounds__(kThreads)
    idr_ddc_bwd_nhwc_kernel(const T* __restrict__ grad_out, const T* __restrict__ out, const T* __restrict__ x,
                            const T* __restrict__ weight, T* __restrict__ grad_x, T* __restrict__ grad_w,
                            double* __restrict__ workspace, int64_t C, int64_t H, int64_t W, bool has_act,
                            double negative_slope) {
  typedef typename AccOf<T>::type A;
  constexpr int KK = K * K;
  __shared__ A partial[kNhwcWarps][kNhwcLanes];

  const int64_t blocks = (C + kNhwcLanes - 1) / kNhwcLanes;
  const int64_t b = blockIdx.x / blocks;
  const int64_t c = (blockIdx.x % blocks) * kNhwcLanes + threadIdx.x;
  const bool active = c < C;  // inactive lanes still take part in the barriers below
  const A slope = static_cast<A>(negative_slope);
  const bool need_gx = grad_x != nullptr;
  const bool need_gw = grad_w != nullptr;
  const int64_t HW = H * W;
  const int64_t base = b * HW * C + (active ? c : 0);
  A w_flipped[KK];
#pragma unroll
  for (int t = 0; t < KK; ++t) w_flipped[t] = active ? to_acc(weight[(b * KK + (KK - 1 - t)) * C + c]) : A(0);
  A acc_w[KK];
#pragma unroll
  for (int t = 0; t < KK; ++t) acc_w[t] = A(0);
  auto g_at = [&](int64_t at) {  // LeakyReLU'(out) * grad_out at element `at`
    return gated<A>(to_acc(grad_out[at]), has_act ? to_acc(out[at]) : A(1), has_act, slope);
  };

  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * kNhwcTilePixels;
  const int64_t p1 = p0 + kNhwcTilePixels < HW ? p0 + kNhwcTilePixels : HW;
  for (int64_t pix = p0 + threadIdx.y; active && pix < p1; pix += kNhwcWarps) {
    const int64_t h = pix / W;
    const int64_t col = pix % W;
    if (need_gx) {  // grad_x[h, col] = sum_ij w[i, j] * g[h - i + P, col - j + P]
      A acc = A(0);
      for_each_tap<K>(h, col, H, W, [&](int t, int64_t q) { acc += w_flipped[t] * g_at(base + q * C); });
      grad_x[base + pix * C] = store_cast(acc, grad_x);
    }
    if (need_gw) {  // grad_w[i, j] += g[h, col] * x[h + i - P, col + j - P]
      const A g = g_at(base + pix * C);
      for_each_tap<K>(h, col, H, W, [&](int t, int64_t q) { acc_w[t] += g * to_acc(x[base + q * C]); });
    }
  }
  if (!need_gw) return;  // uniform across the CTA
  const bool one_run = gridDim.y == 1;
#pragma unroll 1
  for (int t = 0; t < KK; ++t) {
    partial[threadIdx.y][threadIdx.x] = acc_w[t];
    __syncthreads();
    if (threadIdx.y == 0 && active) {
      A sum = A(0);
#pragma unroll
      for (int k = 0; k < kNhwcWarps; ++k) sum += partial[k][threadIdx.x];
      const int64_t plane = b * C + c;
      if (one_run) grad_w[plane * KK + t] = from_acc<T>(static_cast<double>(sum));
      else workspace[(plane * gridDim.y + blockIdx.y) * KK + t] = static_cast<double>(sum);
    }
    __syncthreads();
  }
}

template <typename T, int K>
static cudaError_t launch_backward_nhwc(const IdrDdcParams& p, cudaStream_t stream) {
  dim3 grid;
  cudaError_t err = grid_for_nhwc(p.planes, p.C, p.H, p.W, &grid);
  if (err != cudaSuccess) return err;
  const int64_t tiles = grid.y;
  if (p.grad_w != nullptr && tiles > 1 && p.workspace == nullptr) return cudaErrorInvalidValue;
  auto kernel = idr_ddc_bwd_nhwc_kernel<T, K>;
  KDSR_LAUNCH(kernel, grid, dim3(kNhwcLanes, kNhwcWarps), stream, static_cast<const T*>(p.grad_out),
              static_cast<const T*>(p.out), static_cast<const T*>(p.x), static_cast<const T*>(p.weight),
              static_cast<T*>(p.grad_x), static_cast<T*>(p.grad_w), p.workspace, p.C, p.H, p.W, p.has_act != 0,
              p.negative_slope);
  err = cudaGetLastError();
  if (err != cudaSuccess || p.grad_w == nullptr || tiles == 1) return err;
  return reduce_tiles<T>(p, tiles, K * K, stream);
}

}  // namespace kdsr_cuda

extern "C" int idr_ddc_cuda_backward(const IdrDdcParams* params, void* stream) {
  using namespace kdsr_cuda;
  const IdrDdcParams& p = *params;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.planes == 0 || p.H == 0 || p.W == 0 || (p.grad_x == nullptr && p.grad_w == nullptr)) return 0;
  int status = -1;
  kdsr_dispatch::with_dtype_and_k<__half, __nv_bfloat16>(p.dtype, p.K, [&](auto type, auto k) {
    using T = typename decltype(type)::type;
    constexpr int K = decltype(k)::value;
    status = static_cast<int>(p.channels_last ? launch_backward_nhwc<T, K>(p, s) : launch_backward<T, K>(p, s));
  });
  return status;
}
