# Tests that are scripts rather than GoogleTest binaries.
add_test(NAME layering COMMAND ${CMAKE_SOURCE_DIR}/tools/check_layers.sh)
# metharme chat on a pseudo-terminal (util-linux `script`).
add_test(NAME chat_tty COMMAND ${CMAKE_SOURCE_DIR}/tests/chat_tty_test.sh $<TARGET_FILE:metharme> ${METHARME_SHARED_DIR})
set_tests_properties(chat_tty PROPERTIES TIMEOUT 600)

# Node tests of `metharme serve` (tests/web): the official openai npm client and the chat page in
# headless Chromium. web_deps installs their npm packages (npm ci) once before the others run.
add_test(NAME web_deps COMMAND ${CMAKE_SOURCE_DIR}/tests/web/run.sh --install)
set_tests_properties(web_deps PROPERTIES FIXTURES_SETUP web_deps TIMEOUT 600)
foreach(t openai_client web_page)
  add_test(NAME web_${t} COMMAND ${CMAKE_SOURCE_DIR}/tests/web/run.sh ${t}.test.mjs)
  set_tests_properties(web_${t} PROPERTIES FIXTURES_REQUIRED web_deps TIMEOUT 300
    ENVIRONMENT "METHARME_BIN=$<TARGET_FILE:metharme>;METHARME_SHARED=${METHARME_SHARED_DIR}")
endforeach()
