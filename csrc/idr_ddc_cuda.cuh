// Device code shared by the CUDA forward (idr_ddc_fwd.cu) and backward (idr_ddc_bwd.cu) of IDR-DDC.
//
// Only CUDA runtime headers: the .cu files compile on their own (nvcc -c), the torch side is idr_ddc_cuda.cpp.
//
// Tiling: one CTA of 64 x 4 threads per (plane, row tile, column tile). A tile is kTileW = 64 columns by
// TileRows rows (64, or 32 for K = 7 / float64 to bound registers and shared memory). The tile and its K/2 halo
// are staged in shared memory, converted to the accumulation type (float; double for float64), zero outside
// the plane -- so the compute loops have no bounds checks. Interior rows are read with 16-byte vector loads when
// W and the pointers allow it. Thread (tx, ty) owns output column tx and rows [ty*RPT, (ty+1)*RPT) of the tile
// and slides a K-wide register window down its column: each shared-memory value feeds up to K*K FMAs.
//
// Channels_last (NHWC): one CTA of 32 x 8 threads per (sample, block of 32 channels, run of kNhwcTilePixels
// pixels in raster order). Lane = channel, so every tap of a warp is one coalesced load of 32 consecutive
// channels (and the (B, K, K, C) repacked weights likewise); the 8 warps stride over the run's pixels. Halo reuse
// comes from L1/L2. grad_w: K*K per-thread sums over its pixels, summed over the 8 warps in a fixed order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "idr_ddc.h"
#include "idr_ddc_dispatch.h"

// Kernel launch on `stream`. tests/cuda_emulator.h defines it to run the CTAs on CPU threads instead, which is
// how the kernels are tested on machines without a GPU.
#ifndef KDSR_LAUNCH
#define KDSR_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

namespace kdsr_cuda {

constexpr int kTileW = 64;                    // tile columns = threads along x
constexpr int kThreadsY = 4;                  // row groups
constexpr int kThreads = kTileW * kThreadsY;  // 256 threads per CTA
constexpr int kWarps = kThreads / 32;
constexpr int kHaloL = 4;                     // shared column of the tile's first column (>= K/2, 16-byte aligned)
constexpr int kSmemW = kHaloL + kTileW + 4;   // 72 shared columns per row

constexpr int kNhwcLanes = 32;           // channels per CTA (one per lane)
constexpr int kNhwcWarps = 8;            // warps per CTA, striding over pixels
constexpr int64_t kNhwcTilePixels = 512; // pixels per CTA

template <typename T>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

template <typename A, int K>
struct TileRows {
  static constexpr int value = (sizeof(A) == 8 || K == 7) ? 32 : 64;
};

__host__ __device__ inline int tile_rows_for(int K, int dtype) {
  return (dtype == IDR_DDC_FLOAT64 || K == 7) ? 32 : 64;
}

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(double v);
template <>
__device__ __forceinline__ float from_acc<float>(double v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(double v) { return __float2half_rn(static_cast<float>(v)); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}
// float -> storage without a detour through double (the hot stores)
__device__ __forceinline__ float store_cast(float v, float*) { return v; }
__device__ __forceinline__ double store_cast(double v, double*) { return v; }
__device__ __forceinline__ __half store_cast(float v, __half*) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 store_cast(float v, __nv_bfloat16*) { return __float2bfloat16_rn(v); }

// value, or LeakyReLU'(gate) * value when gate != nullptr (gate = saved forward output)
// Calls fn(t, q) for every tap t = i * K + j of the 'same' K x K window at pixel (h, col) of an H x W plane
// that lies inside it, q = (h + i - K/2) * W + (col + j - K/2) being the tap's pixel index (NHWC callers scale
// it by C). The one home of the NHWC kernels' window walk (forward, grad_x, grad_w).
template <int K, typename Fn>
__device__ __forceinline__ void for_each_tap(int64_t h, int64_t col, int64_t H, int64_t W, Fn fn) {
  constexpr int P = K / 2;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    const int64_t hh = h + i - P;
    if (hh < 0 || hh >= H) continue;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t ww = col + j - P;
      if (ww >= 0 && ww < W) fn(i * K + j, hh * W + ww);
    }
  }
}

template <typename A>
__device__ __forceinline__ A gated(A value, A gate, bool use_gate, A slope) {
  return (use_gate && !(gate > A(0))) ? value * slope : value;
}

