// CPU binding of IDR-DDC: checks the tensors, fills IdrDdcParams, runs the kernels over (plane, row band) units
// with at::parallel_for, and picks the widest instruction set the CPU supports at run time.
//
// The kernels (idr_ddc_cpu_fwd.cpp, idr_ddc_cpu_bwd.cpp) are compiled three times on x86-64 -- SSE2, AVX2+FMA and
// AVX-512 -- through `#pragma GCC target`, so a portable build (no -march=native) still runs wide vectors.
// KDSR_CPU_ISA=sse2|avx2|avx512 in the environment caps the choice (for tests and comparisons).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/autograd.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "idr_ddc_cpu.h"

namespace kdsr_cpu {

// The widest instruction set this CPU runs, capped by KDSR_CPU_ISA (avx512 | avx2 | sse2) when set.
static CpuIsa select_isa() {
  const char* cap_env = std::getenv("KDSR_CPU_ISA");
  const std::string cap = cap_env ? cap_env : "";
#ifdef KDSR_X86_MULTI_ISA
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && (cap.empty() || cap == "avx512")) return CpuIsa::avx512;
  if (avx2 && (cap.empty() || cap == "avx512" || cap == "avx2")) return CpuIsa::avx2;
#endif
  return CpuIsa::baseline;
}

static CpuIsa active_isa() {
  static const CpuIsa isa = select_isa();
  return isa;
}

static int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return IDR_DDC_FLOAT32;
    case at::kDouble: return IDR_DDC_FLOAT64;
    case at::kHalf: return IDR_DDC_FLOAT16;
    case at::kBFloat16: return IDR_DDC_BFLOAT16;
    default: TORCH_CHECK(false, "idr_ddc cpu: unsupported dtype ", t.scalar_type());
  }
  return -1;
}

// Row bands per plane: a function of the plane shape only (never of the thread count), so the grad_w partial
// sums -- one per band -- and their fixed-order reduction are identical however the work is scheduled.
// Bands hold >= 16 rows and ~16K elements; a 64x64 plane is one band, 180x320 is four.
static int32_t band_rows_for(int64_t H, int64_t W) {
  const int64_t rows = std::max<int64_t>(16, (16384 + W - 1) / W);
  return static_cast<int32_t>(std::min<int64_t>(rows, H));
}

int64_t num_bands(int64_t H, int64_t W) {
  const int64_t rows = band_rows_for(H, W);
  return (H + rows - 1) / rows;
}

static void check_plane_tensor(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "idr_ddc cpu: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "idr_ddc cpu: ", name, " dtype ", t.scalar_type(),
              " differs from x dtype ", x.scalar_type());
  TORCH_CHECK(t.sizes() == x.sizes(), "idr_ddc cpu: ", name, " shape ", t.sizes(), " differs from x ", x.sizes());
  TORCH_CHECK(t.is_contiguous(), "idr_ddc cpu: ", name, " must be contiguous");
}

static IdrDdcParams make_params(const at::Tensor& x, const at::Tensor& weight, std::optional<double> slope) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.is_contiguous(),
              "idr_ddc cpu: x must be a contiguous 4-D CPU tensor (B, C, H, W)");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(0) && weight.size(1) == x.size(1) &&
                  weight.size(2) == weight.size(3) && weight.is_contiguous() && weight.device().is_cpu(),
              "idr_ddc cpu: weight must be a contiguous CPU tensor (B, C, k, k) matching x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "idr_ddc cpu: weight dtype differs from x dtype");
  const int64_t K = weight.size(2);
  TORCH_CHECK(K % 2 == 1 && K >= 1 && K <= 7, "idr_ddc cpu: kernel size must be odd and in [1, 7], got ", K);
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0, "idr_ddc cpu: empty planes are not supported");
  IdrDdcParams p;
  std::memset(&p, 0, sizeof(p));
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.planes = x.size(0) * x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.K = static_cast<int32_t>(K);
  p.band_rows = band_rows_for(p.H, p.W);
  p.bands = static_cast<int32_t>((p.H + p.band_rows - 1) / p.band_rows);
  p.dtype = dtype_code(x);
  p.has_act = slope.has_value() ? 1 : 0;
  p.negative_slope = slope.has_value() ? *slope : 0.0;
  return p;
}

static void run_units(UnitsFn fn, const IdrDdcParams& p) {
  at::parallel_for(0, p.planes * p.bands, 1, [&](int64_t begin, int64_t end) { fn(p, begin, end); });
}

// y <- act(conv(x, weight)); y preallocated (contiguous, x's shape and dtype).
void forward(const at::Tensor& x, const at::Tensor& weight, at::Tensor& y, std::optional<double> negative_slope) {
  IdrDdcParams p = make_params(x, weight, negative_slope);
  check_plane_tensor(y, x, "y");
  p.y = y.data_ptr();
  run_units(forward_table(active_isa()).fn[p.dtype][(p.K - 1) / 2], p);
}

