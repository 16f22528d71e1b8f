// The torch-facing glue both bindings share (idr_ddc_cpu.cpp, idr_ddc_cuda.cpp): the TORCH_CHECKs, filling
// IdrDdcParams, allocating outputs and workspace, the kernels of the operators kdsr::idr_ddc_compiled /
// idr_ddc_compiled_backward and the pybind entries both modules have. Each binding includes it once and passes a
// struct describing its device:
//
//   struct Binding {
//     static constexpr const char* kName;    // message prefix: "idr_ddc cpu" | "idr_ddc cuda"
//     static constexpr const char* kDevice;  // "CPU" | "CUDA"
//     static constexpr const char* kPieces;  // what sizes the workspace's dim 1, e.g. "num_bands(H, W)"
//     static bool on_device(const at::Tensor& t);
//     static void set_pieces(IdrDdcParams& p);                // bands / band_rows (and its own shape limits)
//     static int64_t workspace_pieces(const at::Tensor& x, int64_t K);  // dim 1; 0: grad_w needs none
//     static void run_forward(const IdrDdcParams& p, const at::Tensor& x);
//     static void run_backward(const IdrDdcParams& p, const at::Tensor& x,
//                              const std::optional<at::Tensor>& grad_w);
//   };
//
// Everything here has internal linkage, so the two extension modules loaded into one process never share state
// (each has its own poison flag). Inputs are validated once in Python (kdsr_kernels/_validate.py); these checks
// are the C++ safety net.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/fill.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>

#include "idr_ddc.h"

namespace kdsr_op {
namespace {

template <class B>
int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return IDR_DDC_FLOAT32;
    case at::kDouble: return IDR_DDC_FLOAT64;
    case at::kHalf: return IDR_DDC_FLOAT16;
    case at::kBFloat16: return IDR_DDC_BFLOAT16;
    default: TORCH_CHECK(false, B::kName, ": unsupported dtype ", t.scalar_type());
  }
  return -1;
}

// The memory layout the kernels use for x: NHWC when x is dense channels_last and not plain contiguous (a
// tensor that is both -- C == 1, H == W == 1 -- has one memory order, and takes the NCHW kernels).
template <class B>
bool is_channels_last(const at::Tensor& x) {
  if (x.is_contiguous()) return false;
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), B::kName,
              ": x must be contiguous (NCHW) or channels_last (NHWC)");
  return true;
}

// t has like's device, dtype and shape, and is dense in the layout the kernels use (channels_last or not).
template <class B>
void check_like(const at::Tensor& t, const at::Tensor& like, const char* name, bool channels_last) {
  TORCH_CHECK(t.device() == like.device(), B::kName, ": ", name, " must be on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), B::kName, ": ", name, " dtype ", t.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(t.sizes() == like.sizes(), B::kName, ": ", name, " shape ", t.sizes(), " differs from ",
              like.sizes());
  TORCH_CHECK(t.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous),
              B::kName, ": ", name, " must be ", channels_last ? "channels_last like x" : "contiguous like x");
}

// IdrDdcParams for x and weight, and the tensor p.weight points into (for NHWC the (B, k, k, C) repacked copy,
// made once per call; kept alive by the caller while the kernels run).
struct Prepared {
  IdrDdcParams p;
  at::Tensor weight;
};

template <class B>
Prepared make_params(const at::Tensor& x, const at::Tensor& weight, std::optional<double> slope) {
  TORCH_CHECK(x.dim() == 4 && B::on_device(x), B::kName, ": x must be a 4-D ", B::kDevice, " tensor (B, C, H, W)");
  const bool channels_last = is_channels_last<B>(x);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(0) && weight.size(1) == x.size(1) &&
                  weight.size(2) == weight.size(3) && weight.is_contiguous() && weight.device() == x.device(),
              B::kName, ": weight must be a contiguous (B, C, k, k) tensor on x's device");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), B::kName, ": weight dtype differs from x dtype");
  const int64_t K = weight.size(2);
  TORCH_CHECK(K % 2 == 1 && K >= 1 && K <= 7, B::kName, ": kernel size must be odd and in [1, 7], got ", K);
  Prepared prepared;
  prepared.weight = channels_last ? weight.permute({0, 2, 3, 1}).contiguous() : weight;
  IdrDdcParams& p = prepared.p;
  std::memset(&p, 0, sizeof(p));
  p.x = x.data_ptr();
  p.weight = prepared.weight.data_ptr();
  p.planes = x.size(0) * x.size(1);
  p.C = x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.K = static_cast<int32_t>(K);
  p.channels_last = channels_last ? 1 : 0;
  B::set_pieces(p);
  p.dtype = dtype_code<B>(x);
  p.has_act = slope.has_value() ? 1 : 0;
  p.negative_slope = slope.has_value() ? *slope : 0.0;
  return prepared;
}

