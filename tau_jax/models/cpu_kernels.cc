// Kernels for XLA:CPU (jax.ffi custom calls) on channels-last arrays: convolutions and the
// GroupNorm + SiLU passes. Built on first use by cpu_kernels.py.
//
// Depthwise (forward and kernel gradient). Why by hand: XLA:CPU has no fast depthwise kernel
// gradient. Its grouped-convolution gradient runs outside its libraries (860 ms at 4096
// channels), and every reduction form of it materialises one strided window per tap (25 ms);
// this loop reads each input once (1.6 ms). The forward pass is here too, as it spares XLA its
// padded copy.
//
//   forward:      out[b, oh, ow, c] = sum_{i, j} x[b, oh + i d - p, ow + j d - p, c] * k[i, j, c]
//   kernel grad:  dk[i, j, c] = sum_{b, oh, ow} x[b, oh + i d - p, ow + j d - p, c] * g[b, oh, ow, c]
// (zero padding: taps that fall outside the input are skipped). The input gradient is the forward
// pass of g with the flipped kernel and padding d (k - 1) - p.
//
// Dense convolution kernel gradient (HWIO), 8k input and output channels. Why by hand: XLA:CPU
// first transposes both operands to channel-major copies, then runs a convolution with a whole
// image as its window: 34 ms for SimVP's 64 -> 64 channel 3x3 at 64x64 over 20 frames, 9 ms for a
// 16-channel one over 40, where this loop takes 13 and 2 (450-550 GFLOP/s on two cores):
//   dw[i, j, ci, co] = sum_{b, oh, ow} x[b, s oh + i - pt, s ow + j - pl, ci] * g[b, oh, ow, co]
// (stride s: 1, or 2 for SimVP's downsampling layers, where XLA's transposed copy of the
// full-resolution input alone took 2.4 ms of a small gSTA's step). One input row and one
// output-gradient row make a small matrix product per tap (K = the row's width), done in register
// blocks of BI input x BJ output channels.
//
// Dense convolution forward pass (stride 1, NHWC x HWIO), output channels 8k: also the input
// gradient (the forward pass of the output gradient with the flipped kernel). Why by hand: XLA:CPU's
// Eigen convolution runs the recurrent cells' 5x5 convolutions on 16x16 patch grids at 120-200
// GFLOP/s on a 2-core Zen 4, SimVP's 3x3 ones with 1-16 channels at 6-110; this loop, each output
// row's kh input rows zero-padded into a scratch and blocks of BI output pixels x BJ output
// channels accumulated over all taps and input channels in registers, at 180-215 and 30-150:
//   y[b, oh, ow, co] = sum_{i, j, ci} x[b, oh + i - pt, ow + j - pl, ci] * w[i, j, ci, co]
//
// GroupNorm + SiLU (group_norm.py), the four passes over a channels-last map x (B, P, C) that
// need the whole map, with per-(sample, channel) coefficients k[n, b, c] computed in between:
//   sums:        out = (sum_p x, sum_p x^2)                            (float64 running sums)
//   silu:        y = z / (1 + exp(-z)),  z = x k0 + k1
//   grad sums:   dz = dy s (1 + z (1 - s)), s = sigmoid(z);  out = (sum_p dz, sum_p dz (x k2 + k3))
//   grad:        dx = dz k2 + x k3 + k4  (dz as above, recomputed rather than stored)
// Why by hand: a small gSTA's train step spent 35 ms in XLA:CPU's loops for these (several per
// pass, 64 x 64 x 16 over 40 frames); with these loops the step is 7.6% faster.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 64;  // channels per kernel-gradient task: its k*k accumulators stay in L1

