// CUDA binding of IDR-DDC: checks the tensors, fills IdrDdcParams and calls the plain-C launchers of
// idr_ddc_fwd.cu / idr_ddc_bwd.cu on the current stream of the tensors' device. The kernels themselves see no
// torch header, so they compile with nvcc alone.

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "idr_ddc.h"

namespace kdsr_cuda_binding {

static int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return IDR_DDC_FLOAT32;
    case at::kDouble: return IDR_DDC_FLOAT64;
    case at::kHalf: return IDR_DDC_FLOAT16;
    case at::kBFloat16: return IDR_DDC_BFLOAT16;
    default: TORCH_CHECK(false, "idr_ddc cuda: unsupported dtype ", t.scalar_type());
  }
  return -1;
}

static void check_like(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "idr_ddc cuda: ", name, " must be on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "idr_ddc cuda: ", name, " dtype ", t.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(t.sizes() == like.sizes(), "idr_ddc cuda: ", name, " shape ", t.sizes(), " differs from ",
              like.sizes());
  TORCH_CHECK(t.is_contiguous(), "idr_ddc cuda: ", name, " must be contiguous");
}

static IdrDdcParams make_params(const at::Tensor& x, const at::Tensor& weight, std::optional<double> slope) {
  TORCH_CHECK(x.dim() == 4 && x.is_cuda() && x.is_contiguous(),
              "idr_ddc cuda: x must be a contiguous 4-D CUDA tensor (B, C, H, W)");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == x.size(0) && weight.size(1) == x.size(1) &&
                  weight.size(2) == weight.size(3) && weight.is_contiguous() && weight.device() == x.device(),
              "idr_ddc cuda: weight must be a contiguous (B, C, k, k) tensor on x's device");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "idr_ddc cuda: weight dtype differs from x dtype");
  const int64_t K = weight.size(2);
  TORCH_CHECK(K % 2 == 1 && K >= 1 && K <= 7, "idr_ddc cuda: kernel size must be odd and in [1, 7], got ", K);
  IdrDdcParams p;
  std::memset(&p, 0, sizeof(p));
  p.x = x.data_ptr();
  p.weight = weight.data_ptr();
  p.planes = x.size(0) * x.size(1);
  p.H = x.size(2);
  p.W = x.size(3);
  p.K = static_cast<int32_t>(K);
  p.bands = 1;
  p.band_rows = static_cast<int32_t>(std::min<int64_t>(p.H, 2147483647));
  p.dtype = dtype_code(x);
  p.has_act = slope.has_value() ? 1 : 0;
  p.negative_slope = slope.has_value() ? *slope : 0.0;
  return p;
}

static void check_status(int status, const char* what) {
  TORCH_CHECK(status == 0, "idr_ddc cuda: ", what, " failed: ",
              status < 0 ? "unsupported kernel size or dtype"
                         : cudaGetErrorString(static_cast<cudaError_t>(status)));
}

