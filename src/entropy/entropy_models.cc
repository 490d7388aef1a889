#include "torchless/entropy/entropy_models.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "torchless/core/error.h"
#include "torchless/core/parallel.h"

namespace torchless::entropy {
namespace {

constexpr float kTwoTo31 = 2147483648.0f;

// torch.round (half to even, the default rounding mode) of the float32 difference, then
// .int(). CompressAI's .int() turns NaN, inf and |v| >= 2^31 into INT_MIN and then hangs in the
// coder; those are refused here.
int32_t quantize(float x, float mean, int64_t element, std::string_view what) {
  const float r = std::nearbyint(x - mean);
  if (!(r >= -kTwoTo31 && r < kTwoTo31)) {
    fail(
        "{}: element {}: x = {} (mean {}) cannot be quantized to an int32 symbol (CompressAI "
        "would hang on it)",
        what, element, x, mean);
  }
  return static_cast<int32_t>(r);
}

void require_rank2_float(const Tensor& x, std::string_view what) {
  if (x.rank() < 2)
    fail("{}: input must have at least 2 dims (B, C, ...), got {}", what, x.describe());
  if (x.dtype() != DType::kFloat32) fail("{}: input must be float32, got {}", what, x.describe());
}

// `means` expanded to `shape` (same rank; each dim equal or 1), row-major.
std::vector<float> expand_means(const Tensor& means, const Shape& shape, std::string_view what) {
  if (means.dtype() != DType::kFloat32)
    fail("{}: means must be float32, got {}", what, means.describe());
  if (means.rank() != shape.size()) {
    fail("{}: means {} must have the rank of the input {}", what, means.describe(),
         shape_to_string(shape));
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (means.dim(d) != shape[d] && means.dim(d) != 1) {
      fail("{}: means {} do not broadcast to {} (dim {})", what, means.describe(),
           shape_to_string(shape), d);
    }
  }
  const auto values = means.to_vector<float>();
  if (means.shape() == shape) return values;
  const auto numel = checked_numel(shape, what);
  std::vector<float> out(static_cast<size_t>(numel));
  const auto src_strides = contiguous_strides(means.shape());
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < shape.size(); ++d)
      src += means.dim(d) == 1 ? 0 : index[d] * src_strides[d];
    out[static_cast<size_t>(i)] = values[static_cast<size_t>(src)];
    for (size_t d = shape.size(); d-- > 0;) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

// Encodes B independent streams: batch element b has symbols [b*per, (b+1)*per) and indexes
// either the same range (per_element_indexes) or [0, per) shared by all elements.
std::vector<std::string> encode_batch(const std::vector<int32_t>& symbols,
                                      const std::vector<int32_t>& indexes, bool shared_indexes,
                                      size_t batch, const QuantizedCdfTable& cdfs,
                                      const CodingOptions& options, RansStats* stats) {
  const size_t per = batch == 0 ? 0 : symbols.size() / batch;
  std::vector<std::string> strings(batch);
  std::vector<RansStats> each(batch);
  cdfs.coding();  // build the coder's tables once, before the threads start
  parallel_for(batch, options.threads, [&](size_t b) {
    std::span<const int32_t> sym(symbols.data() + b * per, per);
    std::span<const int32_t> idx(indexes.data() + (shared_indexes ? 0 : b * per), per);
    strings[b] = with_context(fmt::format("batch element {}", b),
                              [&] { return encode_with_indexes(sym, idx, cdfs, &each[b]); });
  });
  if (stats != nullptr) {
    for (const auto& s : each) *stats += s;
  }
  return strings;
}

std::vector<int32_t> decode_batch(const std::vector<std::string>& strings,
                                  const std::vector<int32_t>& indexes, bool shared_indexes,
                                  size_t per, const QuantizedCdfTable& cdfs,
                                  const CodingOptions& options, RansStats* stats) {
  const size_t batch = strings.size();
  std::vector<int32_t> symbols(batch * per);
  std::vector<StreamToDecode> jobs(batch);
  for (size_t b = 0; b < batch; ++b) {
    jobs[b] = {strings[b],
               std::span<const int32_t>(indexes.data() + (shared_indexes ? 0 : b * per), per),
               std::span<int32_t>(symbols.data() + b * per, per)};
  }
  // One contiguous chunk of streams per thread, each decoded interleaved (decode_streams).
  const size_t threads = options.threads == 0 ? hardware_threads() : options.threads;
  const size_t chunks = std::max<size_t>(1, std::min(batch, threads));
  std::vector<RansStats> each(chunks);
  const DecodeOptions decode_options{.check_end = options.check_end};
  cdfs.coding();  // build the coder's tables once, before the threads start
  parallel_for(chunks, chunks, [&](size_t k) {
    const size_t lo = batch * k / chunks;
    const size_t hi = batch * (k + 1) / chunks;
    auto chunk = std::span<const StreamToDecode>(jobs).subspan(lo, hi - lo);
    try {
      decode_streams(chunk, cdfs, decode_options, &each[k]);
    } catch (const Error&) {
      // Name the string the way a caller knows it: decode them one by one to find it.
      for (size_t b = lo; b < hi; ++b) {
        with_context(fmt::format("string {}", b), [&] {
          auto decoded =
              decode_with_indexes(jobs[b].encoded, jobs[b].indexes, cdfs, decode_options);
          std::copy(decoded.begin(), decoded.end(), jobs[b].out.begin());
        });
      }
      throw;  // not reached unless the one-by-one decode disagrees; keep the original error
    }
  });
  if (stats != nullptr) {
    for (const auto& s : each) *stats += s;
  }
  return symbols;
}

Tensor float_tensor(std::vector<float> values, Shape shape) {
  return Tensor::from_vector(values, std::move(shape));
}

}  // namespace

// --- EntropyBottleneck ------------------------------------------------------------------------

EntropyBottleneck::EntropyBottleneck(EntropyTables tables) : tables_(std::move(tables)) {
  if (tables_.kind != ModelKind::kEntropyBottleneck) {
    fail("EntropyBottleneck: tables are {} tables", kind_name(tables_.kind));
  }
  tables_.validate("EntropyBottleneck");
}

Tensor EntropyBottleneck::symbols(const Tensor& x) const {
  constexpr std::string_view what = "EntropyBottleneck";
  require_rank2_float(x, what);
  if (x.dim(1) != channels()) {
    fail("{}: input {} has {} channels (dim 1), the tables have {}", what, x.describe(), x.dim(1),
         channels());
  }
  const auto values = x.to_vector<float>();
  const int64_t batch = x.dim(0);
  const int64_t per_channel = batch * channels() == 0 ? 0 : x.numel() / (batch * channels());
  std::vector<int32_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const auto c = static_cast<size_t>((static_cast<int64_t>(i) / per_channel) % channels());
    out[i] = quantize(values[i], tables_.medians[c], static_cast<int64_t>(i), what);
  }
  return Tensor::from_vector(out, x.shape());
}