// Stage rows [h0 - P, h0 + TH + P) x columns [w0 - P, w0 + kTileW + P) of one plane into s (column c of the
// plane at s[.][kHaloL + c - w0]); zeros outside the plane. With gate != nullptr the staged value is
// LeakyReLU'(gate) * src (the backward's activation gradient). vec: 16-byte loads are legal (W % (16 /
// sizeof(T)) == 0 and src, gate 16-byte aligned).
template <typename T, typename A, int K, int TH>
__device__ __forceinline__ void stage_tile(A (*s)[kSmemW], const T* __restrict__ src, const T* __restrict__ gate,
                                           A slope, int64_t H, int64_t W, int64_t h0, int64_t w0, bool vec) {
  constexpr int P = K / 2;
  constexpr int kRows = TH + 2 * P;
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kVecPerRow = kTileW / kVec;
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  const bool use_gate = gate != nullptr;
  // interior columns [w0, w0 + kTileW)
  for (int idx = tid; idx < kRows * kVecPerRow; idx += kThreads) {
    const int r = idx / kVecPerRow;
    const int c = (idx % kVecPerRow) * kVec;
    const int64_t h = h0 - P + r;
    const int64_t w = w0 + c;
    A* dst = &s[r][kHaloL + c];
    if (h < 0 || h >= H) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[e] = A(0);
    } else if (vec && w + kVec <= W) {
      const int64_t at = h * W + w;
      union {
        uint4 raw;
        T v[kVec];
      } a, g;
      a.raw = __ldg(reinterpret_cast<const uint4*>(src + at));
      if (use_gate) g.raw = __ldg(reinterpret_cast<const uint4*>(gate + at));
#pragma unroll
      for (int e = 0; e < kVec; ++e)
        dst[e] = gated<A>(to_acc(a.v[e]), use_gate ? to_acc(g.v[e]) : A(1), use_gate, slope);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const int64_t we = w + e;
        A v = A(0);
        if (we < W) {
          const int64_t at = h * W + we;
          v = gated<A>(to_acc(src[at]), use_gate ? to_acc(gate[at]) : A(1), use_gate, slope);
        }
        dst[e] = v;
      }
    }
  }
  // halo columns [w0 - P, w0) and [w0 + kTileW, w0 + kTileW + P)
  if constexpr (P > 0) {
    for (int idx = tid; idx < kRows * 2 * P; idx += kThreads) {
      const int r = idx / (2 * P);
      const int e = idx % (2 * P);
      const int c = e < P ? e - P : kTileW + (e - P);
      const int64_t h = h0 - P + r;
      const int64_t w = w0 + c;
      A v = A(0);
      if (h >= 0 && h < H && w >= 0 && w < W) {
        const int64_t at = h * W + w;
        v = gated<A>(to_acc(src[at]), use_gate ? to_acc(gate[at]) : A(1), use_gate, slope);
      }
      s[r][kHaloL + c] = v;
    }
  }
}

// acc[q] = sum_{i,j} w[i*K + j] * s[r0 + q + i][kHaloL - P + tx + j] for q < RPT: the forward (and, with the
// flipped kernel, grad_x) of rows r0.. r0+RPT-1 of the tile at column tx, with a register sliding window.
template <typename A, int K, int RPT>
__device__ __forceinline__ void column_conv(const A (*s)[kSmemW], const A* w, int r0, int tx, A* acc) {
  constexpr int P = K / 2;
#pragma unroll
  for (int q = 0; q < RPT; ++q) acc[q] = A(0);
#pragma unroll
  for (int rr = 0; rr < RPT + K - 1; ++rr) {
    A v[K];
#pragma unroll
    for (int j = 0; j < K; ++j) v[j] = s[r0 + rr][kHaloL - P + tx + j];
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int q = rr - i;
      if (q >= 0 && q < RPT) {
#pragma unroll
        for (int j = 0; j < K; ++j) acc[q] += w[i * K + j] * v[j];
      }
    }
  }
}

inline cudaError_t grid_for(int64_t planes, int64_t H, int64_t W, int TH, dim3* grid) {
  const int64_t row_tiles = (H + TH - 1) / TH;
  const int64_t col_tiles = (W + kTileW - 1) / kTileW;
  if (planes > 2147483647LL || row_tiles > 65535 || col_tiles > 65535) return cudaErrorInvalidConfiguration;
  *grid = dim3(static_cast<unsigned>(planes), static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
  return cudaSuccess;
}

// NHWC grid: (B * channel blocks, pixel runs).
inline cudaError_t grid_for_nhwc(int64_t planes, int64_t C, int64_t H, int64_t W, dim3* grid) {
  const int64_t samples = C > 0 ? planes / C : 0;
  const int64_t blocks = samples * ((C + kNhwcLanes - 1) / kNhwcLanes);
  const int64_t runs = (H * W + kNhwcTilePixels - 1) / kNhwcTilePixels;
  if (blocks > 2147483647LL || runs > 65535) return cudaErrorInvalidConfiguration;
  *grid = dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(runs), 1);
  return cudaSuccess;
}

inline bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) % 16) == 0; }

}  // namespace kdsr_cuda