// y <- act(conv(x, weight)); x contiguous or channels_last, y preallocated in x's layout, shape, dtype, device.
template <class B>
void forward(const at::Tensor& x, const at::Tensor& weight, at::Tensor& y, std::optional<double> negative_slope) {
  Prepared prepared = make_params<B>(x, weight, negative_slope);
  IdrDdcParams& p = prepared.p;
  check_like<B>(y, x, "y", p.channels_last);
  p.y = y.data_ptr();
  B::run_forward(p, x);
}

// Fused backward into preallocated grad_x (x's shape and layout) and grad_w (weight's shape), each optional.
// grad_out and out (the saved forward output, required with negative_slope) are in x's layout. workspace is
// float64 (B*C, B::workspace_pieces(x, k), k*k), needed for grad_w when that is > 0.
template <class B>
void backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
              const std::optional<at::Tensor>& out, std::optional<double> negative_slope,
              const std::optional<at::Tensor>& grad_x, const std::optional<at::Tensor>& grad_w,
              const std::optional<at::Tensor>& workspace) {
  Prepared prepared = make_params<B>(x, weight, negative_slope);
  IdrDdcParams& p = prepared.p;
  check_like<B>(grad_out, x, "grad_out", p.channels_last);
  p.grad_out = grad_out.data_ptr();
  if (p.has_act) {
    TORCH_CHECK(out.has_value(), B::kName, ": the saved output is required with negative_slope");
    check_like<B>(*out, x, "out", p.channels_last);
    p.out = out->data_ptr();
  }
  if (grad_x.has_value()) {
    check_like<B>(*grad_x, x, "grad_x", p.channels_last);
    p.grad_x = grad_x->data_ptr();
  }
  if (grad_w.has_value()) {
    check_like<B>(*grad_w, weight, "grad_w", false);
    p.grad_w = grad_w->data_ptr();
    const int64_t pieces = B::workspace_pieces(x, p.K);
    if (pieces > 0) {
      TORCH_CHECK(workspace.has_value(), B::kName, ": grad_w needs a workspace");
      const at::Tensor& ws = *workspace;
      const int64_t numel = p.planes * pieces * p.K * p.K;
      TORCH_CHECK(ws.scalar_type() == at::kDouble && ws.is_contiguous() && ws.device() == x.device() &&
                      ws.numel() == numel,
                  B::kName, ": workspace must be a contiguous float64 tensor of ", numel, " elements on ",
                  x.device(), " (B*C, ", B::kPieces, ", k*k)");
      p.workspace = ws.data_ptr<double>();
    }
  }
  B::run_backward(p, x, grad_w);
}

// ---- The operators' kernels: they allocate their own outputs and workspace -----------------------------------
// KDSR_POISON_OUTPUTS=1 (read once in Python, set here through set_poison_outputs): NaN-fill every buffer a
// kernel must overwrite, so an element it forgets shows up as NaN.
bool g_poison_outputs = false;
void set_poison_outputs(bool on) { g_poison_outputs = on; }
[[maybe_unused]] bool poison_outputs() { return g_poison_outputs; }

at::Tensor new_buffer(at::IntArrayRef shape, const at::TensorOptions& options) {
  if (!g_poison_outputs) return at::empty(shape, options);
  return at::empty(shape, options).fill_(NAN);  // at::full ignores the memory format
}

// Outputs follow x's memory format (torch's suggest_memory_format: channels_last or contiguous), as the fake
// kernels in kdsr_kernels/_compiled.py say; grad_w is always contiguous.
template <class B>
at::Tensor op_forward(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  const at::MemoryFormat format = x.suggest_memory_format();
  const at::Tensor xc = x.contiguous(format);
  at::Tensor y = new_buffer(xc.sizes(), xc.options().memory_format(format));
  if (xc.numel() == 0) return y;
  forward<B>(xc, weight.contiguous(), y, negative_slope);
  return y;
}

