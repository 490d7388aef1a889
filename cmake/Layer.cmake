# A layer is one static library, torchless_<name>, built from every .cc under src/<name>/
# except *_test.cc (tests live beside the code they test and go into torchless_<name>_tests).
# Files are globbed so that adding a concept is adding a file.
function(torchless_layer name)
  set_property(GLOBAL PROPERTY TORCHLESS_LAYER_DEPS_${name} "${ARGN}")
  set_property(GLOBAL APPEND PROPERTY TORCHLESS_LAYERS ${name})
endfunction()

# Usage: torchless_add_layer(name [PUBLIC libs...] [PRIVATE libs...] [INCLUDES dirs...])
function(torchless_add_layer name)
  cmake_parse_arguments(arg "" "" "PUBLIC;PRIVATE;INCLUDES" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/src/${name}/*.cc")
  list(FILTER sources EXCLUDE REGEX "_test\\.cc$")
  get_property(deps GLOBAL PROPERTY TORCHLESS_LAYER_DEPS_${name})
  if(NOT sources)  # a layer with headers only so far
    add_library(torchless_${name} INTERFACE)
    target_include_directories(torchless_${name} INTERFACE "${CMAKE_SOURCE_DIR}/include")
    foreach(dep IN LISTS deps)
      target_link_libraries(torchless_${name} INTERFACE torchless_${dep})
    endforeach()
    target_link_libraries(torchless_${name} INTERFACE ${arg_PUBLIC})
    return()
  endif()
  add_library(torchless_${name} STATIC ${sources})
  target_include_directories(torchless_${name} PUBLIC "${CMAKE_SOURCE_DIR}/include"
                                               PRIVATE "${CMAKE_SOURCE_DIR}/src")
  foreach(dep IN LISTS deps)
    target_link_libraries(torchless_${name} PUBLIC torchless_${dep})
  endforeach()
  target_link_libraries(torchless_${name} PUBLIC ${arg_PUBLIC} PRIVATE ${arg_PRIVATE})
  target_include_directories(torchless_${name} PRIVATE ${arg_INCLUDES})
  torchless_warnings(torchless_${name})
  set_target_properties(torchless_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