namespace {
// EntropyBottleneck's _build_indexes for one batch element: the channel index, broadcast over
// the spatial positions.
std::vector<int32_t> channel_indexes(int64_t channels, int64_t per_channel) {
  std::vector<int32_t> out(static_cast<size_t>(channels * per_channel));
  for (int64_t c = 0; c < channels; ++c) {
    std::fill_n(out.begin() + c * per_channel, per_channel, static_cast<int32_t>(c));
  }
  return out;
}
}  // namespace

std::vector<std::string> EntropyBottleneck::compress(const Tensor& x, const CodingOptions& options,
                                                     RansStats* stats) const {
  const Tensor q = symbols(x);
  const auto batch = static_cast<size_t>(x.dim(0));
  const int64_t per_channel = batch == 0 ? 0 : x.numel() / (x.dim(0) * channels());
  return encode_batch(q.to_vector<int32_t>(), channel_indexes(channels(), per_channel), true, batch,
                      tables_.cdfs, options, stats);
}

Tensor EntropyBottleneck::decompress_symbols(const std::vector<std::string>& strings,
                                             const Shape& size, const CodingOptions& options,
                                             RansStats* stats) const {
  Shape shape{static_cast<int64_t>(strings.size()), channels()};
  shape.insert(shape.end(), size.begin(), size.end());
  for (int64_t d : size) {
    if (d < 0) fail("EntropyBottleneck: negative size {}", shape_to_string(size));
  }
  const int64_t per_channel = checked_numel(size, "EntropyBottleneck: size");
  checked_numel(shape, "EntropyBottleneck: output shape");
  auto symbols =
      decode_batch(strings, channel_indexes(channels(), per_channel), true,
                   static_cast<size_t>(channels() * per_channel), tables_.cdfs, options, stats);
  return Tensor::from_vector(symbols, shape);
}