// Runs fn(0..n-1) on the calling thread and XLA's intra-op pool. Tasks take indices from a shared
// counter, so a pool thread that starts late (busy with another op) finds nothing left and returns.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> fn) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n;
    std::function<void(int64_t)> fn;
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->fn = std::move(fn);
  auto drain = [](State& s) {
    for (int64_t i; (i = s.next.fetch_add(1)) < s.n;) {
      s.fn(i);
      s.done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([state, drain] { drain(*state); });
  drain(*state);
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct Geometry {
  int64_t B, H, W, C, Ho, Wo, kh, kw, d, p;
};

// One output row (b, oh), all channels: x's rows are read in order and the kernel (k*k*C) stays
// in cache, which a channel-block order (a 16 KB stride per pixel at 4096 channels) did not do.
template <typename T>
void ForwardRow(const Geometry& s, const T* __restrict__ x, const T* __restrict__ k,
                T* __restrict__ out, int64_t b, int64_t oh) {
  T* out_row = out + (b * s.Ho + oh) * s.Wo * s.C;
  std::memset(out_row, 0, sizeof(T) * s.Wo * s.C);
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t ih = oh + i * s.d - s.p;
    if (ih < 0 || ih >= s.H) continue;
    const T* x_row = x + (b * s.H + ih) * s.W * s.C;
    for (int64_t ow = 0; ow < s.Wo; ++ow) {
      T* ov = out_row + ow * s.C;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t iw = ow + j * s.d - s.p;
        if (iw < 0 || iw >= s.W) continue;
        const T* xv = x_row + iw * s.C;
        const T* kv = k + (i * s.kw + j) * s.C;
        for (int64_t c = 0; c < s.C; ++c) ov[c] += xv[c] * kv[c];
      }
    }
  }
}

template <typename T>
void KernelGradBlock(const Geometry& s, const T* __restrict__ x, const T* __restrict__ g,
                     T* __restrict__ dk, int64_t c0) {
  const int64_t n = std::min(kBlock, s.C - c0);
  std::unique_ptr<T[]> acc(new T[s.kh * s.kw * kBlock]());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t oh = 0; oh < s.Ho; ++oh)
      for (int64_t i = 0; i < s.kh; ++i) {
        const int64_t ih = oh + i * s.d - s.p;
        if (ih < 0 || ih >= s.H) continue;
        const T* x_row = x + (b * s.H + ih) * s.W * s.C + c0;
        const T* g_row = g + (b * s.Ho + oh) * s.Wo * s.C + c0;
        for (int64_t ow = 0; ow < s.Wo; ++ow)
          for (int64_t j = 0; j < s.kw; ++j) {
            const int64_t iw = ow + j * s.d - s.p;
            if (iw < 0 || iw >= s.W) continue;
            const T* xv = x_row + iw * s.C;
            const T* gv = g_row + ow * s.C;
            T* av = acc.get() + (i * s.kw + j) * kBlock;
            for (int64_t c = 0; c < n; ++c) av[c] += xv[c] * gv[c];
          }
      }
  for (int64_t t = 0; t < s.kh * s.kw; ++t)
    std::memcpy(dk + t * s.C + c0, acc.get() + t * kBlock, sizeof(T) * n);
}

int64_t Blocks(int64_t channels) { return (channels + kBlock - 1) / kBlock; }

template <typename T>
void Forward(ffi::ThreadPool& pool, const Geometry& s, const T* x, const T* k, T* out) {
  ParallelFor(pool, s.B * s.Ho, [&](int64_t t) { ForwardRow(s, x, k, out, t / s.Ho, t % s.Ho); });
}

template <typename T>
void KernelGrad(ffi::ThreadPool& pool, const Geometry& s, const T* x, const T* g, T* dk) {
  ParallelFor(pool, Blocks(s.C), [&](int64_t t) { KernelGradBlock(s, x, g, dk, t * kBlock); });
}

// ---- dense convolution kernel gradient --------------------------------------------------------

struct ConvGeometry {
  int64_t B, H, W, Ci, Ho, Wo, Co, kh, kw, pt, pl, st;  // st: the stride of both axes
};

template <typename T, int VB>
struct Vec {
  typedef T type __attribute__((vector_size(VB)));  // VB bytes; split by the compiler if wider
};

