// parallel_for runs body(i) for i in [0, count) on up to `threads` threads (0 = all cores).
// The first exception thrown by any body is rethrown in the caller after all threads join.
#pragma once

#include <cstddef>
#include <functional>

namespace torchless {

size_t hardware_threads();
void parallel_for(size_t count, size_t threads, const std::function<void(size_t)>& body);

}  // namespace torchless
