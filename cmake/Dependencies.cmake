# Every dependency comes from Debian packages, except ONNX Runtime (npm, see scripts/setup.sh).
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(Protobuf REQUIRED)
find_package(ONNX CONFIG REQUIRED)  # Debian libonnx-dev: target onnx_proto
find_path(NANOFLANN_INCLUDE_DIR nanoflann.hpp REQUIRED)

if(NOT EXISTS "${TORCHLESS_ORT_DIR}/include/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "ONNX Runtime not found in ${TORCHLESS_ORT_DIR}: run scripts/setup.sh first")
endif()
add_library(onnxruntime SHARED IMPORTED)
set_target_properties(onnxruntime PROPERTIES
  IMPORTED_LOCATION "${TORCHLESS_ORT_DIR}/lib/libonnxruntime.so.1"
  IMPORTED_NO_SONAME OFF
  INTERFACE_INCLUDE_DIRECTORIES "${TORCHLESS_ORT_DIR}/include")

if(TORCHLESS_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
if(TORCHLESS_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
