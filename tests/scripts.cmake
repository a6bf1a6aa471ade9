# Tests that are scripts rather than GoogleTest binaries.
add_test(NAME layering COMMAND ${CMAKE_SOURCE_DIR}/tools/check_layers.sh)
# metharme chat on a pseudo-terminal (util-linux `script`).
add_test(NAME chat_tty COMMAND ${CMAKE_SOURCE_DIR}/tests/chat_tty_test.sh $<TARGET_FILE:metharme> ${METHARME_SHARED_DIR})
set_tests_properties(chat_tty PROPERTIES TIMEOUT 600)
