// CPU kernel building blocks shared by the forward and the backward: vector type, loads, padded row buffers.
//
// Included once per instruction set, inside a namespace and under a `#pragma GCC target` (see idr_ddc_cpu.h), with
// KDSR_VBYTES (vector width in bytes: 16 SSE2/NEON, 32 AVX2, 64 AVX-512) defined. No include guard on purpose.
// Vectors are GCC/Clang vector extensions, so the same source becomes SSE2, AVX2 or AVX-512 code.

template <typename A>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(KDSR_VBYTES)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(KDSR_VBYTES)));
};

template <typename A>
static inline typename VecOf<A>::type vload(const A* p) {
  typename VecOf<A>::type v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

template <typename A>
static inline void vstore(A* p, typename VecOf<A>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// Storage type -> accumulation type: half and bfloat16 are converted on load and computed in float32.
template <typename T>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

// Scratch rows for one worker: `count` rows of `stride` elements, 64-byte aligned, zero-filled once. A row holds
// one image row at offset `pad` (= K/2); the `pad` elements before and the tail after stay zero for the whole
// run, which is what makes the inner loops branch-free at the left/right image border.
template <typename A>
class RowBuffers {
 public:
  RowBuffers(int64_t count, int64_t stride) : stride_(stride), storage_(count * stride + 64 / sizeof(A), A(0)) {
    uintptr_t addr = reinterpret_cast<uintptr_t>(storage_.data());
    base_ = storage_.data() + ((64 - addr % 64) % 64) / sizeof(A);
  }
  A* row(int64_t r) { return base_ + r * stride_; }

 private:
  int64_t stride_;
  std::vector<A> storage_;
  A* base_;
};

// dst[0..W) = src[0..W) converted to A, or zeros when src is null (a row above/below the image).
template <typename T, typename A>
static inline void load_row(A* dst, const T* src, int64_t W) {
  if (src == nullptr) {
    for (int64_t x = 0; x < W; ++x) dst[x] = A(0);
    return;
  }
  for (int64_t x = 0; x < W; ++x) dst[x] = static_cast<A>(src[x]);
}

// dst[0..W) = LeakyReLU'(out) * grad_out: grad_out where out > 0, else grad_out * slope (zeros when grad_out is
// null, a row outside the image). Without an activation (out == nullptr) it is a plain converting load.
template <typename T, typename A>
static inline void load_grad_row(A* dst, const T* grad_out, const T* out, A slope, int64_t W) {
  if (grad_out == nullptr || out == nullptr) {
    load_row<T, A>(dst, grad_out, W);
    return;
  }
  for (int64_t x = 0; x < W; ++x) {
    const A g = static_cast<A>(grad_out[x]);
    dst[x] = static_cast<A>(out[x]) > A(0) ? g : g * slope;
  }
}

// dst[0..W) = src[0..W) converted to the storage type T (round to nearest even for half / bfloat16).
template <typename T, typename A>
static inline void store_row(T* dst, const A* src, int64_t W) {
  for (int64_t x = 0; x < W; ++x) dst[x] = static_cast<T>(src[x]);
}

// Registers per vector register file: the row-block sizes below keep every accumulator in registers.
constexpr int kVecRegs = KDSR_VBYTES == 64 ? 32 : 16;

// Output rows computed per step: R independent accumulator chains hide the FMA latency, and each loaded input
// vector feeds up to R outputs ((R + K - 1) * K loads for R * K * K FMAs).
constexpr int kRowsPerStep = 4;

// The K*K taps applied to R rows of outputs at columns [x0, x0 + lanes): rows[0 .. R + K - 1) are zero-padded
// input rows, output row q reads rows q .. q + K - 1:
//   acc[q] = sum_{i,j} w[i*K + j] * rows[q + i][x0 + j .. x0 + j + lanes).
template <int K, int R, typename A>
static inline void apply_taps(A* const* rows, const A* w, int64_t x0, typename VecOf<A>::type* acc) {
#pragma GCC unroll 8
  for (int q = 0; q < R; ++q) acc[q] = typename VecOf<A>::type{};
#pragma GCC unroll 16
  for (int r = 0; r < R + K - 1; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < K; ++j) {
      const typename VecOf<A>::type v = vload(rows[r] + x0 + j);
#pragma GCC unroll 8
      for (int q = 0; q < R; ++q) {
        const int i = r - q;
        if (i >= 0 && i < K) acc[q] += w[i * K + j] * v;
      }
    }
  }
}

// Rotate a rolling buffer of n row pointers forward by `by` rows (rows[0] <- rows[by], ...).
template <typename A>
static inline void rotate_rows(A** rows, int n, int by) {
  A* moved[16];
  for (int r = 0; r < n; ++r) moved[r] = rows[(r + by) % n];
  for (int r = 0; r < n; ++r) rows[r] = moved[r];
}