// acc[BI, NV * L] += X[K, BI]^T G[K, NV * L] (rows strided by xs, gs; acc's by as), the BI x NV
// vector accumulators in registers.
template <typename T, int VB, int BI, int NV>
inline void BlockProduct(const T* __restrict__ X, int64_t xs, const T* __restrict__ G, int64_t gs,
                         int64_t K, T* __restrict__ acc, int64_t as) {
  using V = typename Vec<T, VB>::type;
  constexpr int L = VB / sizeof(T);
  V r[BI][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    V gv[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&gv[v], G + k * gs + v * L, sizeof(V));
    const T* xv = X + k * xs;
    for (int i = 0; i < BI; ++i)
      for (int v = 0; v < NV; ++v) r[i][v] += xv[i] * gv[v];
  }
  for (int i = 0; i < BI; ++i)
    for (int v = 0; v < NV; ++v) {
      V a;
      std::memcpy(&a, acc + i * as + v * L, sizeof(V));
      a += r[i][v];
      std::memcpy(acc + i * as + v * L, &a, sizeof(V));
    }
}

// Adds output row (b, oh)'s contribution to every tap's (Ci, Co) block of acc.
template <typename T, int VB, int BI, int NV>
void ConvKernelGradRow(const ConvGeometry& s, const T* x, const T* g, T* acc, int64_t b,
                       int64_t oh) {
  constexpr int64_t BJ = NV * VB / sizeof(T);
  const T* g_row = g + (b * s.Ho + oh) * s.Wo * s.Co;
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t ih = oh * s.st + i - s.pt;
    if (ih < 0 || ih >= s.H) continue;
    const T* x_row = x + (b * s.H + ih) * s.W * s.Ci;
    for (int64_t j = 0; j < s.kw; ++j) {
      // output columns ow whose tap j lands inside the row: 0 <= ow st + j - pl < W
      const int64_t before = s.pl - j, last = s.W - 1 + s.pl - j;
      const int64_t ow0 = before > 0 ? (before + s.st - 1) / s.st : 0;
      const int64_t ow1 = last >= 0 ? std::min<int64_t>(s.Wo, last / s.st + 1) : 0;
      if (ow1 <= ow0) continue;
      const T* X = x_row + (ow0 * s.st + j - s.pl) * s.Ci;
      const T* G = g_row + ow0 * s.Co;
      T* tap = acc + (i * s.kw + j) * s.Ci * s.Co;
      for (int64_t ci = 0; ci < s.Ci; ci += BI)
        for (int64_t co = 0; co < s.Co; co += BJ)
          BlockProduct<T, VB, BI, NV>(X + ci, s.st * s.Ci, G + co, s.Co, ow1 - ow0,
                                      tap + ci * s.Co + co, s.Co);
    }
  }
}

// Rows split into a few chunks, each summed into its own accumulator; the chunks added at the end
// (serially: a few kh*kw*Ci*Co sums, small beside the products).
template <typename T, int VB, int BI, int NV>
void ConvKernelGradSum(ffi::ThreadPool& pool, const ConvGeometry& s, const T* x, const T* g,
                       T* dw) {
  const int64_t rows = s.B * s.Ho, size = s.kh * s.kw * s.Ci * s.Co;
  // at most 64 MB of accumulators (many-core machines, wide kernels)
  const int64_t most = std::max<int64_t>(1, (int64_t{64} << 20) / (size * sizeof(T)));
  const int64_t chunks = std::min({rows, 2 * (pool.num_threads() + 1), most});
  std::vector<std::unique_ptr<T[]>> accs(chunks);
  ParallelFor(pool, chunks, [&](int64_t c) {
    accs[c].reset(new T[size]());
    for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r)
      ConvKernelGradRow<T, VB, BI, NV>(s, x, g, accs[c].get(), r / s.Ho, r % s.Ho);
  });
  std::memcpy(dw, accs[0].get(), sizeof(T) * size);
  for (int64_t c = 1; c < chunks; ++c)
    for (int64_t t = 0; t < size; ++t) dw[t] += accs[c][t];
}

// Register blocks by channel counts (both multiples of 8, checked by the caller): output channels
// in two 64-byte vectors where they fill them, else one 64- or 32-byte vector.
template <typename T>
void ConvKernelGradBlocked(ffi::ThreadPool& pool, const ConvGeometry& s, const T* x, const T* g,
                           T* dw) {
  constexpr int64_t L = 64 / sizeof(T);
  const bool ci16 = s.Ci % 16 == 0;
  if (s.Co % (2 * L) == 0)
    ConvKernelGradSum<T, 64, 8, 2>(pool, s, x, g, dw);
  else if (s.Co % L == 0 && ci16)
    ConvKernelGradSum<T, 64, 16, 1>(pool, s, x, g, dw);
  else if (s.Co % L == 0)
    ConvKernelGradSum<T, 64, 8, 1>(pool, s, x, g, dw);
  else if (ci16)
    ConvKernelGradSum<T, 32, 16, 1>(pool, s, x, g, dw);
  else
    ConvKernelGradSum<T, 32, 8, 1>(pool, s, x, g, dw);
}

