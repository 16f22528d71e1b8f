// Run-time (dtype, kernel size) of IdrDdcParams -> template arguments, in one place for every kernel file.
//
// A kernel is a template over its storage type T and kernel size K; the launchers and the CPU unit runners get
// dtype and K at run time. `with_dtype_and_k` calls a generic lambda with a type tag and an integral constant,
// so each file writes its switch once, as
//
//   kdsr_dispatch::with_dtype_and_k<Half, BFloat16>(p.dtype, p.K, [&](auto type, auto k) {
//     using T = typename decltype(type)::type;
//     constexpr int K = decltype(k)::value;
//     run<T, K>(p);
//   });
//
// It returns false (and calls nothing) for a dtype code or kernel size without kernels. Half / BFloat16 are the
// device's 16-bit types (c10::Half, c10::BFloat16 on the CPU; __half, __nv_bfloat16 in CUDA). No torch or CUDA
// header, so the .cu files keep compiling on their own.
#pragma once

#include <type_traits>

#include "idr_ddc.h"

namespace kdsr_dispatch {

template <typename T>
struct TypeTag {
  typedef T type;
};

template <int V>
using KernelSize = std::integral_constant<int, V>;

// fn(KernelSize<K>{}) for k in {1, 3, 5, 7}.
template <typename Fn>
inline bool with_kernel_size(int k, Fn&& fn) {
  switch (k) {
    case 1: fn(KernelSize<1>{}); return true;
    case 3: fn(KernelSize<3>{}); return true;
    case 5: fn(KernelSize<5>{}); return true;
    case 7: fn(KernelSize<7>{}); return true;
    default: return false;
  }
}

// fn(TypeTag<T>{}) with T the storage type of an IdrDdcDtype code.
template <typename Half, typename BFloat16, typename Fn>
inline bool with_dtype(int dtype, Fn&& fn) {
  switch (dtype) {
    case IDR_DDC_FLOAT32: fn(TypeTag<float>{}); return true;
    case IDR_DDC_FLOAT64: fn(TypeTag<double>{}); return true;
    case IDR_DDC_FLOAT16: fn(TypeTag<Half>{}); return true;
    case IDR_DDC_BFLOAT16: fn(TypeTag<BFloat16>{}); return true;
    default: return false;
  }
}

// fn(TypeTag<T>{}, KernelSize<K>{}) for the pair; false when either has no kernels.
template <typename Half, typename BFloat16, typename Fn>
inline bool with_dtype_and_k(int dtype, int k, Fn&& fn) {
  bool found = false;
  with_dtype<Half, BFloat16>(dtype, [&](auto type) {
    found = with_kernel_size(k, [&](auto size) { fn(type, size); });
  });
  return found;
}

}  // namespace kdsr_dispatch
