# mq_warnings: -Wall -Wextra -Werror for our own code only (never for third-party headers, which are
# included as SYSTEM). MQ_SANITIZE adds -fsanitize to everything we build.
add_library(mq_warnings INTERFACE)
target_compile_options(mq_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-unused-parameter>
  # GCC 12 at -O2/-O3 reports -Wrestrict and -Wdangling-pointer false positives from inlined
  # std::string / nlohmann::json internals (GCC bugs 105329, 106393); they stay warnings, not errors.
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-error=restrict -Wno-error=dangling-pointer>
  # GCC 13 (the GPU machines' compiler) adds -Wdangling-reference false positives on functions that
  # return references into long-lived caches, and -Warray-bounds inside LibTorch's autograd headers.
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>,$<VERSION_GREATER_EQUAL:$<CXX_COMPILER_VERSION>,13>>:-Wno-error=dangling-reference -Wno-error=array-bounds>)
if(MQ_SANITIZE)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${MQ_SANITIZE}>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=${MQ_SANITIZE})
endif()