// ---- dense convolution forward ---------------------------------------------------------------

// One output row (b, oh) of the stride-1 convolution for the output channels [co0, co0 + NV L):
// the kh input rows it reads sit zero-padded in `rows` (row stride rs, every column a whole pixel
// of Ci channels, wide enough that every block of BI output pixels is whole), and each block
// accumulates over all taps and input channels in BI x NV vector registers.
template <typename T, int VB, int BI, int NV>
void ForwardConvBlocks(const ConvGeometry& s, const T* __restrict__ rows, int64_t rs,
                       const T* __restrict__ w, T* __restrict__ y_row, int64_t co0) {
  using V = typename Vec<T, VB>::type;
  constexpr int L = VB / sizeof(T);
  for (int64_t ow0 = 0; ow0 < s.Wo; ow0 += BI) {
    V r[BI][NV] = {};
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const T* X = rows + i * rs + (ow0 + j) * s.Ci;
        const T* G = w + (i * s.kw + j) * s.Ci * s.Co + co0;
        for (int64_t ci = 0; ci < s.Ci; ++ci) {
          V gv[NV];
          for (int v = 0; v < NV; ++v) std::memcpy(&gv[v], G + ci * s.Co + v * L, sizeof(V));
          for (int p = 0; p < BI; ++p) {
            const T xv = X[p * s.Ci + ci];
            for (int v = 0; v < NV; ++v) r[p][v] += xv * gv[v];
          }
        }
      }
    const int64_t n = std::min<int64_t>(BI, s.Wo - ow0);
    for (int64_t p = 0; p < n; ++p)
      for (int v = 0; v < NV; ++v)
        std::memcpy(y_row + (ow0 + p) * s.Co + co0 + v * L, &r[p][v], sizeof(V));
  }
}

template <typename T, int VB, int BI, int NV>
void ForwardConvRow(const ConvGeometry& s, const T* x, const T* w, T* y, int64_t b, int64_t oh) {
  constexpr int64_t BJ = NV * VB / sizeof(T);
  const int64_t width = (s.Wo + BI - 1) / BI * BI + s.kw - 1, rs = width * s.Ci;
  thread_local std::vector<T> rows;
  rows.assign(s.kh * rs, T(0));
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t ih = oh + i - s.pt;
    if (ih < 0 || ih >= s.H) continue;
    // input column iw sits at column iw + pl; columns past the scratch are never read
    const int64_t first = std::max<int64_t>(0, -s.pl);
    const int64_t last = std::min<int64_t>(s.W, width - s.pl);
    if (last > first)
      std::memcpy(rows.data() + i * rs + (first + s.pl) * s.Ci,
                  x + ((b * s.H + ih) * s.W + first) * s.Ci, sizeof(T) * (last - first) * s.Ci);
  }
  T* y_row = y + (b * s.Ho + oh) * s.Wo * s.Co;
  for (int64_t co0 = 0; co0 < s.Co; co0 += BJ)
    ForwardConvBlocks<T, VB, BI, NV>(s, rows.data(), rs, w, y_row, co0);
}

// Register blocks by the output channels (a multiple of 8, checked by the caller): two 64-byte
// vectors where they fill them, else one 64- or 32-byte vector, over 8 or 16 output pixels.
template <typename T>
void ForwardConv(ffi::ThreadPool& pool, const ConvGeometry& s, const T* x, const T* w, T* y) {
  constexpr int64_t L = 64 / sizeof(T);
  std::function<void(int64_t)> row;
  if (s.Co % (2 * L) == 0)
    row = [&](int64_t t) { ForwardConvRow<T, 64, 8, 2>(s, x, w, y, t / s.Ho, t % s.Ho); };
  else if (s.Co % L == 0)
    row = [&](int64_t t) { ForwardConvRow<T, 64, 16, 1>(s, x, w, y, t / s.Ho, t % s.Ho); };
  else
    row = [&](int64_t t) { ForwardConvRow<T, 32, 16, 1>(s, x, w, y, t / s.Ho, t % s.Ho); };
  ParallelFor(pool, s.B * s.Ho, row);
}

