// CPU forward and fused backward of IDR-DDC on channels_last (NHWC) tensors, vectorised along C.
//
// Included once per instruction set by idr_ddc_cpu_kernels.cpp after idr_ddc_cpu_rows.h (see idr_ddc_cpu.h).
// Work unit = one row band of one sample, all C channels. x, y, grad_out, out, grad_x are (B, H, W, C) in memory;
// the binding repacked weight to (B, K, K, C), so the K*K taps of a vector of channels are K*K vector loads.
// Image rows enter a rolling buffer of K zero-padded rows, converted to the accumulation type, with each pixel's
// channels padded to whole vectors (Cp); the padding pixels and channels stay zero for the whole run, so the
// loops below have no border branches. Each output vector gets all K*K taps in registers and is stored once.
// grad_w: per (tap, channel) lane accumulators over a row, folded into float64 every kNhwcFold pixels, in an
// order fixed by the shape; each unit writes its own workspace slots, so any thread count gives the same bits.

constexpr int kNhwcCols = 4;        // output pixels per inner step: each loaded vector feeds up to K of them
constexpr int64_t kNhwcFold = 64;   // pixels summed in the accumulation type before a float64 fold

// C rounded up to whole vectors of A.
template <typename A>
static inline int64_t padded_channels(int64_t C) {
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);
  return (C + L - 1) / L * L;
}

// Pixel q of dst (stride Cp) <- pixel q of src (stride C) for q < W, converted; with gate: LeakyReLU'(gate) * src.
// A null src (a row outside the image) gives zeros.
template <typename T, typename A>
static inline void load_pixels(A* dst, const T* src, const T* gate, A slope, int64_t W, int64_t C, int64_t Cp) {
  for (int64_t q = 0; q < W; ++q) {
    A* d = dst + q * Cp;
    if (src == nullptr) {
      for (int64_t c = 0; c < C; ++c) d[c] = A(0);
      continue;
    }
    const T* s = src + q * C;
    if (gate == nullptr) {
      for (int64_t c = 0; c < C; ++c) d[c] = static_cast<A>(s[c]);
    } else {
      const T* g = gate + q * C;
      for (int64_t c = 0; c < C; ++c) {
        const A v = static_cast<A>(s[c]);
        d[c] = static_cast<A>(g[c]) > A(0) ? v : v * slope;
      }
    }
  }
}

// out[q*Cp + c0 ..] for q < W = act(sum_{i,j} w[(i*K + j)*Cp + c0 ..] * rows[i][(q + j)*Cp + c0 ..]): one vector of
// channels of a whole output row. rows[i] is padded row i (pixel 0 = image column -P).
template <int K, typename A>
static inline void nhwc_row(A* const* rows, const A* w, int64_t c0, int64_t W, int64_t Cp, bool act, A slope,
                            A* out) {
  typedef typename VecOf<A>::type V;
  constexpr int N = kNhwcCols;
  V wv[K * K];
#pragma GCC unroll 49
  for (int t = 0; t < K * K; ++t) wv[t] = vload(w + t * Cp + c0);
  const V zero = {};
  int64_t q0 = 0;
  for (; q0 + N <= W; q0 += N) {
    V acc[N];
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) acc[n] = V{};
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i) {
      const A* row = rows[i] + q0 * Cp + c0;
#pragma GCC unroll 10
      for (int s = 0; s < N + K - 1; ++s) {
        const V v = vload(row + s * Cp);
#pragma GCC unroll 4
        for (int n = 0; n < N; ++n) {
          const int j = s - n;
          if (j >= 0 && j < K) acc[n] += wv[i * K + j] * v;
        }
      }
    }
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) {
      if (act) acc[n] = acc[n] > zero ? acc[n] : acc[n] * slope;
      vstore(out + (q0 + n) * Cp + c0, acc[n]);
    }
  }
  for (; q0 < W; ++q0) {
    V acc = {};
#pragma GCC unroll 7
    for (int i = 0; i < K; ++i)
#pragma GCC unroll 7
      for (int j = 0; j < K; ++j) acc += wv[i * K + j] * vload(rows[i] + (q0 + j) * Cp + c0);
    if (act) acc = acc > zero ? acc : acc * slope;
    vstore(out + q0 * Cp + c0, acc);
  }
}

