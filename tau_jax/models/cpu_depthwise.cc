// Depthwise convolution kernels for XLA:CPU (jax.ffi custom calls), NHWC, stride 1.
//
// Why by hand: XLA:CPU has no fast depthwise kernel gradient. Its grouped-convolution gradient runs
// outside its libraries (860 ms at 4096 channels), and every reduction form of it materialises one
// strided window per tap (25 ms); this loop reads each input once (1.6 ms). The forward pass is
// here too, as it spares XLA its padded copy. Built on first use by cpu_depthwise.py.
//
//   forward:      out[b, oh, ow, c] = sum_{i, j} x[b, oh + i d - p, ow + j d - p, c] * k[i, j, c]
//   kernel grad:  dk[i, j, c] = sum_{b, oh, ow} x[b, oh + i d - p, ow + j d - p, c] * g[b, oh, ow, c]
// (zero padding: taps that fall outside the input are skipped). The input gradient is the forward
// pass of g with the flipped kernel and padding d (k - 1) - p.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

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

// Runs run(T{}) for the operands' element type T (float32 or float64, all alike).
template <typename Run>
ffi::Error ByType(ffi::DataType a, ffi::DataType b, ffi::DataType out, Run run) {
  if (a != b || a != out) return ffi::Error::InvalidArgument("operands of different dtypes");
  if (a == ffi::DataType::F32)
    run(float{});
  else if (a == ffi::DataType::F64)
    run(double{});
  else
    return ffi::Error::InvalidArgument("only float32 and float64 are supported");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer k,
                       ffi::Result<ffi::AnyBuffer> out, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), kd = k.dimensions(), od = out->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], od[1], od[2], kd[0], kd[1], dilation, padding};
  return ByType(x.element_type(), k.element_type(), out->element_type(), [&](auto zero) {
    using T = decltype(zero);
    Forward(pool, s, x.typed_data<T>(), k.typed_data<T>(), out->typed_data<T>());
  });
}

ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer g,
                          ffi::Result<ffi::AnyBuffer> dk, int64_t dilation, int64_t padding) {
  auto xd = x.dimensions(), gd = g.dimensions(), kd = dk->dimensions();
  const Geometry s{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], kd[0], kd[1], dilation, padding};
  return ByType(x.element_type(), g.element_type(), dk->element_type(), [&](auto zero) {
    using T = decltype(zero);
    KernelGrad(pool, s, x.typed_data<T>(), g.typed_data<T>(), dk->typed_data<T>());
  });
}

// Both calls: (thread pool; two arrays) -> one array, with the dilation and padding.
auto Signature() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<int64_t>("dilation")
      .Attr<int64_t>("padding");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseForward, ForwardImpl, Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, KernelGradImpl, Signature());