// ---- GroupNorm + SiLU passes ------------------------------------------------------------------

// exp for float32 in a form the compiler vectorises (Cephes' expf: Cody-Waite reduction, degree-6
// polynomial; within 2 ulp of std::exp over the clamped range, where sigmoid saturates anyway).
inline float Exp(float x) {
  x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // nearest integer (1.5 * 2^23)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}
inline double Exp(double x) { return std::exp(x); }

struct MapGeometry {
  int64_t B, P, C;
  int64_t L;      // the coefficients' period along the elements: lcm(C, 16), whole vectors
  int64_t parts;  // tasks per sample
  MapGeometry(int64_t b, int64_t p, int64_t c, int64_t threads) : B(b), P(p), C(c) {
    L = C * 16 / std::gcd<int64_t>(C, 16);
    const int64_t most = std::max<int64_t>(1, P * C / 8192);
    parts = std::min(most, std::max<int64_t>(1, (4 * threads + B - 1) / B));
  }
};

// Runs body(task, first element, count, c) for every task: a part of one sample's elements,
// starting at a multiple of L; c (K x L) holds the sample's coefficients k[i, b, :] tiled along L.
template <typename T, int K, typename Body>
void OverMap(ffi::ThreadPool& pool, const MapGeometry& s, const T* k, Body body) {
  ParallelFor(pool, s.B * s.parts, [&](int64_t t) {
    const int64_t b = t / s.parts, part = t % s.parts, n = s.P * s.C, steps = (n + s.L - 1) / s.L;
    const int64_t e0 = steps * part / s.parts * s.L;
    const int64_t e1 = std::min(n, steps * (part + 1) / s.parts * s.L);
    std::vector<T> c(K * s.L);
    for (int i = 0; i < K; ++i)
      for (int64_t j = 0; j < s.L; ++j) c[i * s.L + j] = k[(i * s.B + b) * s.C + j % s.C];
    body(t, b * n + e0, e1 - e0, c.data());
  });
}

// Calls f(e, j) for e = 0..n-1, j = e % L (L a multiple of 16): in groups of 16, a loop the
// compiler vectorises, then the tail.
template <typename F>
inline void Elements(int64_t n, int64_t L, F f) {
  int64_t e = 0;
  for (; e + L <= n; e += L)
    for (int64_t j0 = 0; j0 < L; j0 += 16)
      for (int64_t j = j0; j < j0 + 16; ++j) f(e + j, j);
  for (int64_t j = 0; e + j < n; ++j) f(e + j, j);
}

// sums[j] and sums[L + j] += the two values of f(e, j) over e = 0..n-1 with e % L = j: 16 columns
// at a time in accumulators the compiler keeps in registers, then the tail.
template <typename F>
inline void SumElements(int64_t n, int64_t L, double* sums, F f) {
  const int64_t full = n / L * L;
  for (int64_t j0 = 0; j0 < L; j0 += 16) {
    double a[16] = {}, b[16] = {};
    for (int64_t e = j0; e < full; e += L)
      for (int j = 0; j < 16; ++j) {
        const auto [u, v] = f(e + j, j0 + j);
        a[j] += u;
        b[j] += v;
      }
    for (int j = 0; j < 16; ++j) {
      sums[j0 + j] += a[j];
      sums[L + j0 + j] += b[j];
    }
  }
  for (int64_t e = full; e < n; ++e) {
    const auto [u, v] = f(e, e - full);
    sums[e - full] += u;
    sums[L + e - full] += v;
  }
}

// Folds per-task sums acc[task][2][L] into out[2, B, C].
template <typename T>
void FoldSums(const MapGeometry& s, const std::vector<double>& acc, T* out) {
  std::vector<double> total(2 * s.B * s.C, 0.0);
  for (int64_t t = 0; t < s.B * s.parts; ++t)
    for (int i = 0; i < 2; ++i)
      for (int64_t j = 0; j < s.L; ++j)
        total[(i * s.B + t / s.parts) * s.C + j % s.C] += acc[(t * 2 + i) * s.L + j];
  for (size_t i = 0; i < total.size(); ++i) out[i] = static_cast<T>(total[i]);
}

template <typename T>
void SumsPass(ffi::ThreadPool& pool, const MapGeometry& s, const T* x, T* out) {
  std::vector<double> acc(s.B * s.parts * 2 * s.L, 0.0);
  OverMap<T, 0>(pool, s, nullptr, [&](int64_t t, int64_t e0, int64_t n, const T*) {
    SumElements(n, s.L, &acc[t * 2 * s.L], [&](int64_t e, int64_t) {
      const double v = x[e0 + e];
      return std::pair<double, double>(v, v * v);
    });
  });
  FoldSums(s, acc, out);
}

template <typename T>
void SiluPass(ffi::ThreadPool& pool, const MapGeometry& s, const T* x, const T* k, T* y) {
  OverMap<T, 2>(pool, s, k, [&](int64_t, int64_t e0, int64_t n, const T* c) {
    const T *c0 = c, *c1 = c + s.L;
    Elements(n, s.L, [&](int64_t e, int64_t j) {
      const T z = x[e0 + e] * c0[j] + c1[j];
      y[e0 + e] = z / (T(1) + Exp(-z));
    });
  });
}

// dL/dz of y = silu(z) from dy.
template <typename T>
inline T SiluGrad(T z, T dy) {
  const T s = T(1) / (T(1) + Exp(-z));
  return dy * s * (T(1) + z * (T(1) - s));
}

template <typename T>
void SiluGradSumsPass(ffi::ThreadPool& pool, const MapGeometry& s, const T* x, const T* dy,
                      const T* k, T* out) {
  std::vector<double> acc(s.B * s.parts * 2 * s.L, 0.0);
  OverMap<T, 4>(pool, s, k, [&](int64_t t, int64_t e0, int64_t n, const T* c) {
    const T *c0 = c, *c1 = c + s.L, *c2 = c + 2 * s.L, *c3 = c + 3 * s.L;
    SumElements(n, s.L, &acc[t * 2 * s.L], [&](int64_t e, int64_t j) {
      const T v = x[e0 + e];
      const T dz = SiluGrad(v * c0[j] + c1[j], dy[e0 + e]);
      return std::pair<double, double>(dz, dz * (v * c2[j] + c3[j]));
    });
  });
  FoldSums(s, acc, out);
}

template <typename T>
void SiluGradPass(ffi::ThreadPool& pool, const MapGeometry& s, const T* x, const T* dy,
                  const T* k, T* dx) {
  OverMap<T, 5>(pool, s, k, [&](int64_t, int64_t e0, int64_t n, const T* c) {
    const T *c0 = c, *c1 = c + s.L, *c2 = c + 2 * s.L, *c3 = c + 3 * s.L, *c4 = c + 4 * s.L;
    Elements(n, s.L, [&](int64_t e, int64_t j) {
      const T v = x[e0 + e];
      const T dz = SiluGrad(v * c0[j] + c1[j], dy[e0 + e]);
      dx[e0 + e] = dz * c2[j] + v * c3[j] + c4[j];
    });
  });
}

// ---- FFI entry points --------------------------------------------------------------------------

ffi::DataType Type(ffi::AnyBuffer b) { return b.element_type(); }
ffi::DataType Type(ffi::Result<ffi::AnyBuffer>& b) { return b->element_type(); }
template <typename T>
T* Data(ffi::AnyBuffer b) { return b.typed_data<T>(); }
template <typename T>
T* Data(ffi::Result<ffi::AnyBuffer>& b) { return b->typed_data<T>(); }

// Calls run(data...) with the buffers' data as T* for the element type T (float32 or float64)
// they all share.
template <typename Run, typename... Buffers>
ffi::Error WithData(Run run, Buffers&... buffers) {
  const ffi::DataType types[] = {Type(buffers)...};
  for (ffi::DataType type : types)
    if (type != types[0]) return ffi::Error::InvalidArgument("operands of different dtypes");
  if (types[0] == ffi::DataType::F32)
    run(Data<float>(buffers)...);
  else if (types[0] == ffi::DataType::F64)
    run(Data<double>(buffers)...);
  else
    return ffi::Error::InvalidArgument("only float32 and float64 are supported");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer k,
                       ffi::Result<ffi::AnyBuffer> out, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), kd = k.dimensions(), od = out->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], od[1], od[2], kd[0], kd[1], dilation, padding};
  return WithData([&](auto* x, auto* k, auto* out) { Forward(pool, s, x, k, out); }, x, k, out);
}

ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                          ffi::Result<ffi::AnyBuffer> dk, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), gd = g.dimensions(), kd = dk->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], kd[0], kd[1], dilation, padding};
  return WithData([&](auto* x, auto* g, auto* dk) { KernelGrad(pool, s, x, g, dk); }, x, g, dk);
}

ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                              ffi::Result<ffi::AnyBuffer> dw, int64_t pad_top, int64_t pad_left,
                              int64_t stride) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  const ConvGeometry s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2],
                       gd[3], wd[0], wd[1], pad_top, pad_left, stride};
  if (s.Ci % 8 || s.Co % 8) return ffi::Error::InvalidArgument("channels must be multiples of 8");
  return WithData([&](auto* x, auto* g, auto* dw) { ConvKernelGradBlocked(pool, s, x, g, dw); },
                  x, g, dw);
}

