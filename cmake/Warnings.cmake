# Zero warnings is the bar: every project target gets these, and CI builds with -Werror.
set(TORCHLESS_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wimplicit-fallthrough)
option(TORCHLESS_WERROR "Treat warnings as errors" OFF)
if(TORCHLESS_WERROR)
  list(APPEND TORCHLESS_WARNINGS -Werror)
endif()
function(torchless_warnings target)
  target_compile_options(${target} PRIVATE ${TORCHLESS_WARNINGS})
endfunction()