// y <- act(conv(x, weight)); y preallocated (contiguous, x's shape, dtype and device).
void forward(const at::Tensor& x, const at::Tensor& weight, at::Tensor& y, std::optional<double> negative_slope) {
  IdrDdcParams p = make_params(x, weight, negative_slope);
  check_like(y, x, "y");
  p.y = y.data_ptr();
  const c10::cuda::CUDAGuard guard(x.device());
  check_status(idr_ddc_cuda_forward(&p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
               "forward launch");
}

// Tiles per plane for x's shape and dtype with kernel size k: the workspace is (B*C, tiles, k*k) float64.
int64_t num_tiles(const at::Tensor& x, int64_t k) {
  TORCH_CHECK(x.dim() == 4, "idr_ddc cuda: x must be 4-D");
  return idr_ddc_cuda_tiles(x.size(2), x.size(3), static_cast<int32_t>(k), dtype_code(x));
}

// Fused backward into preallocated grad_x / grad_w (each optional); workspace float64 (B*C, tiles, k*k) is
// needed for grad_w when num_tiles(x, k) > 1; out is the saved forward output, required with negative_slope.
void backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
              const std::optional<at::Tensor>& out, std::optional<double> negative_slope,
              const std::optional<at::Tensor>& grad_x, const std::optional<at::Tensor>& grad_w,
              const std::optional<at::Tensor>& workspace) {
  IdrDdcParams p = make_params(x, weight, negative_slope);
  check_like(grad_out, x, "grad_out");
  p.grad_out = grad_out.data_ptr();
  if (p.has_act) {
    TORCH_CHECK(out.has_value(), "idr_ddc cuda: the saved output is required with negative_slope");
    check_like(*out, x, "out");
    p.out = out->data_ptr();
  }
  if (grad_x.has_value()) {
    check_like(*grad_x, x, "grad_x");
    p.grad_x = grad_x->data_ptr();
  }
  if (grad_w.has_value()) {
    check_like(*grad_w, weight, "grad_w");
    p.grad_w = grad_w->data_ptr();
    const int64_t tiles = num_tiles(x, p.K);
    if (tiles > 1) {
      TORCH_CHECK(workspace.has_value(), "idr_ddc cuda: grad_w of a multi-tile plane needs a workspace");
      const at::Tensor& ws = *workspace;
      TORCH_CHECK(ws.scalar_type() == at::kDouble && ws.is_contiguous() && ws.device() == x.device() &&
                      ws.numel() == p.planes * tiles * p.K * p.K,
                  "idr_ddc cuda: workspace must be a contiguous float64 tensor of ", p.planes * tiles * p.K * p.K,
                  " elements on ", x.device(), " (B*C, num_tiles(x, k), k*k)");
      p.workspace = ws.data_ptr<double>();
    }
  }
  const c10::cuda::CUDAGuard guard(x.device());
  check_status(idr_ddc_cuda_backward(&p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
               "backward launch");
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


// ---- CUDA kernels of the operators kdsr::idr_ddc_compiled / _backward (schemas and autograd: CPU extension) ----
// KDSR_POISON_OUTPUTS=1 (set once from Python): NaN-fill every buffer a kernel must overwrite.
static bool g_poison_outputs = false;
void set_poison_outputs(bool on) { g_poison_outputs = on; }

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
    const int64_t tiles = num_tiles(xc, K);
    if (tiles > 1) {
      workspace = new_buffer({xc.size(0) * xc.size(1), tiles, K * K}, xc.options().dtype(at::kDouble));
    }
  }
  if (need_grad_x || need_grad_w) backward(go, xc, wc, saved, negative_slope, grad_x, grad_w, workspace);
  return {need_grad_x ? *grad_x : x.new_empty({0}), need_grad_w ? *grad_w : weight.new_empty({0})};
}
}  // namespace kdsr_cuda_binding

TORCH_LIBRARY_IMPL(kdsr, CUDA, m) {
  m.impl("idr_ddc_compiled", &kdsr_cuda_binding::op_forward);
  m.impl("idr_ddc_compiled_backward", &kdsr_cuda_binding::op_backward);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "IDR-DDC CUDA kernels (kdsr_kernels): fused forward and fused backward";
  m.def("forward", &kdsr_cuda_binding::forward, "y <- act(idr_ddc(x, weight))", py::arg("x"), py::arg("weight"),
        py::arg("y"), py::arg("negative_slope"));
  m.def("backward", &kdsr_cuda_binding::backward, "fused grad_x / grad_w", py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("out"), py::arg("negative_slope"), py::arg("grad_x"), py::arg("grad_w"),
        py::arg("workspace"));
  m.def("set_poison_outputs", &kdsr_cuda_binding::set_poison_outputs,
        "NaN-fill every output and workspace the operators allocate (KDSR_POISON_OUTPUTS=1)");
  m.def("source_hash", &kdsr_cuda_binding::source_hash,
        "hash of the csrc/ sources this module was compiled from");
  m.def("num_tiles", &kdsr_cuda_binding::num_tiles, "tiles per plane (the grad_w workspace's dim 1)");
}
