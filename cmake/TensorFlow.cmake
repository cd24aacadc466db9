# Locates the TensorFlow C API of the installed tensorflow-cpu wheel and the
# protoc that matches its bundled protobuf runtime. Defines:
#   TF_DIR, TF_INCLUDE_DIR      the wheel's tensorflow/ folder and its headers
#   tensorflow::c               imported target linking libtensorflow_cc.so.2 and
#                               libtensorflow_framework.so.2
#   RS_PROTOC                   path of protoc (from protoc-wrapper)
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('tensorflow').origin))"
  OUTPUT_VARIABLE TF_DIR OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _tf_rc)
if(NOT _tf_rc EQUAL 0 OR NOT EXISTS "${TF_DIR}/libtensorflow_cc.so.2")
  message(FATAL_ERROR "tensorflow-cpu wheel not found for ${Python3_EXECUTABLE}; pip install tensorflow-cpu==2.21.0")
endif()
set(TF_INCLUDE_DIR "${TF_DIR}/include")

add_library(tensorflow::c INTERFACE IMPORTED)
target_include_directories(tensorflow::c SYSTEM INTERFACE "${TF_INCLUDE_DIR}")
target_link_libraries(tensorflow::c INTERFACE
  "${TF_DIR}/libtensorflow_cc.so.2" "${TF_DIR}/libtensorflow_framework.so.2")

execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('protoc_wrapper').origin), 'protoc'))"
  OUTPUT_VARIABLE RS_PROTOC OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _protoc_rc)
if(NOT _protoc_rc EQUAL 0 OR NOT EXISTS "${RS_PROTOC}")
  message(FATAL_ERROR "protoc not found; pip install protoc-wrapper==31.1.0 (it must match TensorFlow's protobuf 6.31.1)")
endif()
message(STATUS "TensorFlow: ${TF_DIR}")
message(STATUS "protoc: ${RS_PROTOC}")
