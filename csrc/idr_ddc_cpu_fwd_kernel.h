// CPU forward of IDR-DDC for a range of work units (unit = one row band of one plane).
//
// Included once per instruction set by idr_ddc_cpu_fwd.cpp (see idr_ddc_cpu.h). The input rows the current
// kRowsPerStep output rows need sit in a rolling buffer of zero-padded rows (each input row is converted to the
// accumulation type once, when it enters the buffer); all K*K taps are applied to vectors of outputs held in
// registers, the LeakyReLU is applied, and each vector is stored once. No branches on the image border.

template <typename T, int K>
static void forward_units(const IdrDdcParams& p, int64_t begin, int64_t end) {
  typedef typename AccOf<T>::type A;
  typedef typename VecOf<A>::type V;
  constexpr int P = K / 2;
  constexpr int R = kRowsPerStep;
  constexpr int NR = R + K - 1;                   // input rows in the rolling buffer
  constexpr int64_t L = KDSR_VBYTES / sizeof(A);  // lanes per vector
  const int64_t H = p.H, W = p.W;
  const int64_t Wv = (W + L - 1) / L * L;  // columns computed: W rounded up to whole vectors
  const int64_t full = W / L * L;          // columns stored straight from registers
  RowBuffers<A> buffers(NR + R, Wv + 2 * P + L);
  A* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = buffers.row(r);
  A* staging[R];  // for the last partial vector / the conversion to half precision
  for (int q = 0; q < R; ++q) staging[q] = buffers.row(NR + q);
  const A slope = static_cast<A>(p.negative_slope);
  const bool act = p.has_act != 0;
  const V zero = {};

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t plane = unit / p.bands;
    const int64_t h0 = (unit % p.bands) * p.band_rows;
    const int64_t h1 = std::min<int64_t>(H, h0 + p.band_rows);
    const T* xp = static_cast<const T*>(p.x) + plane * H * W;
    T* yp = static_cast<T*>(p.y) + plane * H * W;
    const T* wp = static_cast<const T*>(p.weight) + plane * K * K;
    A w[K * K];
    for (int t = 0; t < K * K; ++t) w[t] = static_cast<A>(wp[t]);
    auto load = [&](int r, int64_t h) {  // buffer row r <- image row h (zeros outside the image)
      load_row<T, A>(rows[r] + P, (h >= 0 && h < H) ? xp + h * W : nullptr, W);
    };
    for (int r = 0; r < NR; ++r) load(r, h0 - P + r);

    for (int64_t h = h0; h < h1; h += R) {
      const int nq = static_cast<int>(std::min<int64_t>(R, h1 - h));  // rows of this step inside the band
      for (int64_t x0 = 0; x0 < Wv; x0 += L) {
        V acc[R];
        apply_taps<K, R, A>(rows, w, x0, acc);
#pragma GCC unroll 8
        for (int q = 0; q < R; ++q) {
          if (act) acc[q] = acc[q] > zero ? acc[q] : acc[q] * slope;
          if constexpr (std::is_same<T, A>::value) {
            if (q < nq && x0 < full) vstore(reinterpret_cast<A*>(yp + (h + q) * W) + x0, acc[q]);
            else vstore(staging[q] + x0, acc[q]);
          } else {
            vstore(staging[q] + x0, acc[q]);
          }
        }
      }
      for (int q = 0; q < nq; ++q) {
        T* dst = yp + (h + q) * W;
        if constexpr (std::is_same<T, A>::value) {
          for (int64_t x = full; x < W; ++x) dst[x] = staging[q][x];
        } else {
          store_row<T, A>(dst, staging[q], W);
        }
      }
      if (h + R < h1) {  // advance the rolling buffer by R rows
        rotate_rows<A>(rows, NR, R);
        for (int r = NR - R; r < NR; ++r) load(r, h + R - P + r);
      }
    }
  }
}
