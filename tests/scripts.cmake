# Tests that are scripts rather than GoogleTest binaries.
add_test(NAME layering COMMAND ${CMAKE_SOURCE_DIR}/tools/check_layers.sh)
# metharme chat on a pseudo-terminal (util-linux `script`).
add_test(NAME chat_tty COMMAND ${CMAKE_SOURCE_DIR}/tests/chat_tty_test.sh $<TARGET_FILE:metharme> ${METHARME_SHARED_DIR})
set_tests_properties(chat_tty PROPERTIES TIMEOUT 600)

# Node tests of `metharme serve` (tests/web): the official openai npm client and the chat page in
# headless Chromium. web_deps installs their npm packages (npm ci) once before the others run.
add_test(NAME web_deps COMMAND ${CMAKE_SOURCE_DIR}/tests/web/run.sh --install)
set_tests_properties(web_deps PROPERTIES FIXTURES_SETUP web_deps TIMEOUT 600)
foreach(t openai_client web_page cors)
  add_test(NAME web_${t} COMMAND ${CMAKE_SOURCE_DIR}/tests/web/run.sh ${t}.test.mjs)
  # RUN_SERIAL: headless Chromium's 30 s click timeout was missed once beside the hostile-load test.
  set_tests_properties(web_${t} PROPERTIES FIXTURES_REQUIRED web_deps TIMEOUT 300 RUN_SERIAL TRUE
    ENVIRONMENT "METHARME_BIN=$<TARGET_FILE:metharme>;METHARME_SHARED=${METHARME_SHARED_DIR}")
endforeach()

# The kernel A/B tool (bench/q4_ab) builds and finds a kernel file equal to itself.
add_test(NAME q4_ab_self COMMAND ${CMAKE_SOURCE_DIR}/bench/q4_ab/q4_ab.sh
  ${CMAKE_SOURCE_DIR}/src/kernels/q4_avx2.cpp ${CMAKE_SOURCE_DIR}/src/kernels/q4_avx2.cpp 77 384 7 3)
set_tests_properties(q4_ab_self PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

# GGUF peer test (tests/gguf_node): llama.cpp through node-llama-cpp loads `metharme convert --to
# gguf` output; gguf_node_deps installs node-llama-cpp once. The test reports SKIP (and ctest marks
# it skipped) when node-llama-cpp could not be installed.
add_test(NAME gguf_node_deps COMMAND ${CMAKE_SOURCE_DIR}/tests/gguf_node/run.sh --install)
set_tests_properties(gguf_node_deps PROPERTIES FIXTURES_SETUP gguf_node_deps TIMEOUT 600)
add_test(NAME gguf_node_peer COMMAND ${CMAKE_SOURCE_DIR}/tests/gguf_node/run.sh peer.test.mjs)
set_tests_properties(gguf_node_peer PROPERTIES FIXTURES_REQUIRED gguf_node_deps TIMEOUT 300
  SKIP_REGULAR_EXPRESSION "SKIP: node-llama-cpp"
  ENVIRONMENT "METHARME_BIN=$<TARGET_FILE:metharme>;METHARME_SHARED=${METHARME_SHARED_DIR}")
# bench/compare_serve.sh (metharme serve against llama.cpp's parallel sequences) on the tiny shape.
add_test(NAME gguf_node_serve_compare COMMAND ${CMAKE_SOURCE_DIR}/tests/gguf_node/run.sh serve_compare.test.mjs)
set_tests_properties(gguf_node_serve_compare PROPERTIES FIXTURES_REQUIRED gguf_node_deps TIMEOUT 300 RUN_SERIAL TRUE
  SKIP_REGULAR_EXPRESSION "SKIP: node-llama-cpp"
  ENVIRONMENT "METHARME_BIN=$<TARGET_FILE:metharme>;METHARME_SHARED=${METHARME_SHARED_DIR}")

# Scale-out (deploy/): the shipped configurations checked by the programs that read them, and a
# cluster of three replicas behind HAProxy with Prometheus (tests/cluster). Both skip (77) only
# when a program is missing; tools/deps.sh installs haproxy, nginx and prometheus.
add_test(NAME deploy_check COMMAND ${CMAKE_SOURCE_DIR}/tests/deploy_check.sh)
set_tests_properties(deploy_check PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
add_test(NAME cluster COMMAND node ${CMAKE_SOURCE_DIR}/tests/cluster/cluster.test.mjs)
set_tests_properties(cluster PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 RUN_SERIAL TRUE
  ENVIRONMENT "METHARME_BIN=$<TARGET_FILE:metharme>")