// Per-unit scratch of the NHWC kernels: `count` padded rows of (W + 2P) * Cp elements, the repacked weights.
template <typename A>
struct NhwcScratch {
  NhwcScratch(int count, int64_t W, int P, int K, int64_t Cp)
      : row_stride((W + 2 * P) * Cp), rows(count, row_stride), weights(2, K * K * Cp) {}
  int64_t row_stride;
  RowBuffers<A> rows;
  RowBuffers<A> weights;  // row 0: (K, K, Cp) taps, row 1: the flipped taps (backward)
};

// Store a computed output row (stride Cp, accumulation type) to the image row dst (stride C, storage type).
template <typename T, typename A>
static inline void store_pixels(T* dst, const A* src, int64_t W, int64_t C, int64_t Cp) {
  for (int64_t q = 0; q < W; ++q)
    for (int64_t c = 0; c < C; ++c) dst[q * C + c] = static_cast<T>(src[q * Cp + c]);
}

template <typename T, int K>
static void forward_units_nhwc(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  constexpr int P = K / 2;
  const int64_t H = p.H, W = p.W, C = p.C;
  const int64_t Cp = padded_channels<A>(C);
  // direct stores into y when its row has the buffer's layout (no conversion, no channel padding)
  const bool direct = std::is_same<T, A>::value && Cp == C;
  NhwcScratch<A> scratch(K + 1, W, P, K, Cp);
  A* rows[K];
  for (int r = 0; r < K; ++r) rows[r] = scratch.rows.row(r);
  A* staging = scratch.rows.row(K);
  A* w = scratch.weights.row(0);
  const A slope = static_cast<A>(p.negative_slope);
  const bool act = p.has_act != 0;

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t b = unit / p.bands;
    const int64_t h0 = (unit % p.bands) * p.band_rows;
    const int64_t h1 = std::min<int64_t>(H, h0 + p.band_rows);
    const T* xb = static_cast<const T*>(p.x) + b * H * W * C;
    T* yb = static_cast<T*>(p.y) + b * H * W * C;
    const T* wb = static_cast<const T*>(p.weight) + b * K * K * C;
    for (int t = 0; t < K * K; ++t)
      for (int64_t c = 0; c < C; ++c) w[t * Cp + c] = static_cast<A>(wb[t * C + c]);
    auto load = [&](int r, int64_t h) {
      load_pixels<T, A>(rows[r] + P * Cp, (h >= 0 && h < H) ? xb + h * W * C : nullptr, nullptr, slope, W, C, Cp);
    };
    for (int r = 0; r < K; ++r) load(r, h0 - P + r);
    for (int64_t h = h0; h < h1; ++h) {
      T* dst = yb + h * W * C;
      A* out = direct ? reinterpret_cast<A*>(dst) : staging;
      for (int64_t c0 = 0; c0 < Cp; c0 += KDSR_VBYTES / sizeof(A)) nhwc_row<K, A>(rows, w, c0, W, Cp, act, slope, out);
      if (!direct) store_pixels<T, A>(dst, staging, W, C, Cp);
      if (h + 1 < h1) {
        rotate_rows<A>(rows, K, 1);
        load(K - 1, h + 1 + P);
      }
    }
  }
}

