# format_check (label unit): every C++ source under common/ primary/ replica/ cli/ bench/ tests/
# is formatted as clang-format 14 formats it with the repository's .clang-format. It runs
# `scripts/format.sh --check` on the source tree, so it checks the files as they are when ctest
# runs, not as they were at configure time; `scripts/format.sh` formats them in place.
add_test(NAME format_check
  COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/format.sh --check
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(format_check PROPERTIES LABELS unit TIMEOUT 300)