// Fused backward. grad_x (x's shape) and grad_w (weight's shape) are preallocated outputs, each optional;
// workspace is float64 (B*C, num_bands(H, W), K*K) when grad_w is wanted; out is the saved forward output,
// required when negative_slope is set.
void backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
              const std::optional<at::Tensor>& out, std::optional<double> negative_slope,
              const std::optional<at::Tensor>& grad_x, const std::optional<at::Tensor>& grad_w,
              const std::optional<at::Tensor>& workspace) {
  IdrDdcParams p = make_params(x, weight, negative_slope);
  check_plane_tensor(grad_out, x, "grad_out");
  p.grad_out = grad_out.data_ptr();
  if (p.has_act) {
    TORCH_CHECK(out.has_value(), "idr_ddc cpu: the saved output is required with negative_slope");
    check_plane_tensor(*out, x, "out");
    p.out = out->data_ptr();
  }
  if (grad_x.has_value()) {
    check_plane_tensor(*grad_x, x, "grad_x");
    p.grad_x = grad_x->data_ptr();
  }
  if (grad_w.has_value()) {
    check_plane_tensor(*grad_w, weight, "grad_w");
    TORCH_CHECK(workspace.has_value(), "idr_ddc cpu: grad_w needs a workspace");
    const at::Tensor& ws = *workspace;
    TORCH_CHECK(ws.scalar_type() == at::kDouble && ws.is_contiguous() && ws.device().is_cpu() &&
                    ws.numel() == p.planes * p.bands * p.K * p.K,
                "idr_ddc cpu: workspace must be a contiguous float64 CPU tensor of ",
                p.planes * p.bands * p.K * p.K, " elements (B*C, num_bands(H, W), k*k)");
    p.workspace = ws.data_ptr<double>();
  }
  if (p.grad_x == nullptr && p.workspace == nullptr) return;
  run_units(backward_table(active_isa()).fn[p.dtype][(p.K - 1) / 2], p);
  if (p.workspace == nullptr) return;
  // grad_w[plane, t] = sum over bands, in band order.
  const int64_t taps = p.K * p.K;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "idr_ddc_cpu_grad_w", [&] {
    scalar_t* gw = grad_w->data_ptr<scalar_t>();
    const double* ws = p.workspace;
    for (int64_t plane = 0; plane < p.planes; ++plane) {
      for (int64_t t = 0; t < taps; ++t) {
        double s = 0.0;
        for (int64_t b = 0; b < p.bands; ++b) s += ws[(plane * p.bands + b) * taps + t];
        gw[plane * taps + t] = static_cast<scalar_t>(s);
      }
    }
  });
}

std::string isa() {
  switch (active_isa()) {
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx2: return "avx2";
    default:
#if defined(__x86_64__) || defined(_M_X64)
      return "sse2";
#else
      return "baseline";
#endif
  }
}

int64_t openmp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
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


// ---- The torch operators kdsr::idr_ddc_compiled / kdsr::idr_ddc_compiled_backward -------------------------------
// Eager calls go dispatcher -> C++: the binding allocates its outputs and workspace itself. Inputs are validated
// once in Python (kdsr_kernels/_validate.py); the TORCH_CHECKs above stay as the C++ safety net.

// KDSR_POISON_OUTPUTS=1 (read once in Python, set here through set_poison_outputs): NaN-fill every buffer a
// kernel must overwrite, so an element it forgets shows up as NaN.
static bool g_poison_outputs = false;
void set_poison_outputs(bool on) { g_poison_outputs = on; }
bool poison_outputs() { return g_poison_outputs; }

static at::Tensor new_buffer(at::IntArrayRef shape, const at::TensorOptions& options) {
  return g_poison_outputs ? at::full(shape, NAN, options) : at::empty(shape, options);
}

at::Tensor op_forward(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  const at::Tensor xc = x.contiguous();
  at::Tensor y = new_buffer(xc.sizes(), xc.options());
  if (xc.numel() == 0) return y;
  forward(xc, weight.contiguous(), y, negative_slope);
  return y;
}

std::tuple<at::Tensor, at::Tensor> op_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                               const at::Tensor& weight, const std::optional<at::Tensor>& out,
                                               std::optional<double> negative_slope, bool need_grad_x,
                                               bool need_grad_w) {
  if (x.numel() == 0) {
    return {need_grad_x ? at::zeros(x.sizes(), x.options()) : x.new_empty({0}),
            need_grad_w ? at::zeros(weight.sizes(), weight.options()) : weight.new_empty({0})};
  }
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  const at::Tensor go = grad_out.to(x.scalar_type()).contiguous();
  std::optional<at::Tensor> saved;
  if (negative_slope.has_value()) saved = out.value().contiguous();
  std::optional<at::Tensor> grad_x, grad_w, workspace;
  if (need_grad_x) grad_x = new_buffer(xc.sizes(), xc.options());
  if (need_grad_w) {
    const int64_t K = wc.size(2);
    grad_w = new_buffer(wc.sizes(), wc.options());
    workspace = new_buffer({xc.size(0) * xc.size(1), num_bands(xc.size(2), xc.size(3)), K * K},
                           xc.options().dtype(at::kDouble));
  }
  if (need_grad_x || need_grad_w) backward(go, xc, wc, saved, negative_slope, grad_x, grad_w, workspace);
  return {need_grad_x ? *grad_x : x.new_empty({0}), need_grad_w ? *grad_w : weight.new_empty({0})};
}