Tensor EntropyBottleneck::decompress(const std::vector<std::string>& strings, const Shape& size,
                                     const CodingOptions& options, RansStats* stats) const {
  const Tensor q = decompress_symbols(strings, size, options, stats);
  const auto symbols = q.to_vector<int32_t>();
  const int64_t per_channel = checked_numel(size, "EntropyBottleneck: size");
  std::vector<float> out(symbols.size());
  for (size_t i = 0; i < symbols.size(); ++i) {
    const auto c = static_cast<size_t>(
        (static_cast<int64_t>(i) / std::max<int64_t>(per_channel, 1)) % channels());
    // dequantize: q.type_as(means) + means, in float32.
    out[i] = static_cast<float>(symbols[i]) + tables_.medians[c];
  }
  return float_tensor(std::move(out), q.shape());
}

// --- GaussianConditional ----------------------------------------------------------------------

GaussianConditional::GaussianConditional(EntropyTables tables) : tables_(std::move(tables)) {
  if (tables_.kind != ModelKind::kGaussianConditional) {
    fail("GaussianConditional: tables are {} tables", kind_name(tables_.kind));
  }
  tables_.validate("GaussianConditional");
}

Tensor GaussianConditional::build_indexes(const Tensor& scales) const {
  if (scales.dtype() != DType::kFloat32) {
    fail("GaussianConditional.build_indexes: scales must be float32, got {}", scales.describe());
  }
  const auto values = scales.to_vector<float>();
  const auto& table = tables_.scale_table;
  const auto last = static_cast<int32_t>(table.size() - 1);
  std::vector<int32_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    // LowerBound is torch.max(x, bound): NaN propagates, and NaN <= t is false for every t.
    const float s = std::isnan(values[i]) ? values[i] : std::max(values[i], tables_.scale_bound);
    int32_t index = last;
    for (int32_t k = 0; k < last; ++k) index -= s <= table[static_cast<size_t>(k)] ? 1 : 0;
    out[i] = index;
  }
  return Tensor::from_vector(out, scales.shape());
}

Tensor GaussianConditional::symbols(const Tensor& x, const Tensor* means) const {
  constexpr std::string_view what = "GaussianConditional";
  require_rank2_float(x, what);
  const auto values = x.to_vector<float>();
  std::vector<float> m;
  if (means != nullptr) m = expand_means(*means, x.shape(), what);
  std::vector<int32_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = quantize(values[i], m.empty() ? 0.0f : m[i], static_cast<int64_t>(i), what);
  }
  return Tensor::from_vector(out, x.shape());
}

std::vector<std::string> GaussianConditional::compress(const Tensor& x, const Tensor& indexes,
                                                       const Tensor* means,
                                                       const CodingOptions& options,
                                                       RansStats* stats) const {
  require_rank2_float(x, "GaussianConditional");
  if (indexes.shape() != x.shape()) {
    fail("GaussianConditional: indexes {} must have the shape of the input {}", indexes.describe(),
         x.describe());
  }
  const Tensor q = symbols(x, means);
  return encode_batch(q.to_vector<int32_t>(), int32_values(indexes, "GaussianConditional: indexes"),
                      false, static_cast<size_t>(x.dim(0)), tables_.cdfs, options, stats);
}

Tensor GaussianConditional::decompress_symbols(const std::vector<std::string>& strings,
                                               const Tensor& indexes, const CodingOptions& options,
                                               RansStats* stats) const {
  if (indexes.rank() < 2) {
    fail("GaussianConditional: indexes must have at least 2 dims, got {}", indexes.describe());
  }
  if (static_cast<int64_t>(strings.size()) != indexes.dim(0)) {
    fail("GaussianConditional: {} strings for indexes {} (expected one per batch element)",
         strings.size(), indexes.describe());
  }
  const auto per = static_cast<size_t>(strings.empty() ? 0 : indexes.numel() / indexes.dim(0));
  auto symbols = decode_batch(strings, int32_values(indexes, "GaussianConditional: indexes"), false,
                              per, tables_.cdfs, options, stats);
  return Tensor::from_vector(symbols, indexes.shape());
}

Tensor GaussianConditional::decompress(const std::vector<std::string>& strings,
                                       const Tensor& indexes, const Tensor* means,
                                       const CodingOptions& options, RansStats* stats) const {
  std::vector<float> m;
  if (means != nullptr) m = expand_means(*means, indexes.shape(), "GaussianConditional");
  const Tensor q = decompress_symbols(strings, indexes, options, stats);
  const auto symbols = q.to_vector<int32_t>();
  std::vector<float> out(symbols.size());
  for (size_t i = 0; i < symbols.size(); ++i) {
    // dequantize: q.type_as(means) + means, or q.type(float32) without means.
    out[i] = m.empty() ? static_cast<float>(symbols[i]) : static_cast<float>(symbols[i]) + m[i];
  }
  return float_tensor(std::move(out), q.shape());
}

}  // namespace torchless::entropy
