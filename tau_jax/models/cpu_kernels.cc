// Convolution kernels for XLA:CPU (jax.ffi custom calls), NHWC, stride 1. Built on first use by
// cpu_kernels.py.
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
//   dw[i, j, ci, co] = sum_{b, oh, ow} x[b, oh + i - pt, ow + j - pl, ci] * g[b, oh, ow, co]
// One input row and one output-gradient row make a small matrix product per tap (K = the row's
// width), done in register blocks of BI input x BJ output channels.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
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
  int64_t B, H, W, Ci, Ho, Wo, Co, kh, kw, pt, pl;
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
    const int64_t ih = oh + i - s.pt;
    if (ih < 0 || ih >= s.H) continue;
    const T* x_row = x + (b * s.H + ih) * s.W * s.Ci;
    for (int64_t j = 0; j < s.kw; ++j) {
      // output columns whose tap j lands inside the row
      const int64_t ow0 = std::max<int64_t>(0, s.pl - j);
      const int64_t ow1 = std::min<int64_t>(s.Wo, s.W + s.pl - j);
      if (ow1 <= ow0) continue;
      const T* X = x_row + (ow0 + j - s.pl) * s.Ci;
      const T* G = g_row + ow0 * s.Co;
      T* tap = acc + (i * s.kw + j) * s.Ci * s.Co;
      for (int64_t ci = 0; ci < s.Ci; ci += BI)
        for (int64_t co = 0; co < s.Co; co += BJ)
          BlockProduct<T, VB, BI, NV>(X + ci, s.Ci, G + co, s.Co, ow1 - ow0,
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

// Calls run(a, b, out) with the buffers' data as T* for their element type T (float32 or float64,
// all alike).
template <typename Run>
ffi::Error WithData(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out, Run run) {
  const ffi::DataType type = a.element_type();
  if (b.element_type() != type || out->element_type() != type)
    return ffi::Error::InvalidArgument("operands of different dtypes");
  if (type == ffi::DataType::F32)
    run(a.typed_data<float>(), b.typed_data<float>(), out->typed_data<float>());
  else if (type == ffi::DataType::F64)
    run(a.typed_data<double>(), b.typed_data<double>(), out->typed_data<double>());
  else
    return ffi::Error::InvalidArgument("only float32 and float64 are supported");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer k,
                       ffi::Result<ffi::AnyBuffer> out, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), kd = k.dimensions(), od = out->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], od[1], od[2], kd[0], kd[1], dilation, padding};
  return WithData(x, k, out, [&](auto* x, auto* k, auto* out) { Forward(pool, s, x, k, out); });
}

ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                          ffi::Result<ffi::AnyBuffer> dk, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), gd = g.dimensions(), kd = dk->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], kd[0], kd[1], dilation, padding};
  return WithData(x, g, dk, [&](auto* x, auto* g, auto* dk) { KernelGrad(pool, s, x, g, dk); });
}

ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                              ffi::Result<ffi::AnyBuffer> dw, int64_t pad_top, int64_t pad_left) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  const ConvGeometry s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2],
                       gd[3], wd[0], wd[1], pad_top, pad_left};
  if (s.Ci % 8 || s.Co % 8) return ffi::Error::InvalidArgument("channels must be multiples of 8");
  return WithData(x, g, dw, [&](auto* x, auto* g, auto* dw) {
    ConvKernelGradBlocked(pool, s, x, g, dw);
  });
}

// Every call: (thread pool; two arrays) -> one array, with two integers `names`.
auto Signature(const char* first, const char* second) {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<int64_t>(first)
      .Attr<int64_t>(second);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseForward, ForwardImpl, Signature("dilation", "padding"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, KernelGradImpl,
                              Signature("dilation", "padding"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKernelGrad, ConvKernelGradImpl, Signature("pad_top", "pad_left"));
