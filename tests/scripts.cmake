# Tests that are scripts rather than GoogleTest binaries.
add_test(NAME layering COMMAND ${CMAKE_SOURCE_DIR}/tools/check_layers.sh)