ffi::Error ConvForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                           ffi::Result<ffi::AnyBuffer> y, int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  const ConvGeometry s{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2],
                       yd[3], wd[0], wd[1], pad_top, pad_left, 1};
  if (s.Co % 8) return ffi::Error::InvalidArgument("output channels must be multiples of 8");
  return WithData([&](auto* x, auto* w, auto* y) { ForwardConv(pool, s, x, w, y); }, x, w, y);
}

MapGeometry Map(ffi::ThreadPool& pool, ffi::AnyBuffer x) {
  auto d = x.dimensions();  // (B, P, C)
  return MapGeometry(d[0], d[1], d[2], pool.num_threads() + 1);
}

ffi::Error ChannelSumsImpl(ffi::ThreadPool pool, ffi::AnyBuffer x,
                           ffi::Result<ffi::AnyBuffer> out) {
  const MapGeometry s = Map(pool, x);
  return WithData([&](auto* x, auto* out) { SumsPass(pool, s, x, out); }, x, out);
}

ffi::Error AffineSiluImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer k,
                          ffi::Result<ffi::AnyBuffer> y) {
  const MapGeometry s = Map(pool, x);
  return WithData([&](auto* x, auto* k, auto* y) { SiluPass(pool, s, x, k, y); }, x, k, y);
}