template <class B>
std::tuple<at::Tensor, at::Tensor> op_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                               const at::Tensor& weight, const std::optional<at::Tensor>& out,
                                               std::optional<double> negative_slope, bool need_grad_x,
                                               bool need_grad_w) {
  const at::MemoryFormat format = x.suggest_memory_format();
  if (x.numel() == 0) {
    return {need_grad_x ? at::zeros(x.sizes(), x.options().memory_format(format)) : x.new_empty({0}),
            need_grad_w ? at::zeros(weight.sizes(), weight.options()) : weight.new_empty({0})};
  }
  const at::Tensor xc = x.contiguous(format);
  const at::Tensor wc = weight.contiguous();
  const at::Tensor go = grad_out.to(x.scalar_type()).contiguous(format);
  std::optional<at::Tensor> saved;
  if (negative_slope.has_value()) saved = out.value().contiguous(format);
  std::optional<at::Tensor> grad_x, grad_w, workspace;
  if (need_grad_x) grad_x = new_buffer(xc.sizes(), xc.options().memory_format(format));
  if (need_grad_w) {
    const int64_t K = wc.size(2);
    grad_w = new_buffer(wc.sizes(), wc.options());
    const int64_t pieces = B::workspace_pieces(xc, K);
    if (pieces > 0) {
      workspace = new_buffer({xc.size(0) * xc.size(1), pieces, K * K}, xc.options().dtype(at::kDouble));
    }
  }
  if (need_grad_x || need_grad_w) backward<B>(go, xc, wc, saved, negative_slope, grad_x, grad_w, workspace);
  return {need_grad_x ? *grad_x : x.new_empty({0}), need_grad_w ? *grad_w : weight.new_empty({0})};
}

// The operators' typed dispatcher handles, looked up once (schemas: idr_ddc_cpu.cpp).
typedef at::Tensor(ForwardSig)(const at::Tensor&, const at::Tensor&, std::optional<double>);
typedef std::tuple<at::Tensor, at::Tensor>(BackwardSig)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                         const std::optional<at::Tensor>&, std::optional<double>,
                                                         bool, bool);

[[maybe_unused]] const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("kdsr::idr_ddc_compiled", "").typed<ForwardSig>();
  return op;
}

[[maybe_unused]] const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("kdsr::idr_ddc_compiled_backward", "").typed<BackwardSig>();
  return op;
}

// Inside TORCH_LIBRARY_IMPL(kdsr, <device key>, m): this device's kernels of both operators.
template <class B>
void impl_kernels(torch::Library& m) {
  m.impl("idr_ddc_compiled", &op_forward<B>);
  m.impl("idr_ddc_compiled_backward", &op_backward<B>);
}

// Hash of the sources this module was built from (setup.py defines KDSR_SOURCE_HASH; empty for JIT builds).
#define KDSR_STRINGIFY_(x) #x
#define KDSR_STRINGIFY(x) KDSR_STRINGIFY_(x)
std::string source_hash() {
#ifdef KDSR_SOURCE_HASH
  return KDSR_STRINGIFY(KDSR_SOURCE_HASH);
#else
  return "";
#endif
}

// Inside PYBIND11_MODULE: the entries both modules have (forward, backward, set_poison_outputs, source_hash).
template <class B>
void def_common(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("forward", &forward<B>, "y <- act(idr_ddc(x, weight))", py::arg("x"), py::arg("weight"), py::arg("y"),
        py::arg("negative_slope"));
  m.def("backward", &backward<B>, "fused grad_x / grad_w", py::arg("grad_out"), py::arg("x"), py::arg("weight"),
        py::arg("out"), py::arg("negative_slope"), py::arg("grad_x"), py::arg("grad_w"), py::arg("workspace"));
  m.def("set_poison_outputs", &set_poison_outputs,
        "NaN-fill every output and workspace the operators allocate (KDSR_POISON_OUTPUTS=1)");
  m.def("source_hash", &source_hash, "hash of the csrc/ sources this module was compiled from");
}

}  // namespace
}  // namespace kdsr_op