template <typename T, int K>
static void backward_units_nhwc(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  typedef typename VecOf<A>::type V;
  constexpr int P = K / 2;
  constexpr int KK = K * K;
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);
  const int64_t H = p.H, W = p.W, C = p.C;
  const int64_t Cp = padded_channels<A>(C);
  const bool direct = std::is_same<T, A>::value && Cp == C;
  const bool need_gx = p.grad_x != nullptr;
  const bool need_gw = p.workspace != nullptr;
  NhwcScratch<A> scratch(2 * K + 1, W, P, K, Cp);
  A* g_rows[K];
  A* x_rows[K];
  for (int r = 0; r < K; ++r) {
    g_rows[r] = scratch.rows.row(r);
    x_rows[r] = scratch.rows.row(K + r);
  }
  A* staging = scratch.rows.row(2 * K);
  A* w_flipped = scratch.weights.row(1);
  std::vector<double> sums(need_gw ? KK * Cp : 0);
  const A slope = static_cast<A>(p.negative_slope);
  const T* act_out = p.has_act ? static_cast<const T*>(p.out) : nullptr;

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t b = unit / p.bands;
    const int64_t band = unit % p.bands;
    const int64_t h0 = band * p.band_rows;
    const int64_t h1 = std::min<int64_t>(H, h0 + p.band_rows);
    const int64_t offset = b * H * W * C;
    const T* gp = static_cast<const T*>(p.grad_out) + offset;
    const T* op = act_out ? act_out + offset : nullptr;
    const T* xp = static_cast<const T*>(p.x) + offset;
    T* gxp = need_gx ? static_cast<T*>(p.grad_x) + offset : nullptr;
    const T* wb = static_cast<const T*>(p.weight) + b * KK * C;
    for (int t = 0; t < KK; ++t)
      for (int64_t c = 0; c < C; ++c) w_flipped[t * Cp + c] = static_cast<A>(wb[(KK - 1 - t) * C + c]);
    auto load = [&](int r, int64_t h) {
      const bool inside = h >= 0 && h < H;
      load_pixels<T, A>(g_rows[r] + P * Cp, inside ? gp + h * W * C : nullptr,
                        inside && op ? op + h * W * C : nullptr, slope, W, C, Cp);
      if (need_gw) load_pixels<T, A>(x_rows[r] + P * Cp, inside ? xp + h * W * C : nullptr, nullptr, slope, W, C, Cp);
    };
    for (int r = 0; r < K; ++r) load(r, h0 - P + r);
    std::fill(sums.begin(), sums.end(), 0.0);

    for (int64_t h = h0; h < h1; ++h) {
      if (need_gx) {  // grad_x = the forward over g with the flipped kernel
        T* dst = gxp + h * W * C;
        A* out = direct ? reinterpret_cast<A*>(dst) : staging;
        for (int64_t c0 = 0; c0 < Cp; c0 += L) nhwc_row<K, A>(g_rows, w_flipped, c0, W, Cp, false, slope, out);
        if (!direct) store_pixels<T, A>(dst, staging, W, C, Cp);
      }
      if (need_gw) {  // grad_w[i][j][c] += sum_q g[h][q][c] * x[h + i - P][q + j - P][c]
        const A* g_center = g_rows[P] + P * Cp;
        for (int64_t c0 = 0; c0 < Cp; c0 += L) {
          V acc[KK];
#pragma GCC unroll 49
          for (int t = 0; t < KK; ++t) acc[t] = V{};
          for (int64_t q = 0; q < W; ++q) {
            const V g = vload(g_center + q * Cp + c0);
#pragma GCC unroll 7
            for (int i = 0; i < K; ++i)
#pragma GCC unroll 7
              for (int j = 0; j < K; ++j) acc[i * K + j] += g * vload(x_rows[i] + (q + j) * Cp + c0);
            if ((q + 1) % kNhwcFold == 0 || q + 1 == W) {
              for (int t = 0; t < KK; ++t) {
                double* s = sums.data() + t * Cp + c0;
                for (int64_t l = 0; l < L; ++l) s[l] += static_cast<double>(acc[t][l]);
                acc[t] = V{};
              }
            }
          }
        }
      }
      if (h + 1 < h1) {
        rotate_rows<A>(g_rows, K, 1);
        rotate_rows<A>(x_rows, K, 1);
        load(K - 1, h + 1 + P);
      }
    }
    if (need_gw) {  // workspace (planes, bands, KK), plane = b * C + c
      for (int64_t c = 0; c < C; ++c) {
        double* slot = p.workspace + ((b * C + c) * p.bands + band) * KK;
        for (int t = 0; t < KK; ++t) slot[t] = sums[t * Cp + c];
      }
    }
  }
}