ffi::Error AffineSiluGradSumsImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                                  ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> out) {
  const MapGeometry s = Map(pool, x);
  return WithData([&](auto* x, auto* dy, auto* k, auto* out) {
    SiluGradSumsPass(pool, s, x, dy, k, out);
  }, x, dy, k, out);
}

ffi::Error AffineSiluGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                              ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> dx) {
  const MapGeometry s = Map(pool, x);
  return WithData([&](auto* x, auto* dy, auto* k, auto* dx) {
    SiluGradPass(pool, s, x, dy, k, dx);
  }, x, dy, k, dx);
}

// (thread pool; N arrays) -> one array
template <int N>
auto Arrays() {
  if constexpr (N == 1)
    return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>();
  else if constexpr (N == 2)
    return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>();
  else
    return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseForward, ForwardImpl,
                              Arrays<2>().Attr<int64_t>("dilation").Attr<int64_t>("padding"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, KernelGradImpl,
                              Arrays<2>().Attr<int64_t>("dilation").Attr<int64_t>("padding"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKernelGrad, ConvKernelGradImpl,
                              Arrays<2>().Attr<int64_t>("pad_top").Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("stride"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, ConvForwardImpl,
                              Arrays<2>().Attr<int64_t>("pad_top").Attr<int64_t>("pad_left"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ChannelSums, ChannelSumsImpl, Arrays<1>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(AffineSilu, AffineSiluImpl, Arrays<2>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(AffineSiluGradSums, AffineSiluGradSumsImpl, Arrays<3>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(AffineSiluGrad, AffineSiluGradImpl, Arrays<3>());