// Autograd in C++ (the forward and backward kernels are registered per device by the extensions).
class IdrDdcFunction : public torch::autograd::Function<IdrDdcFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            std::optional<double> negative_slope) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdsr::idr_ddc_compiled", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<double>)>();
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = op.call(x, weight, negative_slope);
    }
    ctx->saved_data["has_slope"] = negative_slope.has_value();
    ctx->saved_data["slope"] = negative_slope.value_or(0.0);
    ctx->save_for_backward({x, weight, negative_slope.has_value() ? out : at::Tensor()});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdsr::idr_ddc_compiled_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const std::optional<at::Tensor>&, std::optional<double>, bool, bool)>();
    const auto saved = ctx->get_saved_variables();
    std::optional<double> slope;
    std::optional<at::Tensor> out;
    if (ctx->saved_data["has_slope"].toBool()) {
      slope = ctx->saved_data["slope"].toDouble();
      out = saved[2];
    }
    const bool need_grad_x = ctx->needs_input_grad(0);
    const bool need_grad_w = ctx->needs_input_grad(1);
    auto [grad_x, grad_w] = op.call(grads[0], saved[0], saved[1], out, slope, need_grad_x, need_grad_w);
    return {need_grad_x ? grad_x : at::Tensor(), need_grad_w ? grad_w : at::Tensor(), at::Tensor()};
  }
};

at::Tensor op_forward_autograd(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  if (!at::GradMode::is_enabled() || !(x.requires_grad() || weight.requires_grad())) {
    // nothing to record: skip the autograd Function's bookkeeping, go straight to the device kernel
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdsr::idr_ddc_compiled", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<double>)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, weight, negative_slope);
  }
  return IdrDdcFunction::apply(x, weight, negative_slope);
}

// The public entry for eager Python calls: one pybind conversion, then the dispatcher (autograd, then the CPU or
// CUDA kernel) -- the same route as torch.ops.kdsr.idr_ddc_compiled without its boxed argument parsing.
at::Tensor call_idr_ddc(const at::Tensor& x, const at::Tensor& weight, std::optional<double> negative_slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("kdsr::idr_ddc_compiled", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<double>)>();
  return op.call(x, weight, negative_slope);
}
}  // namespace kdsr_cpu

// The schemas live here (the CPU extension is always loaded first); the CUDA extension adds its CUDA kernels.
TORCH_LIBRARY_FRAGMENT(kdsr, m) {
  m.def("idr_ddc_compiled(Tensor x, Tensor weight, float? negative_slope) -> Tensor");
  m.def(
      "idr_ddc_compiled_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? out, float? negative_slope, "
      "bool need_grad_x, bool need_grad_w) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kdsr, CPU, m) {
  m.impl("idr_ddc_compiled", &kdsr_cpu::op_forward);
  m.impl("idr_ddc_compiled_backward", &kdsr_cpu::op_backward);
}

TORCH_LIBRARY_IMPL(kdsr, Autograd, m) { m.impl("idr_ddc_compiled", &kdsr_cpu::op_forward_autograd); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "IDR-DDC CPU kernels (kdsr_kernels): fused forward and fused backward";
  m.def("forward", &kdsr_cpu::forward, "y <- act(idr_ddc(x, weight))", py::arg("x"), py::arg("weight"),
        py::arg("y"), py::arg("negative_slope"));
  m.def("backward", &kdsr_cpu::backward, "fused grad_x / grad_w", py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("out"), py::arg("negative_slope"), py::arg("grad_x"), py::arg("grad_w"),
        py::arg("workspace"));
  m.def("idr_ddc", &kdsr_cpu::call_idr_ddc,
        "torch.ops.kdsr.idr_ddc_compiled(x, weight, negative_slope) through the dispatcher, for eager calls",
        py::arg("x"), py::arg("weight"), py::arg("negative_slope"));
  m.def("set_poison_outputs", &kdsr_cpu::set_poison_outputs,
        "NaN-fill every output and workspace the operators allocate (KDSR_POISON_OUTPUTS=1)");
  m.def("poison_outputs", &kdsr_cpu::poison_outputs, "whether outputs are NaN-filled");
  m.def("source_hash", &kdsr_cpu::source_hash, "hash of the csrc/ sources this module was compiled from");
  m.def("num_bands", &kdsr_cpu::num_bands, "row bands per H x W plane (the grad_w workspace's dim 1)");
  m.def("isa", &kdsr_cpu::isa, "instruction set the kernels run with: avx512, avx2, sse2 or baseline");
  m.def("openmp_max_threads", &kdsr_cpu::openmp_max_threads,
        "omp_get_max_threads() seen by this extension (must follow torch.set_num_threads)");
}
